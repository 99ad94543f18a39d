"""A run's files in object storage: checkpoints, optimizer state, loss logs, and resuming from them.

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
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pipeline.errors import ConfigError, WeightsError
from pipeline.models.weights import read_header
from pipeline.storage import Storage, open_fs
from pipeline.train.config import TrainConfig
from pipeline.train.plots import loss_curve_png

FORMAT = "stylize-train-1"
_STEP = re.compile(r"step(\d+)\.safetensors$")


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
    return state, read_header(io.BytesIO(data)) or {}


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

    def latest_metadata(self) -> dict[str, str] | None:
        """The header metadata of the newest complete checkpoint (reads no tensors), or None for a fresh run."""
        for step in reversed(self.steps()):
            if self.storage.exists(state_key(step)):
                fs, path = open_fs(self.uri(model_key(self.stylizer, step)))
                with fs.open(path, "rb") as f:
                    return read_header(f) or {}
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
