"""AnimeGANv2's generator (Chen, Liu & Chen 2020), as bryandlee/animegan2-pytorch builds it for its ``.pt`` weights.

``ConvNormLReLU`` = pad (reflect), conv (no bias), ``GroupNorm(1, C)`` (affine), LeakyReLU(0.2); inverted
residual blocks (1x1 expand x2, depthwise 3x3 with bias, 1x1 project, GroupNorm; residual when the widths
match); two bilinear 2x upsamplings in the decoder; a 1x1 conv and tanh. Pixels go in and come out in
[-1, 1]. Attribute names follow that repository's ``model.py`` (``block_a.0.1.weight``,
``block_c.1.layers.1.1.weight``, ``out_layer.0.weight`` ...), so its state dicts load strictly as saved.

``align_corners``: the repository's ``forward`` takes it (default True: each upsampling goes to the
encoder's exact size with ``align_corners=True``), while its ``test.py`` passes ``--upsample_align``
(default False: ``scale_factor=2``, ``align_corners=False``). The weights were converted from TensorFlow,
whose resize matches neither exactly, so both are offered; False, the inference script's default, is ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.models.gan import GeneratorStylizer
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import cache_availability, load_into, load_state_dict, read_metadata, split_sha256

WEIGHTS_URL = "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights/{name}.pt"
ANIMEGAN_HELP = (
    "animegan needs --weights: an animegan2-pytorch generator state dict, e.g. "
    + WEIGHTS_URL.format(name="paprika")
    + " (also face_paint_512_v2, face_paint_512_v1, celeba_distill; `stylize models fetch animegan` fetches them, "
    "then --weights paprika)"
)


class ConvNormLReLU(nn.Sequential):
    """pad, conv (bias only if asked), GroupNorm(1), LeakyReLU(0.2): keys ``1.weight``, ``2.weight``, ``2.bias``."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, groups=groups, bias=bias),
            nn.GroupNorm(1, c_out),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, expansion: int = 2) -> None:
        super().__init__()
        self.residual = c_in == c_out
        mid = c_in * expansion
        self.layers = nn.Sequential(
            ConvNormLReLU(c_in, mid, kernel_size=1, padding=0),
            ConvNormLReLU(mid, mid, groups=mid, bias=True),  # depthwise
            nn.Conv2d(mid, c_out, 1, bias=False),  # pointwise
            nn.GroupNorm(1, c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Generator(nn.Module):
    """(B,3,H,W) in [-1,1] -> (B,3,H,W) in [-1,1]; with ``align_corners=False`` H and W must be multiples of 4."""

    def __init__(self, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        # stride-2 convs pad right/bottom only, as TensorFlow's "same" padding does for even sizes
        down = (0, 1, 0, 1)
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=down),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(ConvNormLReLU(64, 128, stride=2, padding=down), ConvNormLReLU(128, 128))
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(128, 128), ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64), ConvNormLReLU(64, 64), ConvNormLReLU(64, 32, kernel_size=7, padding=3)
        )
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, 1, bias=False), nn.Tanh())

    def _up(self, x: Tensor, size: torch.Size) -> Tensor:
        if self.align_corners:
            return F.interpolate(x, size, mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        half = self.block_a(x)
        out = self.block_c(self.block_b(half))
        out = self.block_d(self._up(out, half.shape[-2:]))
        out = self.block_e(self._up(out, x.shape[-2:]))
        return self.out_layer(out)


class AnimeGAN(GeneratorStylizer):
    """Fixed-style generator: content (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1]; the style is in the weights.

    ``2x - 1`` in, ``(y + 1) / 2`` out; ``alpha`` blends with the photo in pixel space. Takes ``[Style()]``.
    """

    name = "animegan"


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise WeightsError(f"animegan metadata align_corners must be true or false, got {value!r}")


def create_animegan(
    weights: str | None = None,
    encoder_weights: str = "auto",
    device: str | torch.device = "cpu",
    align_corners: bool | None = None,
) -> AnimeGAN:
    """Load an animegan2-pytorch ``.pt`` state dict (weights-only) or safetensors; ``encoder_weights`` is unused.

    ``align_corners`` (see the module docstring): None takes a safetensors file's metadata key
    ``align_corners`` when it has one, else False.
    """
    del encoder_weights
    if weights is None:
        raise WeightsError(ANIMEGAN_HELP)
    path = split_sha256(str(weights))[0]
    state = {k.removeprefix("module."): v for k, v in load_state_dict(str(weights)).items()}
    if align_corners is None:
        meta = read_metadata(str(weights)) if path.endswith(".safetensors") else {}
        align_corners = _flag(meta["align_corners"]) if "align_corners" in meta else False
    net = Generator(align_corners=align_corners)
    load_into(net, state, what=f"animegan ({path})")
    return AnimeGAN(net).requires_grad_(False).to(device).eval()


_REPO = "bryandlee/animegan2-pytorch weights/"
register(
    ModelCard(
        stylizer=AnimeGAN,
        paper="Chen, Liu & Chen, AnimeGAN: A Novel Lightweight GAN for Photo Animation (ISICA 2019); "
        "AnimeGANv2 (2020), PyTorch port by bryandlee",
        factory=create_animegan,
        weight_sources=(
            WeightSource(
                "paprika.pt (landscapes -> Kon Satoshi's Paprika)",
                WEIGHTS_URL.format(name="paprika"),
                "converted from TachibanaYoshino/AnimeGANv2, whose licence allows non-commercial use only "
                "(the port's repository is MIT)",
                file="paprika.pt",
                folder="animegan",
                url=WEIGHTS_URL.format(name="paprika"),
                size=8_600_000,
                non_commercial=True,
            ),
            WeightSource(
                "face_paint_512_v2.pt (faces, 512 px)",
                WEIGHTS_URL.format(name="face_paint_512_v2"),
                "published by bryandlee in the MIT-licensed repository; no separate weights licence stated",
                file="face_paint_512_v2.pt",
                folder="animegan",
                url=WEIGHTS_URL.format(name="face_paint_512_v2"),
                size=8_600_000,
            ),
            WeightSource(
                "face_paint_512_v1.pt (faces, 512 px)",
                WEIGHTS_URL.format(name="face_paint_512_v1"),
                "published by bryandlee in the MIT-licensed repository; no separate weights licence stated",
                file="face_paint_512_v1.pt",
                folder="animegan",
                url=WEIGHTS_URL.format(name="face_paint_512_v1"),
                size=8_600_000,
            ),
            WeightSource(
                "celeba_distill.pt (faces, 256 px; distilled from bryandlee's naver-webtoon-faces model)",
                WEIGHTS_URL.format(name="celeba_distill"),
                "sits in the MIT-licensed repository, no separate weights licence stated",
                file="celeba_distill.pt",
                folder="animegan",
                url=WEIGHTS_URL.format(name="celeba_distill"),
                size=8_600_000,
            ),
        ),
        preprocessing=(
            "[0,1] -> [-1,1]; content reflect-padded to a multiple of 4; bilinear upsampling with "
            "align_corners False by default (create(..., align_corners=True) for torch.hub's forward); "
            "tanh output mapped back to [0,1], cropped and clamped; alpha blends with the photo"
        ),
        availability=lambda: cache_availability("animegan", "paprika.pt", ANIMEGAN_HELP),
        default_network="paprika",
    )
)
