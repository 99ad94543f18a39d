"""What every trainer shares: the config, checkpoints in object storage, loss logs, sample grids.

Layout under the ``output`` URI (any ``Storage`` root: a folder, ``s3://``, ``gs://``)::

    checkpoints/<stylizer>-step00001000.safetensors   the model: loads with pipeline.models.create(name, weights=URI)
    state/step00001000.safetensors                   optimizer (+ grad scaler) state, for resuming
    samples/step00001000.png                         sample grid: content | style | output, one row per sample
    losses/step00001000.csv                          per-step losses since the previous checkpoint
    <stylizer>.safetensors, losses.csv, loss_curve.png   written when the run finishes

Each step's files are written state -> losses -> samples -> model, each atomically, so a model
file means its step is complete; resuming picks the newest one and continues from its step.
Model metadata (safetensors header, all strings): ``format``, ``stylizer``, ``step``,
``encoder`` (the VGG source id the loader should use), ``encoder_arch``, ``encoder_sha256``
(for file sources), ``style`` or ``style_manifest``, ``content_manifest``, ``losses`` (JSON,
the mean of each term since the previous checkpoint), ``config`` (JSON), ``created``, and for
johnson ``input_scale``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from pipeline.codec import encode_image, to_array
from pipeline.errors import ConfigError, WeightsError
from pipeline.storage import ALLOWED_SCHEMES, Storage

FORMAT = "stylize-train-1"
Stylizer = Literal["johnson", "adain", "sanet"]
_STEP = re.compile(r"step(\d+)\.safetensors$")

# Per-family defaults from the papers / reference code. Loss weights are stated for a loss network
# with Caffe input scale (BGR 0-255: hed-vgg16, vgg_normalised); see ``feature_scale``. adain and sanet
# further put each layer on vgg_normalised's scale (``layer_gains``), as their papers' weights assume.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # Johnson et al.; content 30 is pytorch/examples' 1e5 at ImageNet scale converted to Caffe scale. Its style
    # weight converts to 3600, but measured with hed-vgg16 that sacrifices all content (style loss of an
    # unchanged photo 5.9e6 vs content loss of a flat grey output 2.1e4); 300 gives a ratio of ~20.
    "johnson": {
        "steps": 40000,
        "batch_size": 4,
        "lr": 1e-3,
        "lr_decay": 0.0,
        "content_weight": 30.0,
        "style_weight": 300.0,
        "tv_weight": 1e4,
        "content_layers": ["relu2_2"],
        "style_layers": ["relu1_2", "relu2_2", "relu3_3", "relu4_3"],
        "resize_factor": 1.0,
    },
    # Huang & Belongie / naoto0804 pytorch-AdaIN train.py
    "adain": {
        "steps": 160000,
        "batch_size": 8,
        "lr": 1e-4,
        "lr_decay": 5e-5,
        "content_weight": 1.0,
        "style_weight": 10.0,
        "content_layers": ["relu4_1"],
        "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
        "resize_factor": 2.0,
    },
    # Park & Lee 2019, Sec. 3.3 (lambda_c=1, lambda_s=3, lambda_identity1=1, lambda_identity2=50)
    "sanet": {
        "steps": 160000,
        "batch_size": 5,
        "lr": 1e-4,
        "lr_decay": 5e-5,
        "content_weight": 1.0,
        "style_weight": 3.0,
        "identity1_weight": 1.0,
        "identity2_weight": 50.0,
        "content_layers": ["relu4_1", "relu5_1"],
        "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
        "resize_factor": 2.0,
    },
}


class TrainConfig(BaseModel):
    """One training run. ``None`` fields take the family default (``FAMILY_DEFAULTS``) in ``resolved()``."""

    model_config = ConfigDict(extra="forbid")

    stylizer: Stylizer
    content_manifest: str
    output: str
    style: str | None = None
    style_manifest: str | None = None
    steps: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    lr_decay: float | None = Field(default=None, ge=0)
    image_size: int = Field(default=256, ge=16)
    resize_to: int | None = Field(default=None, ge=16)
    style_size: int | None = Field(default=None, ge=16)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    encoder_weights: str = "auto"
    init_from: str | None = None
    content_weight: float | None = Field(default=None, ge=0)
    style_weight: float | None = Field(default=None, ge=0)
    tv_weight: float | None = Field(default=None, ge=0)
    identity1_weight: float | None = Field(default=None, ge=0)
    identity2_weight: float | None = Field(default=None, ge=0)
    content_layers: list[str] | None = None
    style_layers: list[str] | None = None
    checkpoint_every: int = Field(default=1000, ge=1)
    log_every: int = Field(default=50, ge=1)
    workers: int = Field(default=1, ge=0)
    cpus_per_worker: int | None = Field(default=None, ge=1)
    max_failures: int = Field(default=2, ge=0)
    samples: int = Field(default=4, ge=1, le=16)
    cache_images: int = Field(default=512, ge=0)
    allowed_schemes: list[str] = Field(default_factory=lambda: sorted(ALLOWED_SCHEMES))

    def resolved(self) -> TrainConfig:
        """A copy with family defaults filled in and cross-field checks done; raises ``ConfigError``."""
        defaults = FAMILY_DEFAULTS[self.stylizer]
        data = self.model_dump()
        for key, value in defaults.items():
            if key in data and data[key] is None:
                data[key] = value
        for key in ("tv_weight", "identity1_weight", "identity2_weight"):
            if data[key] is None:
                data[key] = 0.0
        if data["resize_to"] is None:
            data["resize_to"] = int(round(self.image_size * defaults["resize_factor"]))
        if data["style_size"] is None:
            data["style_size"] = data["resize_to"]
        if data["resize_to"] < self.image_size:
            raise ConfigError(f"--resize-to ({data['resize_to']}) must be at least --image-size ({self.image_size})")
        if self.stylizer == "johnson" and not self.style:
            raise ConfigError("johnson trains one network per style: give --style IMAGE")
        if self.stylizer != "johnson" and not self.style_manifest:
            raise ConfigError(f"{self.stylizer} trains on many styles: give --style-manifest MANIFEST")
        multiple = {"johnson": 4, "adain": 8, "sanet": 16}[self.stylizer]
        if self.image_size % multiple:
            raise ConfigError(f"{self.stylizer} needs --image-size a multiple of {multiple}, got {self.image_size}")
        return TrainConfig(**data)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


# --- loss scales ----------------------------------------------------------------------------------


def feature_scale(encoder: torch.nn.Module) -> float:
    """How much smaller this encoder's features are than a Caffe-scale (0-255 input) VGG's.

    The encoder folds its input convention into a 1x1 ``input`` conv: Caffe sources multiply by
    255, torchvision ones by 1/std (about 4.4). ReLU features scale about linearly with the input,
    so feature-MSE terms are multiplied by ``scale**2`` and Gram terms by ``scale**4`` to keep the
    default weights meaningful whichever VGG is used.
    """
    gain = float(encoder.input.weight.detach().abs().sum(dim=(1, 2, 3)).mean())
    return 255.0 / gain if gain > 0 else 1.0


# Mean ReLU activation per layer of sources that are not filter-normalised, over 19 scikit-image
# photos resized to 256x256 (tests/test_vgg.py::test_hed_layer_means_match_the_weights re-measures them).
# AdaIN and SANet weights are stated for ``vgg_normalised`` (Gatys et al. 2016), whose filters are
# scaled to a mean activation of 1; raw hed-vgg16 features are 15-20x that at relu1_x and ~1x at relu5_1,
# so without this its shallow layers drown everything else (blob artefacts, content ignored).
LAYER_MEANS: dict[str, dict[str, float]] = {
    "hed-vgg16": {
        "relu1_1": 15.05,
        "relu1_2": 20.30,
        "relu2_1": 13.97,
        "relu2_2": 4.236,
        "relu3_1": 8.208,
        "relu3_2": 7.535,
        "relu3_3": 2.741,
        "relu4_1": 4.877,
        "relu4_2": 2.926,
        "relu4_3": 1.109,
        "relu5_1": 1.130,
    },
}


def layer_gains(encoder: torch.nn.Module, layers: list[str]) -> dict[str, float]:
    """Per-layer factors that bring this encoder's features to ``vgg_normalised`` scale (mean activation 1).

    Known unnormalised sources divide by their measured ``LAYER_MEANS``; any other encoder gets the
    input-scale rule of ``feature_scale`` (exact for ``vgg_normalised`` files, where it is 1).
    """
    means = LAYER_MEANS.get(getattr(encoder, "source", ""), {})
    scale = feature_scale(encoder)
    return {k: 1.0 / means[k] if k in means else scale for k in layers}


# --- checkpoints ----------------------------------------------------------------------------------


def model_key(stylizer: str, step: int) -> str:
    return f"checkpoints/{stylizer}-step{step:08d}.safetensors"


def state_key(step: int) -> str:
    return f"state/step{step:08d}.safetensors"


def samples_key(step: int) -> str:
    return f"samples/step{step:08d}.png"


def losses_key(step: int) -> str:
    return f"losses/step{step:08d}.csv"


def step_of(key: str) -> int | None:
    m = _STEP.search(key)
    return int(m.group(1)) if m else None


def cpu_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def safetensors_bytes(state: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(cpu_state(state), metadata={k: str(v) for k, v in metadata.items()})


def read_safetensors(data: bytes, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors.torch import load

    try:
        state = load(data)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file is one message
        raise WeightsError(f"cannot read {what}: {exc}") from exc
    return state, header_metadata(data[:8] + data[8 : 8 + int.from_bytes(data[:8], "little")])


def header_metadata(head: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file from its first bytes (8-byte length + JSON header)."""
    if len(head) < 8:
        return {}
    n = int.from_bytes(head[:8], "little")
    if len(head) < 8 + n:
        return {}
    try:
        header = json.loads(head[8 : 8 + n])
    except ValueError:
        return {}
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def optimizer_state(optimizer: torch.optim.Optimizer, scaler: Any | None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Flatten an optimizer state dict: tensors as ``opt.<param>.<name>``, the rest as JSON metadata."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"opt.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    if scaler is not None and scaler.is_enabled():
        meta["scaler"] = json.dumps(
            {k: float(v) if isinstance(v, float) else v for k, v in scaler.state_dict().items()}
        )
    return tensors, meta


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, scaler: Any | None, tensors: dict[str, Tensor], meta: dict[str, str]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in json.loads(meta.get("scalars", "{}")).items():
        state.setdefault(int(pid), {}).update(entries)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"the saved optimizer state does not fit this model: {exc}") from exc
    if scaler is not None and scaler.is_enabled() and "scaler" in meta:
        scaler.load_state_dict(json.loads(meta["scaler"]))


@dataclass
class Resumed:
    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    optimizer_meta: dict[str, str]
    metadata: dict[str, str]


class CheckpointStore:
    """Reads and writes one run's checkpoints, samples and loss logs under ``output``."""

    def __init__(self, output: str, stylizer: str) -> None:
        self.storage = Storage(output)
        self.stylizer = stylizer

    def uri(self, key: str) -> str:
        return self.storage.uri(key)

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint (a model file), oldest first."""
        found = []
        for key in self.storage.list("checkpoints/"):
            step = step_of(key)
            name = key.rsplit("/", 1)[-1]
            if step is None:
                continue
            if not name.startswith(f"{self.stylizer}-"):
                other = name.split("-step")[0]
                raise ConfigError(
                    f"{self.storage.uri('checkpoints')} holds {other} checkpoints; "
                    f"use another --output for {self.stylizer}"
                )
            found.append(step)
        return sorted(found)

    def latest(self) -> Resumed | None:
        """The newest complete checkpoint, or None for a fresh run."""
        for step in reversed(self.steps()):
            if not self.storage.exists(state_key(step)):
                continue  # written by hand or half-deleted: fall back to an older one
            model, meta = read_safetensors(self.storage.get(model_key(self.stylizer, step)), f"checkpoint {step}")
            opt, opt_meta = read_safetensors(self.storage.get(state_key(step)), f"optimizer state {step}")
            return Resumed(step, model, opt, opt_meta, meta)
        return None

    def save(
        self,
        step: int,
        *,
        model: dict[str, Tensor],
        metadata: dict[str, str],
        optimizer: tuple[dict[str, Tensor], dict[str, str]],
        loss_rows: list[dict[str, float]],
        grid: bytes | None,
    ) -> str:
        """Write one step's files (model last, see the module docstring); returns the model URI."""
        tensors, opt_meta = optimizer
        self.storage.put(state_key(step), safetensors_bytes(tensors, {"format": FORMAT, "step": str(step), **opt_meta}))
        self.storage.put(losses_key(step), rows_csv(loss_rows))
        if grid is not None:
            self.storage.put(samples_key(step), grid)
        return self.storage.put(model_key(self.stylizer, step), safetensors_bytes(model, metadata))

    def loss_rows(self, up_to: int | None = None) -> list[dict[str, float]]:
        """Every logged step (from the per-checkpoint CSV files), at most ``up_to``."""
        rows: list[dict[str, float]] = []
        for key in self.storage.list("losses/"):
            if not key.endswith(".csv"):
                continue
            for row in csv.DictReader(io.StringIO(self.storage.get(key).decode())):
                parsed = {k: float(v) for k, v in row.items() if v not in ("", None)}
                if up_to is None or parsed["step"] <= up_to:
                    rows.append(parsed)
        rows.sort(key=lambda r: r["step"])
        return rows

    def finish(self, step: int) -> str:
        """Copy the last checkpoint to ``<stylizer>.safetensors`` and write ``losses.csv`` and ``loss_curve.png``."""
        final = self.storage.put(f"{self.stylizer}.safetensors", self.storage.get(model_key(self.stylizer, step)))
        rows = self.loss_rows(step)
        self.storage.put("losses.csv", rows_csv(rows))
        if rows:
            self.storage.put("loss_curve.png", loss_curve_png(rows, title=f"{self.stylizer} training losses"))
        return final


def rows_csv(rows: list[dict[str, float]]) -> bytes:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["step"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in row.items()})
    return buf.getvalue().encode()


def base_metadata(config: TrainConfig, *, step: int, encoder: Any, encoder_arch: str, losses: dict[str, float]) -> dict:
    meta = {
        "format": FORMAT,
        "stylizer": config.stylizer,
        "step": str(step),
        "encoder": str(encoder),
        "encoder_arch": encoder_arch,
        "content_manifest": config.content_manifest,
        "losses": json.dumps({k: round(v, 6) for k, v in losses.items()}, sort_keys=True),
        "config": config.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if config.style:
        meta["style"] = config.style
    if config.style_manifest:
        meta["style_manifest"] = config.style_manifest
    return meta


def trained_encoder(meta: dict[str, str]) -> str | None:
    """The ``--encoder-weights`` a checkpoint was trained with (None when its metadata does not say)."""
    return json.loads(meta.get("config", "{}")).get("encoder_weights")


def check_resume(meta: dict[str, str], config: TrainConfig, where: str) -> None:
    """Refuse to continue a run whose checkpoint was made for another family, style or encoder."""
    problems = []
    for key, want in (
        ("stylizer", config.stylizer),
        ("style", config.style),
        ("style_manifest", config.style_manifest),
    ):
        have = meta.get(key)
        if want and have and have != want:
            problems.append(f"{key} {have!r} vs {want!r}")
    saved = trained_encoder(meta)
    if saved not in (None, config.encoder_weights):
        problems.append(f"encoder_weights {saved!r} vs {config.encoder_weights!r}")
    if problems:
        raise ConfigError(f"{where} was trained with other settings ({'; '.join(problems)}); use another --output")


# --- pictures -------------------------------------------------------------------------------------


def sample_grid(content: Tensor, style: Tensor, output: Tensor, *, gap: int = 4) -> bytes:
    """PNG of one row per sample: content | style | output; all (N,3,S,S) in [0,1] (style may be (1,...))."""
    n, _, h, w = content.shape
    style = style.expand(n, -1, -1, -1) if style.shape[0] == 1 else style
    style = torch.nn.functional.interpolate(style, size=(h, w), mode="bilinear", align_corners=False)
    canvas = np.full((n * h + (n + 1) * gap, 3 * w + 4 * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        for j, images in enumerate((content, style, output)):
            top, left = gap + i * (h + gap), gap + j * (w + gap)
            canvas[top : top + h, left : left + w] = to_array(images[i].clamp(0, 1))
    return encode_image(canvas, "png")


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curve_png(rows: list[dict[str, float]], *, title: str = "training losses", size=(900, 520)) -> bytes:
    """A log-scale line chart of every loss column over steps (moving average), drawn with Pillow."""
    columns = [k for k in rows[0] if k not in ("step", "lr", "seconds")]
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 50)
    series = {c: _smooth([max(r.get(c, math.nan), 1e-12) for r in rows], window) for c in columns}
    values = [v for s in series.values() for v in s if math.isfinite(v) and v > 0]
    lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
    hi = hi if hi > lo else lo + 1
    width, height = size
    left, right, top, bottom = 70, 150, 40, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 12), title, fill="black")
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.rectangle((x0, y0, x1, y1), outline="black")
    s_min, s_max = min(steps), max(steps)
    span = max(s_max - s_min, 1)

    def xy(step: float, value: float) -> tuple[float, float]:
        x = x0 + (step - s_min) / span * (x1 - x0)
        y = y1 - (math.log10(value) - lo) / (hi - lo) * (y1 - y0)
        return x, y

    for decade in range(lo, hi + 1):
        _, y = xy(s_min, 10.0**decade)
        draw.line((x0, y, x1, y), fill=(225, 225, 225))
        draw.text((8, y - 6), f"1e{decade}", fill="black")
    for k in range(5):
        step = s_min + span * k / 4
        x, _ = xy(step, 10.0**lo)
        draw.text((x - 10, y1 + 8), f"{int(step)}", fill="black")
    draw.text(((x0 + x1) // 2 - 12, height - 22), "step", fill="black")
    for i, (name, ys) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [xy(s, v) for s, v in zip(steps, ys, strict=True) if math.isfinite(v) and v > 0]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.line((x1 + 12, y0 + 12 + 18 * i, x1 + 32, y0 + 12 + 18 * i), fill=colour, width=3)
        draw.text((x1 + 38, y0 + 6 + 18 * i), f"{name} {ys[-1]:.3g}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def window_means(values: list[float], k: int) -> tuple[float, float]:
    """(mean of the first k, mean of the last k): how tests and reports judge that a loss fell."""
    if len(values) < 2 * k:
        raise ValueError(f"need at least {2 * k} values to compare windows of {k}, got {len(values)}")
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))


# --- the trainer contract -------------------------------------------------------------------------


class Task:
    """One family's training: what is optimised (``net``), its losses, and what a checkpoint holds.

    ``loop.py`` owns everything else (data, optimiser, precision, DDP, checkpoints). Images are
    ``(B,3,S,S)`` float in [0,1]; ``losses`` returns weighted terms plus ``"total"``, all scalars.
    Subclasses set the class attributes and build ``self.net`` in ``__init__``.
    """

    stylizer: ClassVar[str] = ""
    encoder_last: ClassVar[str] = "relu5_1"
    needs_style_batches: ClassVar[bool] = True

    def __init__(self, config: TrainConfig, encoder: nn.Module) -> None:
        self.config = config
        self.encoder = encoder.eval().requires_grad_(False)
        self.scale = feature_scale(encoder)
        self.amp: Any = nullcontext
        self.net: nn.Module = nn.Identity()

    def autocast(self) -> AbstractContextManager:
        return self.amp()

    def features(self, x: Tensor, layers: list[str]) -> dict[str, Tensor]:
        """Encoder features in float32: the losses (Grams especially) overflow in half precision."""
        with self.autocast():
            out = self.encoder(x, layers)
        return {k: v.float() for k, v in out.items()}

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        raise NotImplementedError

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        return {}

    def sample_style(self) -> Tensor | None:
        """The style shown in the sample grid when it is fixed (johnson); None takes the batch's styles."""
        return None
