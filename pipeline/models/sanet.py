"""SANet: arbitrary style transfer with style-attentional networks (Park & Lee, CVPR 2019).

Attention from normalised content features to normalised style features at relu4_1 and
relu5_1, each with learned 1x1 projections ``f`` (query), ``g`` (key), ``h`` (value) and
``out_conv``; the relu5_1 branch is upsampled and added, merged by a reflection-padded 3x3
``merge_conv`` and decoded by the AdaIN-layout decoder.

Checkpoints in the GlebSBrykin/SANET layout (``Eval.py``) load as published:
``decoder.pth`` (the AdaIN decoder Sequential), ``transformer.pth`` (``Transform``:
``sanet4_1.{f,g,h,out_conv}.*``, ``sanet5_1.*``, ``merge_conv.*``) and ``vgg_normalised.pth``.
That repository names its files ``decoder_iter_78000.pth`` / ``transformer_iter_78000.pth``
by default: rename them. A safetensors file holds ``decoder.*``, ``transform.*`` and optional
``encoder.*`` keys. Default location: ``cache_dir()/sanet/``.

``alpha`` interpolates the transformed features with the content's relu4_1 features (the
original has no strength control; this is the AdaIN convention). At ``alpha=0`` the decoder
sees raw content features, which it was not trained on, so it is only roughly the content.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models import vgg
from pipeline.models.adain import load_decoder, mix_targets, region_masks
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.decoder_ckpt import checkpoint_availability, make_encoder, read_checkpoint
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import load_into

SANET_FILES = {"decoder": "decoder.pth", "transform": "transformer.pth"}
SANET_HELP = (
    "no SANet weights: download decoder, transformer and vgg_normalised from the GlebSBrykin/SANET README "
    "(Yandex.Disk: https://yadi.sk/d/xsZ7j6FhK1dmfQ, https://yadi.sk/d/GhQe3g_iRzLKMQ, "
    "https://yadi.sk/d/7IrysY8q8dtneQ) as decoder.pth, transformer.pth, vgg_normalised.pth into one folder DIR, "
    "then `stylize models import sanet DIR` (it installs them into {where}; or pass --weights DIR), "
    "or train with `stylize train sanet`"
)
# (file, the README's link, bytes from the parameter count)
SANET_PUBLISHED = (
    ("decoder.pth", "https://yadi.sk/d/xsZ7j6FhK1dmfQ", 14_027_000),
    ("transformer.pth", "https://yadi.sk/d/GhQe3g_iRzLKMQ", 17_844_000),
    ("vgg_normalised.pth", "https://yadi.sk/d/7IrysY8q8dtneQ", 80_104_000),
)
# attention scores for one chunk of query rows stay under this many bytes
ATTENTION_BYTES = 256 * 2**20


def mean_variance_norm(features: Tensor) -> Tensor:
    mean, std = vgg.mean_std(features)
    return (features - mean) / std


class SANetBlock(nn.Module):
    """One style-attention module: content (B,C,h,w), style (1|B,C,hs,ws) -> (B,C,h,w)."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.f = nn.Conv2d(channels, channels, (1, 1))
        self.g = nn.Conv2d(channels, channels, (1, 1))
        self.h = nn.Conv2d(channels, channels, (1, 1))
        self.out_conv = nn.Conv2d(channels, channels, (1, 1))
        self.max_bytes = ATTENTION_BYTES

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = content.shape
        query = self.f(mean_variance_norm(content)).flatten(2).transpose(1, 2)  # (B, Nc, C)
        key = self.g(mean_variance_norm(style)).flatten(2)  # (Bs, C, Ns)
        value = self.h(style).flatten(2)  # (Bs, C, Ns)
        out = attention(query, key, value, self.max_bytes)
        return self.out_conv(out.reshape(b, c, h, w)) + content


def attention(query: Tensor, key: Tensor, value: Tensor, max_bytes: int = ATTENTION_BYTES) -> Tensor:
    """``value @ softmax(query @ key, -1)^T`` -> (B,C,Nc), in chunks of query rows.

    The full score matrix is (B, Nc, Ns), quadratic in image area; chunking keeps each piece
    under ``max_bytes`` without changing the result (the softmax runs over style positions).
    """
    b, n_q, _ = query.shape
    n_s = key.shape[-1]
    rows = max(1, max_bytes // max(1, b * n_s * query.element_size()))
    out = query.new_empty(b, value.shape[1], n_q)
    for start in range(0, n_q, rows):
        scores = torch.softmax(query[:, start : start + rows] @ key, dim=-1)  # (B, q, Ns)
        out[..., start : start + rows] = value @ scores.transpose(1, 2)
    return out


class Transform(nn.Module):
    """GlebSBrykin/SANET ``Transform``: relu4_1 and relu5_1 of content and style -> (B,512,h4,w4)."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.sanet4_1 = SANetBlock(channels)
        self.sanet5_1 = SANetBlock(channels)
        self.merge_conv = nn.Conv2d(channels, channels, (3, 3))

    def forward(self, content4_1: Tensor, style4_1: Tensor, content5_1: Tensor, style5_1: Tensor) -> Tensor:
        deep = F.interpolate(self.sanet5_1(content5_1, style5_1), scale_factor=2.0, mode="nearest")
        merged = self.sanet4_1(content4_1, style4_1) + deep
        return self.merge_conv(F.pad(merged, (1, 1, 1, 1), mode="reflect"))


class SANet(Stylizer):
    """SANet stylizer: content (B,3,H,W) in [0,1] + weighted style images -> (B,3,H,W) in [0,1].

    Content is padded to a multiple of 16 so the upsampled relu5_1 branch matches relu4_1.
    Several styles: weighted sum of their transformed features; masks (B,K,H,W) select
    each style's transformed features per region at relu4_1 resolution.
    """

    name = "sanet"
    family = "sanet"
    style_kind = "image"
    multiple = 16
    native_masks = True
    # relu5_1 needs >= 2 px after four ceil-mode pools for its reflection pad: 17 -> 9 -> 5 -> 3 -> 2
    min_px = 17
    style_side = 512  # see Stylizer.style_side

    def __init__(self, encoder: vgg.VGGEncoder, transform: Transform, decoder: nn.Sequential) -> None:
        super().__init__()
        self.encoder = encoder
        self.transform = transform
        self.decoder = decoder

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.encoder(x, ["relu4_1", "relu5_1"])
        return feats["relu4_1"], feats["relu5_1"]

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        c4, c5 = self.encode(content)
        weights = normalized_weights(styles)
        regions = None
        if masks is not None:
            regions = region_masks(masks, tuple(c4.shape[-2:]), len(styles), content.shape[0]).to(c4)
        targets = []
        for style in styles:
            s4, s5 = self.style_features(style, self.encode, device=c4.device, dtype=content.dtype)
            targets.append(self.transform(c4, s4, c5, s5))
        t = mix_targets(targets, weights, regions)
        return self.decoder(alpha * t + (1.0 - alpha) * c4)


def create_sanet(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu"
) -> SANet:
    """Load SANet from ``weights`` (a published-layout directory/prefix or one safetensors) onto ``device``."""
    ckpt = read_checkpoint(weights, family="sanet", files=SANET_FILES, help_text=SANET_HELP)
    decoder = load_decoder(ckpt.parts["decoder"], what=f"sanet decoder ({ckpt.where})")
    transform = Transform()
    load_into(transform, ckpt.parts["transform"], what=f"sanet transformer ({ckpt.where})")
    encoder = make_encoder(ckpt, encoder_weights, last="relu5_1")
    return SANet(encoder, transform, decoder).requires_grad_(False).to(device).eval()


register(
    ModelCard(
        stylizer=SANet,
        paper="Park & Lee, Arbitrary Style Transfer with Style-Attentional Networks, CVPR 2019",
        factory=create_sanet,
        weight_sources=(
            # Yandex.Disk pages, not plain downloads: fetched by hand, installed by `stylize models import sanet DIR`
            *(
                WeightSource(
                    f"{file} (a directory or URI prefix with the other two)",
                    f"the GlebSBrykin/SANET README's download links ({link})",
                    "MIT (GlebSBrykin/SANET)",
                    file=file,
                    folder="sanet",
                    size=size,
                )
                for file, link, size in SANET_PUBLISHED
            ),
            WeightSource(
                "a safetensors file with decoder.*, transform.* (+ encoder.*) keys", "`stylize train sanet`", "yours"
            ),
        ),
        preprocessing=(
            "the encoder's 1x1 input conv applies its convention (vgg_normalised: BGR 0-255 minus "
            "mean); content reflect-padded to a multiple of 16; relu4_1 + relu5_1 attention, chunked by query rows"
        ),
        availability=lambda: checkpoint_availability("sanet", SANET_FILES, SANET_HELP),
    )
)
