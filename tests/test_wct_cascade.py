"""The full WCT cascade (issue 21 item 7): the published Torch7 layout, per-level parity, the cascade's parity.

The test writes small seeded ``.t7`` files in the layout of Yijunmaverick/UniversalStyleTransfer's models
(``vgg_normalised_conv{N}_1.t7``: VGG19 up to reluN_1 after the 1x1 ``conv0``;
``feature_invertor_conv{N}_1.t7``: the mirrored decoder) with a writer of the Torch7 serialisation
format, and holds the loader against the reference modules and PytorchWCT's ``WCT.py`` cascade.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError, WeightsError
from pipeline.models import Style, create
from pipeline.models.wct import WCT, WCTCascade, cascade_files
from tests.helpers_ff import one_line, smooth_image
from tests.test_fetch import adain_files

# VGG19 conv widths up to relu5_1, in order (conv1_1 ... conv5_1), and the convs each level stops after
VGG = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256), (256, 512)]
VGG += [(512, 512)] * 4
LAST_CONV = {1: 1, 2: 3, 3: 5, 4: 9, 5: 13}
POOL_AFTER = {2, 4, 8, 12}  # a max pool follows conv1_2, conv2_2, conv3_4, conv4_4


# --- the reference networks (PytorchWCT modelsNIPS.py's encoderN / decoderN, as layer lists) -----------


def reference_encoder(level: int) -> list[tuple[str, Any]]:
    layers: list[tuple[str, Any]] = [("conv", (3, 3, 1))]
    for i, (c_in, c_out) in enumerate(VGG[: LAST_CONV[level]], start=1):
        layers += [("pad", None), ("conv", (c_in, c_out, 3)), ("relu", None)]
        if i in POOL_AFTER and i < LAST_CONV[level]:
            layers.append(("pool", None))
    return layers


def reference_decoder(level: int) -> list[tuple[str, Any]]:
    layers: list[tuple[str, Any]] = []
    convs = list(reversed(VGG[: LAST_CONV[level]]))
    for i, (c_out, c_in) in enumerate(convs):
        index = LAST_CONV[level] - i  # the encoder conv this one mirrors
        layers += [("pad", None), ("conv", (c_in, c_out, 3))]
        if index > 1:
            layers.append(("relu", None))
        if index - 1 in POOL_AFTER:
            layers.append(("up", None))
    return layers


def build(spec: list[tuple[str, Any]], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    for kind, arg in spec:
        if kind == "conv":
            c_in, c_out, k = arg
            conv = nn.Conv2d(c_in, c_out, k)
            nn.init.normal_(conv.weight, std=(2.0 / (c_in * k * k)) ** 0.5)  # keeps activations in range
            nn.init.uniform_(conv.bias, -0.05, 0.05)
            modules.append(conv)
        elif kind == "pad":
            modules.append(nn.ReflectionPad2d(1))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "pool":
            modules.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            modules.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(*modules).eval()


def whiten_and_color(c_f: Tensor, s_f: Tensor) -> Tensor:
    """PytorchWCT util.py ``whiten_and_color`` (C, N) features, in float64 with torch.linalg.svd."""
    c_f, s_f = c_f.double(), s_f.double()
    c_mean = c_f.mean(1, keepdim=True)
    c_f = c_f - c_mean
    content_conv = c_f @ c_f.t() / (c_f.shape[1] - 1) + torch.eye(c_f.shape[0], dtype=torch.float64)
    c_u, c_e, c_v = torch.linalg.svd(content_conv)
    k_c = int((c_e > 0.00001).sum())
    s_mean = s_f.mean(1, keepdim=True)
    s_f = s_f - s_mean
    style_conv = s_f @ s_f.t() / (s_f.shape[1] - 1)
    s_u, s_e, s_v = torch.linalg.svd(style_conv)
    k_s = int((s_e > 0.00001).sum())
    c_d = c_e[:k_c].pow(-0.5)
    whitened = c_u[:, :k_c] @ torch.diag(c_d) @ c_u[:, :k_c].t() @ c_f
    s_d = s_e[:k_s].pow(0.5)
    return s_u[:, :k_s] @ torch.diag(s_d) @ s_u[:, :k_s].t() @ whitened + s_mean


def reference_cascade(encoders, decoders, content: Tensor, style: Tensor, alpha: float, levels) -> Tensor:
    """PytorchWCT WCT.py: encode, transform (alpha blend), decode, level by level (batch 1)."""
    x = content
    for n in levels:
        c_f, s_f = encoders[n](x), encoders[n](style)
        c, h, w = c_f.shape[1:]
        target = whiten_and_color(c_f[0].reshape(c, -1), s_f[0].reshape(c, -1)).reshape(1, c, h, w).float()
        x = decoders[n](alpha * target + (1 - alpha) * c_f)
    return x


# --- writing Torch7 files (the reader under test is torchfile's) --------------------------------------


class T7Writer:
    """The Torch7 binary serialisation (torch7 File.lua writeObject) for numbers, strings, tables, float
    tensors and nn modules: enough for the published encoder/decoder files."""

    def __init__(self, f: Any) -> None:
        self.f, self.index = f, 0

    def _int(self, v: int) -> None:
        self.f.write(struct.pack("<i", v))

    def _long(self, v: int) -> None:
        self.f.write(struct.pack("<q", v))

    def _string(self, s: str) -> None:
        data = s.encode()
        self._int(len(data))
        self.f.write(data)

    def _torch_header(self, class_name: str) -> None:
        self.index += 1
        self._int(4)
        self._int(self.index)
        self._string("V 1")
        self._string(class_name)

    def write(self, x: Any) -> None:
        if x is None:
            self._int(0)
        elif isinstance(x, bool):
            self._int(5)
            self._int(int(x))
        elif isinstance(x, (int, float)):
            self._int(1)
            self.f.write(struct.pack("<d", float(x)))
        elif isinstance(x, str):
            self._int(2)
            self._string(x)
        elif isinstance(x, Tensor):
            t = x.detach().float().contiguous()
            self._torch_header("torch.FloatTensor")
            self._int(t.dim())
            for v in (*t.shape, *t.stride(), 1):  # sizes, strides, 1-based storage offset
                self._long(v)
            self._torch_header("torch.FloatStorage")
            self._long(t.numel())
            self.f.write(t.numpy().tobytes())
        elif isinstance(x, tuple):  # (class name, attribute table): an nn module
            self._torch_header(x[0])
            self.write(x[1])
        elif isinstance(x, (dict, list)):
            items = x.items() if isinstance(x, dict) else enumerate(x, start=1)
            self.index += 1
            self._int(3)
            self._int(self.index)
            self._int(len(x))
            for k, v in items:
                self.write(k)
                self.write(v)
        else:
            raise TypeError(type(x))


def to_t7(seq: nn.Sequential) -> tuple[str, dict[str, Any]]:
    modules: list[Any] = []
    for m in seq:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            attrs = {"nInputPlane": m.in_channels, "nOutputPlane": m.out_channels, "kW": kw, "kH": kh, "dW": 1, "dH": 1}
            attrs |= {"padW": 0, "padH": 0, "weight": m.weight, "bias": m.bias, "train": False}
            modules.append(("nn.SpatialConvolution", attrs))
        elif isinstance(m, nn.ReflectionPad2d):
            modules.append(("nn.SpatialReflectionPadding", {"pad_l": 1, "pad_r": 1, "pad_t": 1, "pad_b": 1}))
        elif isinstance(m, nn.ReLU):
            modules.append(("nn.ReLU", {"threshold": 0, "val": 0, "inplace": False}))
        elif isinstance(m, nn.MaxPool2d):
            attrs = {"kW": 2, "kH": 2, "dW": 2, "dH": 2, "padW": 0, "padH": 0, "ceil_mode": True}
            modules.append(("nn.SpatialMaxPooling", attrs))
        else:
            modules.append(("nn.SpatialUpSamplingNearest", {"scale_factor": 2}))
    return ("nn.Sequential", {"modules": modules, "train": False})


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    folder = tmp_path_factory.mktemp("wct-t7")
    encoders = {n: build(reference_encoder(n), seed=10 + n) for n in range(1, 6)}
    decoders = {n: build(reference_decoder(n), seed=20 + n) for n in range(1, 6)}
    for n in range(1, 6):
        for net, name in zip((encoders[n], decoders[n]), cascade_files(n), strict=True):
            with open(folder / name, "wb") as f:
                T7Writer(f).write(to_t7(net))
    return folder, encoders, decoders


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_each_level_reads_as_published_and_matches_the_reference(published) -> None:
    folder, encoders, decoders = published
    model = create("wct", weights=str(folder))
    assert isinstance(model, WCTCascade) and model.levels == (5, 4, 3, 2, 1)
    x = smooth_image(0, 64, 48)
    for n in range(1, 6):
        f = encoders[n](x)
        assert (model.encoders[str(n)](x) - f).abs().max().item() < 1e-4
        assert (model.decoders[str(n)](f) - decoders[n](f)).abs().max().item() < 1e-4
    assert f.shape == (1, 512, 4, 3)  # relu5_1 after four pools


@pytest.mark.parametrize(("alpha", "levels"), [(1.0, (5, 4, 3, 2, 1)), (0.6, (5, 4, 3, 2, 1)), (1.0, (3, 1))])
def test_the_cascade_matches_the_reference_cascade(published, alpha: float, levels) -> None:
    folder, encoders, decoders = published
    model = create("wct", weights=str(folder), eps=1.0, levels=",".join(map(str, levels)))  # eps 1: +identity
    content, style = smooth_image(1, 64, 64), smooth_image(2, 48, 64)
    ours = model.transfer(content, [Style(image=style)], alpha=alpha, masks=None)
    ref = reference_cascade(encoders, decoders, content, style, alpha, levels)
    assert ours.shape == ref.shape == content.shape
    assert (ours - ref).abs().mean().item() < 1e-3 and (ours - ref).abs().max().item() < 1e-2
    assert (ours - content).abs().mean().item() > 1e-2  # it did transfer something


def test_masks_and_the_single_level_option(published, tmp_path: Path) -> None:
    folder, _, _ = published
    model = create("wct", weights=str(folder))
    content = smooth_image(3, 48, 48)
    a, b = Style(image=smooth_image(4, 48, 48)), Style(image=smooth_image(5, 48, 48))
    left = torch.zeros(1, 2, 48, 48)
    left[:, 0, :, :24], left[:, 1, :, 24:] = 1, 1
    masked = model(content, [a, b], masks=left)
    only_a, only_b = model(content, [a]), model(content, [b])
    assert masked.shape == content.shape and torch.isfinite(masked).all()
    # each half looks more like its own style's result than the other's
    assert (masked[..., 4:20] - only_a[..., 4:20]).abs().mean() < (masked[..., 4:20] - only_b[..., 4:20]).abs().mean()
    assert (masked[..., 28:44] - only_b[..., 28:44]).abs().mean() < (
        masked[..., 28:44] - only_a[..., 28:44]
    ).abs().mean()
    with pytest.raises(ConfigError, match="levels"):
        create("wct", weights=str(folder), levels="6,1")
    with pytest.raises(WeightsError, match="Torch7") as err:
        create("wct", weights=str(tmp_path), levels="5,4")
    assert one_line(err.value)
    # the single relu4_1 level stays: with AdaIN-layout weights, or asked for where both are present
    adain = tmp_path / "adain"
    adain.mkdir()
    for name, data in adain_files().items():
        (adain / name).write_bytes(data)
    both = tmp_path / "both"
    both.mkdir()
    for path in [*folder.iterdir(), *adain.iterdir()]:
        (both / path.name).write_bytes(path.read_bytes())
    assert type(create("wct", weights=str(adain))) is WCT
    assert isinstance(create("wct", weights=str(both)), WCTCascade)
    assert type(create("wct", weights=str(both), single_level=True)) is WCT


def test_a_broken_torch7_file_is_one_line(published, tmp_path: Path) -> None:
    folder, _, _ = published
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    cut = broken / "feature_invertor_conv3_1.t7"
    cut.write_bytes(cut.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="feature_invertor_conv3_1.t7") as err:
        create("wct", weights=str(broken))
    assert one_line(err.value)


def test_import_wct_installs_the_cascade(published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = published
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["models", "import", "wct", str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "cache" / "wct").glob("*.t7")) == sorted(p.name for p in folder.iterdir())
    assert isinstance(create("wct"), WCTCascade)  # the cache's cascade, without --weights
    changed = tmp_path / "cache" / "wct" / "feature_invertor_conv2_1.t7"
    changed.write_bytes(changed.read_bytes() + b"\0")  # changed after it was installed: refused
    with pytest.raises(WeightsError, match="changed since it was fetched") as err:
        create("wct")
    assert one_line(err.value)
