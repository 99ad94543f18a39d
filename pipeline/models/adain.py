"""AdaIN: arbitrary style transfer with adaptive instance normalisation (Huang & Belongie, ICCV 2017).

``decoder(AdaIN(vgg_relu4_1(content), vgg_relu4_1(style)))`` with the VGG19 ``vgg_normalised``
encoder and the mirrored decoder of naoto0804/pytorch-AdaIN (``net.py``). Checkpoints in that
repository's layout load as published:

- ``decoder.pth``: the state dict of its ``decoder`` ``nn.Sequential`` (convs at indices
  1, 5, 8, 11, 14, 18, 21, 25, 28); ``build_decoder`` rebuilds that exact Sequential.
- ``vgg_normalised.pth``: its ``vgg`` Sequential, read by ``vgg.from_state_dict``.

``weights`` is a directory (or URI prefix) holding ``decoder.pth`` and, when present,
``vgg_normalised.pth`` (used as the encoder: the decoder was trained against it), or one
safetensors file with ``decoder.*`` and optional ``encoder.*`` keys; ``decoder_ckpt`` reads
both. Without ``weights`` the default location ``cache_dir()/adain/`` is searched.

This module also holds the network pieces ``wct`` and ``sanet`` share: the decoder, per-region
masks and target mixing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.models import vgg
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.decoder_ckpt import ENCODER_FILE, checkpoint_availability, make_encoder, read_checkpoint
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import load_into

RELEASE_URL = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
DECODER_CONVS = (1, 5, 8, 11, 14, 18, 21, 25, 28)
ADAIN_FILES = {"decoder": "decoder.pth"}
ADAIN_HELP = (
    f"no AdaIN weights: download {RELEASE_URL}/decoder.pth and {RELEASE_URL}/{ENCODER_FILE} "
    "into {where} (or pass --weights DIR), or train a decoder with `stylize train adain`"
)


# --- the network ----------------------------------------------------------------------------------


def build_decoder() -> nn.Sequential:
    """The pytorch-AdaIN / SANET decoder: relu4_1 features (B,512,h,w) -> RGB (B,3,8h,8w).

    Built as the same ``nn.Sequential`` so its state dict keys are the published ones.
    """

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3))]

    def up() -> nn.Module:
        return nn.Upsample(scale_factor=2, mode="nearest")

    layers: list[nn.Module] = [*conv(512, 256), nn.ReLU(), up()]
    for _ in range(3):
        layers += [*conv(256, 256), nn.ReLU()]
    layers += [*conv(256, 128), nn.ReLU(), up()]
    layers += [*conv(128, 128), nn.ReLU(), *conv(128, 64), nn.ReLU(), up()]
    layers += [*conv(64, 64), nn.ReLU(), *conv(64, 3)]
    return nn.Sequential(*layers)


def masked_mean_std(features: Tensor, mask: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (B,C,1,1) over the positions weighted by ``mask`` (B,1,h,w).

    With ``mask=None`` (or all ones) this is ``vgg.mean_std``: unbiased variance plus ``eps``.
    """
    if mask is None:
        return vgg.mean_std(features, eps)
    n = mask.sum((2, 3), keepdim=True)
    mean = (features * mask).sum((2, 3), keepdim=True) / n.clamp_min(1e-6)
    # (n - 1) keeps a full mask identical to the unbiased global statistics
    var = ((features - mean) ** 2 * mask).sum((2, 3), keepdim=True) / (n - 1).clamp_min(1.0)
    return mean, (var + eps).sqrt()


def adain(content: Tensor, style: Tensor, mask: Tensor | None = None) -> Tensor:
    """Give ``content`` features (B,C,h,w) the channel mean/std of ``style`` (1 or B,C,hs,ws).

    With ``mask`` (B,1,h,w) the content statistics come from that region only (the paper's
    spatial control); the result is defined everywhere and blended by the caller.
    """
    c_mean, c_std = masked_mean_std(content, mask)
    s_mean, s_std = vgg.mean_std(style)
    return (content - c_mean) / c_std * s_std + s_mean


def region_masks(masks: Tensor, size: tuple[int, int], n_styles: int, batch: int) -> Tensor:
    """Image masks (B|1,K,H,W) -> (B|1,K,h,w) at feature ``size``, summing to 1 over K."""
    if masks.dim() != 4 or masks.shape[1] != n_styles or masks.shape[0] not in (1, batch):
        raise ConfigError(
            f"masks must be (B,{n_styles},H,W) for {n_styles} styles and B={batch}, got {tuple(masks.shape)}"
        )
    small = F.adaptive_avg_pool2d(masks.float(), size)
    return small / small.sum(1, keepdim=True).clamp_min(1e-8)


def mix_targets(targets: list[Tensor], weights: list[float], regions: Tensor | None) -> Tensor:
    """Weighted sum of per-style targets, or per-region selection when ``regions`` (B,K,h,w) is given."""
    if regions is None:
        return sum((w * t for w, t in zip(weights, targets, strict=True)), torch.zeros_like(targets[0]))
    return sum((regions[:, k : k + 1] * t for k, t in enumerate(targets)), torch.zeros_like(targets[0]))


class AdaIN(Stylizer):
    """AdaIN stylizer: content (B,3,H,W) in [0,1] + weighted style images -> (B,3,H,W) in [0,1].

    ``alpha`` interpolates features: ``alpha * t + (1 - alpha) * f_c`` before decoding.
    Several styles: weighted sum of their AdaIN targets. Masks (B,K,H,W): per-region AdaIN with
    region-only content statistics, combined by the masks at feature resolution (weights are
    then ignored: the masks already say how much of each style goes where).
    """

    name = "adain"
    family = "adain"
    style_kind = "image"
    multiple = 8
    native_masks = True
    # relu4_1 needs >= 2 px after three ceil-mode pools for its reflection pad: 9 -> 5 -> 3 -> 2
    min_px = 9
    style_side = 512  # see Stylizer.style_side

    def __init__(self, encoder: vgg.VGGEncoder, decoder: nn.Sequential) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x, ["relu4_1"])["relu4_1"]

    def targets(self, f_c: Tensor, style_feats: list[Tensor], regions: Tensor | None) -> list[Tensor]:
        """One transformed feature map (B,C,h,w) per style; ``regions`` (B,K,h,w) or None."""
        return [
            adain(f_c, f_s, None if regions is None else regions[:, k : k + 1]) for k, f_s in enumerate(style_feats)
        ]

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        f_c = self.encode(content)
        if alpha == 0.0:
            return self.decoder(f_c)  # every style term would be multiplied by zero
        weights = normalized_weights(styles)
        regions = None
        if masks is not None:
            regions = region_masks(masks, tuple(f_c.shape[-2:]), len(styles), content.shape[0]).to(f_c)
        style_feats = [self.style_features(s, self.encode, device=f_c.device, dtype=content.dtype) for s in styles]
        t = mix_targets(self.targets(f_c, style_feats, regions), weights, regions)
        return self.decoder(alpha * t + (1.0 - alpha) * f_c)

    per_sample_styles = True

    def transfer_each(self, content: Tensor, styles: list[list[Style]], *, alpha: float) -> Tensor:
        # encoder and decoder run on the whole batch; only the per-image feature transform differs
        self.require_min_size(content, what="content")
        f_c = self.encode(content)
        if alpha == 0.0:
            return self.decoder(f_c)
        targets = []
        for i, own in enumerate(styles):
            feats = [self.style_features(s, self.encode, device=f_c.device, dtype=content.dtype) for s in own]
            targets.append(mix_targets(self.targets(f_c[i : i + 1], feats, None), normalized_weights(own), None))
        return self.decoder(alpha * torch.cat(targets) + (1.0 - alpha) * f_c)


def load_decoder(state: dict[str, Tensor], *, what: str) -> nn.Sequential:
    decoder = build_decoder()
    load_into(decoder, state, what=what)
    return decoder


def create_adain(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu"
) -> AdaIN:
    """Load AdaIN from ``weights`` (see the module docstring) onto ``device``."""
    ckpt = read_checkpoint(weights, family="adain", files=ADAIN_FILES, help_text=ADAIN_HELP)
    decoder = load_decoder(ckpt.parts["decoder"], what=f"adain decoder ({ckpt.where})")
    encoder = make_encoder(ckpt, encoder_weights, last="relu4_1")
    model = AdaIN(encoder, decoder).requires_grad_(False)
    return model.to(device).eval()


WEIGHT_SOURCES = (
    # the two published files, fetched into cache_dir()/adain (or read from --weights DIR / a URI prefix)
    WeightSource(
        "decoder.pth (the AdaIN decoder; with vgg_normalised.pth in a directory or URI prefix)",
        f"{RELEASE_URL}/decoder.pth (naoto0804/pytorch-AdaIN)",
        "MIT (pytorch-AdaIN)",
        file="decoder.pth",
        folder="adain",
        url=f"{RELEASE_URL}/decoder.pth",
        size=14_027_000,
    ),
    WeightSource(
        f"{ENCODER_FILE} (the VGG19 encoder the decoder was trained against)",
        f"{RELEASE_URL}/{ENCODER_FILE} (naoto0804/pytorch-AdaIN)",
        "MIT (pytorch-AdaIN)",
        file=ENCODER_FILE,
        folder="adain",
        url=f"{RELEASE_URL}/{ENCODER_FILE}",
        size=80_104_000,
    ),
    WeightSource("a safetensors file with decoder.* (+ encoder.*) keys", "`stylize train adain`", "yours"),
)

register(
    ModelCard(
        stylizer=AdaIN,
        paper="Huang & Belongie, Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization, ICCV 2017",
        factory=create_adain,
        weight_sources=WEIGHT_SOURCES,
        preprocessing=(
            "the encoder's 1x1 input conv applies its own convention (vgg_normalised: BGR 0-255 minus "
            "mean); content reflect-padded to a multiple of 8; relu4_1 features; output cropped and clamped to [0,1]"
        ),
        availability=lambda: checkpoint_availability("adain", ADAIN_FILES, ADAIN_HELP),
    )
)
