"""Gatys et al.: stylize by optimising the image itself (no trained network).

"A Neural Algorithm of Artistic Style" (Gatys, Ecker & Bethge, 2015; CVPR 2016 "Image Style
Transfer Using Convolutional Neural Networks"). The output image is optimised so that its
VGG Gram matrices at relu1_1..relu5_1 (equal weights) match the style's and its relu4_2
features match the content's, plus a small total-variation term against high-frequency
noise. Optimisers: L-BFGS (the paper's) or Adam; start from the content or from seeded noise.

Scale-free weights: each style layer's Gram MSE is divided by the mean square of its target
Gram, and the content MSE by the mean square of its target features, so the same
``style_weight``/``content_weight`` work for every VGG source (torchvision's normalised input
and Caffe's 0-255 input differ by ~60x in feature scale, ~10^7 in Gram MSE) and every
layer counts equally, as the paper intends.

Controls: several weighted styles use the weighted sum of their Gram targets (native
mixing); ``alpha`` scales the style weight (``alpha=0`` with content init returns the
content unchanged); masks are composited by ``controls`` (``native_masks = False``).
A batch of B contents is optimised together, each image with its own loss (their losses are
summed, and the images do not interact). Large outputs are done coarse-to-fine: the result
at half size initialises the next scale (``scales``).

Style scale (``controls.stylize(style_scale=...)``, ``own_style_scale``): for a photo larger than the
working side, the coarse-to-fine schedule is anchored there (:func:`schedule`): the look is set by the
working size's pyramid, with the Gram targets of the style as it is at the working size (``style_size``
then means the style's longer side at the working size); levels doubling in size up to the photo's own
refine it, each initialised with the edge-aware upsampling of the level below
(``upsample.guided_upsample``) and its style scaled with it, so strokes keep their size relative to
the picture. ``native`` (no working side) is the plain pyramid of the full size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor

from pipeline.errors import ConfigError
from pipeline.imaging import resize
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.losses import ContentLoss, GramStyleLoss, TVLoss
from pipeline.models.registry import ModelCard, register
from pipeline.models.upsample import guided_upsample
from pipeline.models.vgg import ENCODER_WEIGHT_SOURCES, VGGEncoder, encoder_availability, load_encoder

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
# coarsest scale's longer side when scales is automatic: VGG's receptive field at relu5_1 is ~200 px
AUTO_COARSEST = 512
# below this a coarse level has too few relu4_2/relu5_1 positions to hold the content (measured: 64 px blurs it away)
MIN_COARSE = 128


@dataclass(frozen=True)
class GatysOptions:
    """Optimisation settings; every field has a default and the CLI can expose them as flags.

    ``steps`` objective evaluations per scale (L-BFGS iterations, line-search evaluations
    included; Adam steps). ``lr`` None picks 1.0 for L-BFGS (with a
    strong-Wolfe line search) and 0.02 for Adam (pixels are in [0,1]). ``scales`` is the
    number of coarse-to-fine levels (each half the size of the next); None picks as many as
    needed for the coarsest longer side to be at most 512 px. ``style_size`` is the style
    image's longer side at the finest scale (None: the content's longer side); at coarser
    scales it shrinks with the content so brush strokes keep their size relative to the image.
    """

    steps: int = 300
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    init: Literal["content", "noise"] = "content"
    style_weight: float = 10.0
    content_weight: float = 1.0
    tv_weight: float = 10.0
    scales: int | None = None
    seed: int = 0
    lr: float | None = None
    style_size: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.init not in ("content", "noise"):
            raise ConfigError(f"init must be 'content' or 'noise', got {self.init!r}")
        for name in ("style_weight", "content_weight", "tv_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.scales is not None and self.scales < 1:
            raise ConfigError(f"scales must be >= 1, got {self.scales}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.style_size is not None and self.style_size < 16:
            raise ConfigError(f"style_size must be >= 16 px, got {self.style_size}")


def _scaled_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    f = long_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def pyramid(h: int, w: int, scales: int | None) -> list[tuple[int, int]]:
    """Sizes from coarsest to (h, w), each level half the next; coarse levels below 128 px are skipped."""
    if scales is None:
        scales = 1 + max(0, math.ceil(math.log2(max(h, w) / AUTO_COARSEST)))
    sizes = []
    for level in range(scales - 1, -1, -1):
        long_side = max(h, w) / 2**level
        if long_side < MIN_COARSE and level > 0:
            continue
        sizes.append((h, w) if level == 0 else _scaled_size(h, w, round(long_side)))
    return sizes


def schedule(h: int, w: int, scales: int | None, working_side: int | None = None) -> list[tuple[int, int]]:
    """The sizes the optimisation visits, coarsest first, ending at (h, w): ``pyramid(h, w, scales)``, or
    for an image larger than ``working_side``, the working size's pyramid then levels doubling up to (h, w)."""
    if not working_side or max(h, w) <= working_side:
        return pyramid(h, w, scales)
    sizes = pyramid(*_scaled_size(h, w, working_side), scales)
    long_side = 2 * working_side
    while long_side < max(h, w):
        sizes.append(_scaled_size(h, w, long_side))
        long_side *= 2
    return [*sizes, (h, w)]


class Gatys(Stylizer):
    """Image-optimisation style transfer; ``encoder.source`` names the VGG weights used."""

    name = "gatys"
    family = "gatys"
    style_kind = "image"
    multiple = 1
    native_masks = False
    feed_forward = False
    own_style_scale = True

    def __init__(self, encoder: VGGEncoder, options: GatysOptions | None = None) -> None:
        super().__init__()
        if CONTENT_LAYER not in encoder.plan or STYLE_LAYERS[-1] not in encoder.plan:
            raise ConfigError(f"gatys needs an encoder up to relu5_1, got one ending at {encoder.plan[-1]}")
        self.encoder = encoder.eval()
        self.options = options or GatysOptions()
        self.tv = TVLoss(reduction="none")

    def transfer(
        self,
        content: Tensor,
        styles: list[Style],
        *,
        alpha: float,
        masks: Tensor | None,
        working_side: int | None = None,
    ) -> Tensor:
        """content (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1]; ``masks`` are ignored, ``working_side`` is the
        style scale's (see module doc)."""
        opt = self.options
        if alpha == 0 and opt.init == "content":
            return content.clone()
        # the batch runner may call us under inference_mode; optimisation needs autograd
        with torch.inference_mode(False), torch.enable_grad():
            content = content.detach().float().clone(memory_format=torch.contiguous_format)
            style_images = [s.image_batch(content.device) for s in styles]
            weights = normalized_weights(styles)
            h, w = content.shape[-2:]
            # the size at which the style's strokes are set: the working side, or (native) the full size
            anchor = working_side if working_side and working_side < max(h, w) else max(h, w)
            generator = torch.Generator(device="cpu").manual_seed(opt.seed)
            image: Tensor | None = None
            for size in schedule(h, w, opt.scales, working_side):
                target = resize(content, size)
                if image is None:
                    if opt.init == "content":
                        image = target.clone()
                    else:
                        image = torch.rand(target.shape, generator=generator).to(target.device)
                elif max(size) > anchor:
                    # a refinement level: start from the look found below, with the photo's detail at this size
                    image = guided_upsample(image.detach(), target)
                else:
                    image = resize(image, size).clamp(0, 1)
                style_long = round((opt.style_size or anchor) * max(size) / anchor)
                image = self._optimise(image, target, style_images, weights, style_long, alpha)
            assert image is not None
            return image.detach()

    def style_targets(self, style_images: list[Tensor], weights: list[float], long_side: int) -> dict[str, Tensor]:
        """Weighted sum of the styles' Gram matrices, each style resized to ``long_side``: {layer: (1,C,C)}."""
        mixed: dict[str, Tensor] = {}
        for img, wt in zip(style_images, weights, strict=True):
            img = resize(img, _scaled_size(*img.shape[-2:], max(16, long_side)))
            with torch.no_grad():
                grams = GramStyleLoss.grams(self.encoder(img, layers=STYLE_LAYERS))
            for k, g in grams.items():
                mixed[k] = mixed[k] + wt * g if k in mixed else wt * g
        return mixed

    def _optimise(
        self,
        image: Tensor,
        content: Tensor,
        style_images: list[Tensor],
        weights: list[float],
        style_long: int,
        alpha: float,
    ) -> Tensor:
        opt = self.options
        grams = self.style_targets(style_images, weights, style_long)
        with torch.no_grad():
            content_feats = self.encoder(content, layers=[CONTENT_LAYER])
        # scale-free: each layer's loss relative to its target's mean square (see module doc)
        style_loss = GramStyleLoss(
            {k: 1.0 / (len(STYLE_LAYERS) * (g.pow(2).mean().item() + 1e-12)) for k, g in grams.items()},
            grams,
            reduction="none",
        )
        c = content_feats[CONTENT_LAYER]
        content_loss = ContentLoss(
            {CONTENT_LAYER: 1.0 / (c.pow(2).mean().item() + 1e-12)}, content_feats, reduction="none"
        )
        layers = (*STYLE_LAYERS, CONTENT_LAYER)
        style_w, content_w, tv_w = opt.style_weight * alpha, opt.content_weight, opt.tv_weight

        # L-BFGS flattens the gradient with view(): the optimised image must have standard strides,
        # and clone() alone would keep a channels-last (decoded array) layout
        image = image.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)

        def objective() -> Tensor:
            feats = self.encoder(image, layers=layers)
            per_image = style_w * style_loss(feats) + content_w * content_loss(feats) + tv_w * self.tv(image)
            # summed, not averaged: each image's gradient is that of its own loss
            return per_image.sum()

        if opt.steps == 0:
            return image.detach()
        if opt.optimizer == "lbfgs":
            optimizer = torch.optim.LBFGS(
                [image],
                lr=opt.lr or 1.0,
                max_iter=opt.steps,
                # steps bounds the evaluations (what costs time), line-search ones included
                max_eval=opt.steps,
                history_size=50,
                line_search_fn="strong_wolfe",
            )

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            optimizer.step(closure)
        else:
            optimizer = torch.optim.Adam([image], lr=opt.lr or 0.02)
            for _ in range(opt.steps):
                optimizer.zero_grad()
                objective().backward()
                optimizer.step()
                with torch.no_grad():
                    image.clamp_(0, 1)
        return image.detach().clamp(0, 1)


def create_gatys(
    *,
    encoder_weights: str = "auto",
    device: str | torch.device = "cpu",
    weights: str | None = None,
    **options: Any,
) -> Gatys:
    """Registry factory: ``weights`` (a VGG file) overrides ``encoder_weights``; ``options`` are GatysOptions."""
    known = {f.name for f in fields(GatysOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"gatys has no option(s) {unknown}; options: {sorted(known)}")
    opts = GatysOptions(**options)
    encoder = load_encoder(weights or encoder_weights, last="relu5_1", device=device)
    return Gatys(encoder, opts).to(device)


def default_options() -> dict[str, Any]:
    return asdict(GatysOptions())


register(
    ModelCard(
        stylizer=Gatys,
        paper="Gatys, Ecker & Bethge, Image Style Transfer Using Convolutional Neural Networks (CVPR 2016)",
        factory=create_gatys,
        weight_sources=ENCODER_WEIGHT_SOURCES,
        preprocessing="the VGG source's own input convention is folded into the encoder",
        availability=lambda: encoder_availability("auto"),
    )
)
