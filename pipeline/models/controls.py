"""Runtime controls shared by every family: resolution, colour preservation, masks, tiling.

``stylize`` is the one entry point the CLI, the batch worker and the benchmarks call. The
family's own ``forward`` does alpha and style mixing (their meaning differs per method: see
each family's docstring); everything here works on images and so is the same for all:

- ``preserve_color="luminance"``: transfer on luminance only (Gatys et al. 2016, "Preserving
  colour in neural artistic style transfer"): content and styles go in as grey luminance
  (the styles' luminance matched to the content's mean/std), and the output's luminance is
  recombined with the content's own chroma (YCbCr, BT.601), so the photo's colours stay.
- ``preserve_color="histogram"``: each style image's colour mean and covariance are matched to
  the content's before stylizing (same paper). Index/fixed-style networks have no style image,
  so for them the output's colour statistics are matched to the content's instead.
- masks: ``(B|1, K, H, W)``, one soft mask per style. Families with ``native_masks`` blend
  inside the network (features); for the others each style is rendered and composited.
- ``max_side``: cap the longer side (the output is then that size; ``resize_max_side``);
  default keeps the size.
- ``style_scale``: the longer side (px) at which strokes are painted, so a 4096 px photo looks as
  stylized as a 1024 px one. A photo larger than it is stylized at that working size (every style,
  the native masks and alpha there) and brought back to its own size with ``upsample.guided_upsample``,
  which takes the detail from the full-size photo; masks then composite, pixel-space alpha blends
  and colour preservation recombine at full size. Photos at or below it, and ``"native"``, are
  stylized at their own size (strokes fixed in pixels). Families with ``own_style_scale`` (gatys)
  get the working side instead and use it in their own coarse-to-fine schedule.
- ``tile_pixels``: feed-forward families stylize images above this many pixels in
  overlapping tiles, bounding peak memory. Tiles overlap by at least ``TILE_OVERLAP`` px; in
  each overlap the ``TILE_CONTEXT`` px nearest a tile's edge are dropped and the rest is
  feathered (linear ramps), so a network that looks at most ``TILE_CONTEXT`` px around each
  pixel gives the untiled result exactly, and deeper ones blend without visible seams.
  (Instance-norm statistics are per tile, so a normalising network still differs a little.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import DEFAULT_STYLE_SCALE, DEFAULT_TILE_PIXELS, StyleScale, parse_style_scale
from pipeline.errors import ConfigError, InputError
from pipeline.models.base import Style, Stylizer, check_images
from pipeline.models.upsample import guided_upsample

ColorMode = Literal["none", "luminance", "histogram"]
COLOR_MODES: tuple[str, ...] = ("none", "luminance", "histogram")
# consecutive tiles share at least this many px; the outer TILE_CONTEXT px of each get zero weight
TILE_OVERLAP = 64
TILE_CONTEXT = 16

_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float32
)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """(B,3,H,W) RGB in [0,1] -> YCbCr with Y in [0,1] and Cb, Cr centred on 0."""
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YCBCR.to(x), x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YCBCR).to(x), x)


def luminance(x: Tensor) -> Tensor:
    """(B,3,H,W) -> (B,1,H,W) BT.601 luma."""
    return rgb_to_ycbcr(x)[:, :1]


def _grey_matched(y: Tensor, ref_y: Tensor) -> Tensor:
    """Luminance ``y`` with its mean/std moved to those of ``ref_y`` (all images pooled), as 3 channels."""
    y = (y - y.mean()) / (y.std() + 1e-6) * ref_y.std() + ref_y.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1)


def match_color(source: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """Recolour ``source`` (N,3,H,W) so its RGB mean and covariance equal ``target``'s (pooled)."""

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.permute(1, 0, 2, 3).reshape(3, -1).double()
        mu = flat.mean(1, keepdim=True)
        centred = flat - mu
        return mu, centred @ centred.T / centred.shape[1] + eps * torch.eye(3, dtype=flat.dtype, device=x.device)

    def sqrtm(c: Tensor, inverse: bool = False) -> Tensor:
        vals, vecs = torch.linalg.eigh(c)
        vals = vals.clamp_min(eps)
        return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T

    mu_s, cov_s = stats(source)
    mu_t, cov_t = stats(target)
    transform = sqrtm(cov_t) @ sqrtm(cov_s, inverse=True)
    flat = source.permute(1, 0, 2, 3).reshape(3, -1).double()
    out = transform @ (flat - mu_s) + mu_t
    return out.reshape(3, source.shape[0], *source.shape[2:]).permute(1, 0, 2, 3).to(source.dtype).clamp(0, 1)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` (B,C,H,W) resampled to ``size`` (H, W) with the package's one filter: bilinear with
    antialias (a triangle filter widened by the scale factor when downscaling, so it does not alias;
    non-negative weights that sum to 1, so [0,1] stays [0,1]). The same size comes back unchanged."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def resize_max_side(x: Tensor, max_side: int | None) -> Tensor:
    """Downscale ``x`` (B,3,H,W) float in [0,1] so its longer side is at most ``max_side``.

    The one max-side resize of the package (CLI, batch jobs, training, metrics all call this), so
    the same photo and setting give the same pixels everywhere. Filter: bilinear with antialias
    (``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``: a triangle filter
    widened by the scale factor, so downscaling does not alias); the weights are non-negative and
    sum to 1, so [0,1] stays [0,1]. The aspect ratio is kept (each side rounded, at least 1 px).
    ``None`` (or 0) and images already small enough come back unchanged; it never upscales.
    """
    if not max_side:
        return x
    if max_side < 1:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    h, w = x.shape[-2:]
    if max(h, w) <= max_side:
        return x
    scale = max_side / max(h, w)
    return resize(x, (max(1, round(h * scale)), max(1, round(w * scale))))


def check_masks(masks: Tensor, content: Tensor, n_styles: int) -> Tensor:
    """Validate (B|1,K,H,W) masks against the content and normalise them to sum to 1 per pixel."""
    if masks.dim() != 4 or masks.shape[1] != n_styles:
        raise InputError(f"masks must be (B,{n_styles},H,W), one per style; got {tuple(masks.shape)}")
    if masks.shape[-2:] != content.shape[-2:]:
        raise InputError(
            f"masks are {masks.shape[-1]}x{masks.shape[-2]} but the content is {content.shape[-1]}x{content.shape[-2]}"
        )
    if masks.shape[0] not in (1, content.shape[0]):
        raise InputError(f"masks batch {masks.shape[0]} does not match content batch {content.shape[0]}")
    masks = masks.to(content).clamp_min(0)
    total = masks.sum(1, keepdim=True)
    if (total <= 0).any():
        raise InputError("masks leave some pixels with no style; cover every pixel (or give a background --style)")
    return (masks / total).expand(content.shape[0], -1, -1, -1)


def _feather(length: int, overlap: int, first: bool, last: bool, device: torch.device) -> Tensor:
    """1-D blending weights for one tile: zero over the ``TILE_CONTEXT`` px at each inner edge, then a
    linear ramp up to 1 across the rest of the overlap, flat inside.

    A tile's edge pixels were computed next to padding instead of the real neighbours, so they get no
    say; a model that looks at most ``TILE_CONTEXT`` px around a pixel is then reproduced exactly, and
    wider receptive fields are feathered across the overlap.
    """
    w = torch.ones(length, device=device)
    margin = min(TILE_CONTEXT, overlap // 4)
    ramp = torch.linspace(0, 1, overlap - margin + 1, device=device)[1:]
    edge = torch.cat([torch.zeros(margin, device=device), ramp])[:length]
    if not first and overlap:
        w[: len(edge)] = edge
    if not last and overlap:
        w[-len(edge) :] = torch.minimum(w[-len(edge) :], edge.flip(0))
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def tiled(
    model: Stylizer,
    content: Tensor,
    styles: list[Style],
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int,
    overlap: int = TILE_OVERLAP,
) -> Tensor:
    """Stylize in overlapping square-ish tiles of at most ``tile_pixels`` and feather them together."""
    b, _, h, w = content.shape
    tile = max(2 * overlap + 32, int(math.sqrt(tile_pixels)))
    out = torch.zeros_like(content)
    acc = torch.zeros(1, 1, h, w, device=content.device, dtype=content.dtype)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for iy, y0 in enumerate(ys):
        for ix, x0 in enumerate(xs):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            patch_masks = masks[..., y0:y1, x0:x1] if masks is not None else None
            patch = model(content[..., y0:y1, x0:x1], styles, alpha=alpha, masks=patch_masks)
            wy = _feather(y1 - y0, overlap, iy == 0, iy == len(ys) - 1, content.device)
            wx = _feather(x1 - x0, overlap, ix == 0, ix == len(xs) - 1, content.device)
            weight = (wy[:, None] * wx[None, :]).to(content.dtype)
            out[..., y0:y1, x0:x1] += patch * weight
            acc[..., y0:y1, x0:x1] += weight
    return out / acc


def working_size(size: tuple[int, int], style_scale: StyleScale) -> tuple[int, int] | None:
    """The (H, W) to stylize an image of ``size`` at: its longer side brought to ``style_scale``, aspect
    kept (as ``resize_max_side``). ``None`` where the image is stylized as it is: ``"native"``, or no
    larger than the style scale (small photos are never enlarged for the network)."""
    h, w = size
    if style_scale == "native" or max(h, w) <= style_scale:
        return None
    scale = style_scale / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _render(
    model: Stylizer,
    content: Tensor,
    styles: list[Style],
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int | None,
    work: tuple[int, int] | None,
) -> Tensor:
    """One rendering under the style scale: the network at the working size ``work`` (None: at the
    content's own size), the result brought back to the content's size edge-aware."""
    if work is None:
        return _run(model, content, styles, alpha=alpha, masks=masks, tile_pixels=tile_pixels)
    if model.own_style_scale:
        return model(content, styles, alpha=alpha, masks=masks, working_side=max(work))
    small_masks = resize(masks, work) if masks is not None else None
    return _upsampled(
        model,
        content,
        work,
        alpha,
        lambda small, a: _run(model, small, styles, alpha=a, masks=small_masks, tile_pixels=tile_pixels),
    )


def _upsampled(
    model: Stylizer, content: Tensor, work: tuple[int, int], alpha: float, network: Callable[[Tensor, float], Tensor]
) -> Tensor:
    """``network(content at the working size, alpha)``, brought back to ``content``'s size edge-aware. A
    pixel-space alpha mixes in the full-size photo, not its working-size copy (which has lost the detail)."""
    blend = model.pixel_alpha and alpha < 1.0
    out = guided_upsample(network(resize(content, work), 1.0 if blend else alpha), content)
    return alpha * out + (1.0 - alpha) * content if blend else out


def stylize_each(
    model: Stylizer,
    content: Tensor,
    styles: list[list[Style]],
    *,
    alpha: float = 1.0,
    style_scale: StyleScale = DEFAULT_STYLE_SCALE,
) -> Tensor:
    """``model.forward_each`` (one style list per image of ``content`` (B,3,H,W)) under the style scale, for
    a batch call that mixes styles; the other controls are ``stylize``'s."""
    check_images(content)
    work = working_size(tuple(content.shape[-2:]), parse_style_scale(style_scale))
    if work is None:
        return model.forward_each(content, styles, alpha=alpha)
    return _upsampled(model, content, work, alpha, lambda small, a: model.forward_each(small, styles, alpha=a))


def _run(
    model: Stylizer,
    content: Tensor,
    styles: list[Style],
    *,
    alpha: float,
    masks: Tensor | None,
    tile_pixels: int | None,
) -> Tensor:
    h, w = content.shape[-2:]
    if model.feed_forward and tile_pixels and h * w > tile_pixels:
        return tiled(model, content, styles, alpha=alpha, masks=masks, tile_pixels=tile_pixels)
    return model(content, styles, alpha=alpha, masks=masks)


def stylize(
    model: Stylizer,
    content: Tensor,
    styles: list[Style],
    *,
    alpha: float = 1.0,
    preserve_color: ColorMode = "none",
    masks: Tensor | None = None,
    max_side: int | None = None,
    tile_pixels: int | None = DEFAULT_TILE_PIXELS,
    style_scale: StyleScale = DEFAULT_STYLE_SCALE,
) -> Tensor:
    """Stylize content ``(B,3,H,W)`` in [0,1] with every control applied; returns ``(B,3,H',W')`` in [0,1].

    ``H', W'`` equal ``H, W`` unless ``max_side`` caps them. ``masks`` ``(B|1,K,H,W)`` assigns
    the K styles to regions (soft masks, normalised per pixel). ``style_scale``: a longer side in px
    or ``"native"`` (see the module docstring).
    """
    check_images(content)
    if preserve_color not in COLOR_MODES:
        raise ConfigError(f"preserve_color must be one of {', '.join(COLOR_MODES)}, got {preserve_color!r}")
    style_scale = parse_style_scale(style_scale)
    model.check_styles(styles)
    device = model.device
    content = resize_max_side(content.to(device), max_side)
    work = working_size(tuple(content.shape[-2:]), style_scale)
    if masks is not None:
        masks = masks.to(device)
        if max_side and masks.shape[-2:] != content.shape[-2:]:
            masks = F.interpolate(masks, size=content.shape[-2:], mode="bilinear", align_corners=False)
        masks = check_masks(masks, content, len(styles))
    styles = [replace(s, image=s.image.to(device)) if s.image is not None else s for s in styles]

    original = content
    if preserve_color == "luminance":
        content_y = luminance(content)
        content = content_y.expand(-1, 3, -1, -1)
        styles = [
            replace(s, image=_grey_matched(luminance(s.image_batch(device)), content_y)) if s.image is not None else s
            for s in styles
        ]
    elif preserve_color == "histogram":
        styles = [
            replace(s, image=match_color(s.image_batch(device), content)) if s.image is not None else s for s in styles
        ]

    grad = torch.enable_grad if not model.feed_forward else torch.no_grad
    with grad():
        if masks is not None and not model.native_masks:
            out = torch.zeros_like(content)
            for k, style in enumerate(styles):
                # each style rendered (at the working size, then full size), composited with the full-size masks
                rendered = _render(
                    model,
                    content,
                    [replace(style, weight=1.0)],
                    alpha=alpha,
                    masks=None,
                    tile_pixels=tile_pixels,
                    work=work,
                )
                out += masks[:, k : k + 1] * rendered
        else:
            out = _render(model, content, styles, alpha=alpha, masks=masks, tile_pixels=tile_pixels, work=work)
    out = out.detach()

    if preserve_color == "luminance":
        ycc = rgb_to_ycbcr(original)
        out = ycbcr_to_rgb(torch.cat([luminance(out), ycc[:, 1:]], 1))
    elif preserve_color == "histogram" and all(s.image is None for s in styles):
        out = torch.stack([match_color(o[None], c[None])[0] for o, c in zip(out, original, strict=True)])
    return out.clamp(0, 1)
