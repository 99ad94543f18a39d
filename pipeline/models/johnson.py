"""Johnson et al. 2016 fast feed-forward style transfer, as pytorch/examples' ``TransformerNet``.

One network per style: reflection-padded convs with affine instance norm, two stride-2 downsampling
convs, five residual blocks, two nearest-upsample + conv layers and a 9x9 output conv.
Attribute names match ``fast_neural_style/neural_style/transformer_net.py``, so that repository's
checkpoints (``conv1.conv2d.weight``, ``in1.weight``, ``res1.conv1.conv2d.weight``,
``deconv1.conv2d.weight`` ...) load as saved. Old checkpoints carry ``in*.running_mean/var``
(InstanceNorm buffers of early PyTorch); they are dropped, as ``neural_style.py stylize()`` does.

pytorch/examples feeds pixels in 0-255 and outputs 0-255; that is the default ``input_scale``
(255). A safetensors checkpoint may record another convention in its metadata key
``input_scale`` (``"1"`` for a network trained on [0,1]); the stylizer converts on both sides
so its own contract stays [0,1].
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.models.base import Style, Stylizer
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import cache_availability, load_into, load_state_dict, read_metadata, split_sha256

SAVED_MODELS_URL = "https://www.dropbox.com/s/lrvwfehqdcxoza8/saved_models.zip?dl=1"
NETWORKS = ("candy.pth", "mosaic.pth", "rain_princess.pth", "udnie.pth")  # inside saved_models.zip
JOHNSON_HELP = (
    "johnson needs --weights (one trained network per style): `stylize models fetch johnson` for "
    f"pytorch/examples' fast_neural_style saved_models ({SAVED_MODELS_URL}: candy.pth, mosaic.pth, "
    "rain_princess.pth, udnie.pth), then --weights candy; or train one with `stylize train johnson`"
)
_DEPRECATED = re.compile(r"in\d+\.(running_mean|running_var|num_batches_tracked)$")


class ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, 1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3, 1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.in2(self.conv2(self.relu(self.in1(self.conv1(x))))) + x


class UpsampleConvLayer(nn.Module):
    """Nearest upsample then conv: avoids the checkerboard of transposed convs."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = upsample
        if upsample:
            self.upsample_layer = nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = self.upsample_layer(x)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """pytorch/examples' network: (B,3,H,W) in its input scale -> (B,3,H,W), H and W multiples of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, 32, 9, 1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, 3, 2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, 3, 2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, 3, 1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, 3, 1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class Johnson(Stylizer):
    """Fixed-style stylizer: content (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1]; the style is in the weights.

    ``alpha`` blends the stylized image with the content in pixel space. Takes ``[Style()]``.
    """

    name = "johnson"
    family = "johnson"
    style_kind = "fixed"
    multiple = 4
    native_masks = False
    pixel_alpha = True
    # the 9x9 reflection pad needs more than 4 px: inputs of 5+ px pad to 8
    min_px = 5

    def __init__(self, net: TransformerNet, input_scale: float = 255.0) -> None:
        super().__init__()
        self.net = net
        self.input_scale = float(input_scale)

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        stylized = self.net(content * self.input_scale) / self.input_scale
        return alpha * stylized + (1.0 - alpha) * content


def clean_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the deprecated InstanceNorm buffers old pytorch/examples checkpoints carry."""
    return {k: v for k, v in state.items() if not _DEPRECATED.search(k)}


def create_johnson(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu"
) -> Johnson:
    """Load a TransformerNet checkpoint (.pth or safetensors, path or URI); ``encoder_weights`` is unused."""
    del encoder_weights  # accepted so every family shares the factory signature
    if weights is None:
        raise WeightsError(JOHNSON_HELP)
    state = clean_state(load_state_dict(str(weights)))
    if state and all(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items()}  # a Johnson module's own state dict
    net = TransformerNet()
    load_into(net, state, what=f"johnson ({split_sha256(str(weights))[0]})")
    meta = read_metadata(str(weights)) if str(weights).split("#")[0].endswith(".safetensors") else {}
    try:
        scale = float(meta.get("input_scale", 255.0))
    except ValueError:
        raise WeightsError(f"johnson metadata input_scale must be a number, got {meta['input_scale']!r}") from None
    if scale <= 0:
        raise WeightsError(f"johnson metadata input_scale must be positive, got {scale}")
    return Johnson(net, scale).requires_grad_(False).to(device).eval()


register(
    ModelCard(
        stylizer=Johnson,
        paper="Johnson, Alahi & Fei-Fei, Perceptual Losses for Real-Time Style Transfer and Super-Resolution, ECCV'16",
        factory=create_johnson,
        weight_sources=(
            WeightSource(
                "saved_models.zip: candy.pth, mosaic.pth, rain_princess.pth, udnie.pth (one network per style; "
                "--weights candy picks one once fetched)",
                f"pytorch/examples fast_neural_style saved_models ({SAVED_MODELS_URL})",
                "BSD-3-Clause (pytorch/examples)",
                file="saved_models.zip",
                folder="johnson",
                url=SAVED_MODELS_URL,
                size=26_900_000,
                members=NETWORKS,
            ),
            WeightSource("a TransformerNet state dict (metadata input_scale)", "`stylize train johnson`", "yours"),
        ),
        preprocessing=(
            "[0,1] times input_scale (255 for pytorch/examples checkpoints, from safetensors metadata otherwise); "
            "content reflect-padded to a multiple of 4; output divided by input_scale, cropped and clamped to [0,1]"
        ),
        availability=lambda: cache_availability("johnson", NETWORKS[0], JOHNSON_HELP),
        default_network="candy",
    )
)
