"""Reading Torch7 ``nn.Sequential`` files (``.t7``) as PyTorch modules, for WCT's published encoders/decoders.

The files are parsed with ``torchfile`` (a reader of the Torch7 serialisation format: it builds numpy
arrays and plain objects, never runs code; Lua functions stay bytes). Only the layer types those
networks use are translated; anything else is one ``WeightsError`` line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import WeightsError
from pipeline.models.weights import check_recorded


def _tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, np.ndarray):
        raise WeightsError(f"{what} is not a tensor")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def _conv(layer: Any, what: str) -> nn.Conv2d:
    c_in, c_out, kh, kw = (int(layer[k]) for k in ("nInputPlane", "nOutputPlane", "kH", "kW"))
    conv = nn.Conv2d(
        c_in,
        c_out,
        (kh, kw),
        stride=(int(layer["dH"]), int(layer["dW"])),
        padding=(int(layer["padH"] or 0), int(layer["padW"] or 0)),
    )
    weight, bias = _tensor(layer["weight"], f"{what} weight"), _tensor(layer["bias"], f"{what} bias")
    if weight.numel() != conv.weight.numel() or bias.numel() != conv.bias.numel():
        raise WeightsError(f"{what}: weight {tuple(weight.shape)} does not fit a {c_in}->{c_out} {kh}x{kw} conv")
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))  # old files store it flat (out, in*kh*kw)
        conv.bias.copy_(bias.reshape(-1))
    return conv


def _layer(layer: Any, what: str) -> nn.Module:
    kind = layer.torch_typename().decode() if isinstance(layer.torch_typename(), bytes) else layer.torch_typename()
    name = kind.split(".", 1)[-1]  # nn.ReLU and cudnn.ReLU alike
    if name == "SpatialConvolution":
        return _conv(layer, f"{what} ({kind})")
    if name == "SpatialReflectionPadding":
        return nn.ReflectionPad2d(tuple(int(layer[k]) for k in ("pad_l", "pad_r", "pad_t", "pad_b")))
    if name == "ReLU":
        return nn.ReLU()
    if name == "SpatialMaxPooling":
        return nn.MaxPool2d(
            (int(layer["kH"]), int(layer["kW"])),
            (int(layer["dH"]), int(layer["dW"])),
            (int(layer["padH"] or 0), int(layer["padW"] or 0)),
            ceil_mode=bool(layer["ceil_mode"]),
        )
    if name == "SpatialUpSamplingNearest":
        return nn.Upsample(scale_factor=float(layer["scale_factor"]), mode="nearest")
    raise WeightsError(f"{what}: unsupported Torch7 layer {kind}")


def read_sequential(path: Path) -> nn.Sequential:
    """The ``nn.Sequential`` saved in the Torch7 file ``path`` as a PyTorch ``nn.Sequential``, same order."""
    import torchfile

    check_recorded(path)
    try:
        obj = torchfile.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a cut or foreign file: one line
        raise WeightsError(f"cannot read {path} as a Torch7 file: {_first_line(exc)}") from None
    typename = getattr(obj, "torch_typename", None)
    if typename is None or b"Sequential" not in typename():
        raise WeightsError(f"{path} does not hold a Torch7 nn.Sequential")
    modules = obj["modules"] or []
    try:
        return nn.Sequential(*(_layer(layer, f"{path.name} layer {i}") for i, layer in enumerate(modules)))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a layer without the fields its type has
        raise WeightsError(f"{path}: a layer is not in the Torch7 nn layout: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
