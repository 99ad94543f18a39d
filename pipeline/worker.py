"""Per-batch work, without Ray: decode -> stylize -> encode -> write -> metric rows.

A batch is a list of row dicts. Every stage returns one row per input row and never raises for
a bad input: the row gets ``status="failed"`` and a one-line ``error`` and later stages pass it
through. Between stages a row carries its pixels as raw bytes (``pixels``, ``ph``, ``pw``)
so it travels through Arrow/Ray without tensor extension types.

Crash safety: decoding and stylizing run under a ``Ledger`` that writes a marker before the
work and deletes it after. If the process dies (segfault, OOM kill) the marker survives; the
retried batch then goes one image at a time with per-image markers, and an image whose marker
shows ``max_retries`` earlier crashes is marked failed instead of being tried again.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.codec import decode_image, encode_image, to_array, to_tensor
from pipeline.errors import InputError, StylizeError
from pipeline.metrics import QualityScorer
from pipeline.models.base import Style, resolve_device
from pipeline.models.controls import stylize

Row = dict[str, Any]
PLUGINS_ENV = "STYLIZE_PLUGINS"
EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}


def _cfg(config: Any, name: str, default: Any = None) -> Any:
    value = getattr(config, name, default)
    return default if value is None else value


def fail(row: Row, error: str) -> Row:
    out = dict(row)
    out["status"] = "failed"
    out["error"] = " ".join(str(error).split())[:500] or "failed"
    out["pixels"] = b""
    return out


def describe(exc: BaseException) -> str:
    if isinstance(exc, StylizeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def read_input(uri: str, config: Any) -> bytes:
    """Bytes of a manifest or style URI, through the job's scheme allow-list and storage options."""
    from pipeline.storage import read_source

    return read_source(uri, _allowed(config), _cfg(config, "storage_options") or None)


def _allowed(config: Any) -> Sequence[str]:
    from pipeline.storage import ALLOWED_SCHEMES

    return _cfg(config, "allowed_schemes") or sorted(ALLOWED_SCHEMES)


def output_key(image_id: str, fmt: str) -> str:
    """``images/<safe id>.<ext>``: derived from the image id only, so reruns overwrite, never duplicate."""
    from pipeline.storage import safe_key

    ext = EXTENSIONS.get(str(fmt).lower(), str(fmt).lower())
    return safe_key("images", f"{image_id}.{ext}")


# --- style assignment -----------------------------------------------------------------------------


def read_style_list(path: str, config: Any) -> list[str]:
    """A style manifest: a Parquet manifest (its ``uri`` column) or a text file with one spec per line."""
    if str(path).endswith(".parquet"):
        from pipeline.manifest import read_manifest

        table = read_manifest(path, _cfg(config, "storage_options") or None)
        return [str(u) for u in table.column("uri").to_pylist()]
    text = read_input(path, config).decode()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def assign_styles(image_ids: Sequence[str], config: Any, column: Sequence[Any] | None = None) -> list[str]:
    """The style spec of each row: per-row ``column`` values, else sampled from ``style_manifest``
    (seeded per image id, so it does not depend on sharding or reruns), else ``config.style``."""
    from pipeline.errors import ConfigError

    default = _cfg(config, "style", "")
    if column is not None:
        return [str(v) if v not in (None, "") else str(default) for v in column]
    if _cfg(config, "style_manifest"):
        pool = read_style_list(config.style_manifest, config)
        if not pool:
            raise ConfigError(f"style manifest {config.style_manifest} lists no styles")
        seed = _cfg(config, "style_seed", _cfg(config, "seed", 0))
        out = []
        for image_id in image_ids:
            digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
            out.append(pool[random.Random(digest).randrange(len(pool))])
        return out
    if not default:
        raise ConfigError("no style: set style, style_column or style_manifest")
    return [str(default)] * len(image_ids)


# --- crash ledger ---------------------------------------------------------------------------------


class Ledger:
    """Attempt markers in storage under ``_attempts/`` (they outlive a crashed process)."""

    def __init__(self, storage: Any, prefix: str = "_attempts") -> None:
        self.storage = storage
        self.prefix = prefix

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def attempts(self, name: str) -> int:
        key = self._key(name)
        if not self.storage.exists(key):
            return 0
        try:
            return int(self.storage.get(key).decode() or 0)
        except (ValueError, StylizeError):
            return 1

    def mark(self, name: str, attempts: int) -> None:
        self.storage.put(self._key(name), str(attempts).encode())

    def clear(self, name: str) -> None:
        key = self._key(name)
        if self.storage.exists(key):
            self.storage.delete(key)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def guarded(
    ledger: Ledger | None,
    stage: str,
    rows: list[Row],
    run_batch: Callable[[list[Row]], list[Row]],
    max_retries: int,
) -> list[Row]:
    """Run ``run_batch`` on the rows, bounding how often one row may crash the process."""
    if ledger is None or not rows:
        return run_batch(rows)
    batch_name = f"{stage}-batch-{_digest('|'.join(str(r.get('image_id')) for r in rows))}"
    prior = ledger.attempts(batch_name)
    ledger.mark(batch_name, prior + 1)
    if prior == 0:
        out = run_batch(rows)
        ledger.clear(batch_name)
        return out
    # an earlier attempt at this batch died: find the culprit one image at a time
    out, names = [], []
    for row in rows:
        name = f"{stage}-image-{_digest(str(row.get('image_id')))}"
        names.append(name)
        crashes = ledger.attempts(name)
        if crashes >= max_retries:
            out.append(
                fail(row, f"crashed the worker {crashes} times during {stage}; gave up (max_retries={max_retries})")
            )
            continue
        ledger.mark(name, crashes + 1)
        out.extend(run_batch([row]))
        ledger.clear(name)  # it did not crash; a given-up row keeps its marker until the batch is done
    for name in names:
        ledger.clear(name)
    ledger.clear(batch_name)
    return out


# --- stages ---------------------------------------------------------------------------------------


def start_row(row: Row, config: Any) -> Row:
    """The metric fields every row has from the start."""
    return {
        "image_id": str(row.get("image_id", "")),
        "source_uri": str(row.get("uri", row.get("source_uri", ""))),
        "shard": int(row.get("shard", 0)),
        "row": int(row.get("row", 0)),
        "style": str(row.get("style", "")),
        "stylizer": str(_cfg(config, "stylizer", "")),
        "status": "ok",
        "error": "",
        "output_uri": "",
        "note": "",
        "width": -1,
        "height": -1,
        "out_width": -1,
        "out_height": -1,
        "seconds_decode": float("nan"),
        "seconds_stylize": float("nan"),
        "seconds_encode": float("nan"),
        "style_distance": float("nan"),
        "content_distance": float("nan"),
        "colour_distance": float("nan"),
        "pixels": b"",
        "ph": 0,
        "pw": 0,
    }


def _resize_max_side(array: np.ndarray, max_side: int | None) -> np.ndarray:
    if not max_side or max(array.shape[:2]) <= max_side:
        return array
    from PIL import Image

    h, w = array.shape[:2]
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def decode_one(row: Row, config: Any) -> Row:
    from pipeline.manifest import row_problem

    out = start_row(row, config)
    start = time.perf_counter()
    try:
        problem = row_problem(out["image_id"], out["source_uri"], _allowed(config))
        if problem:
            raise InputError(problem)
        data = read_input(out["source_uri"], config)
        decoded = decode_image(data)
        array = _resize_max_side(decoded.array, _cfg(config, "max_side"))
    except Exception as exc:  # noqa: BLE001 - a bad input is a failed row, never a failed job
        out["seconds_decode"] = time.perf_counter() - start
        return fail(out, describe(exc))
    out["seconds_decode"] = time.perf_counter() - start
    array = np.ascontiguousarray(array, dtype=np.uint8)
    out.update(
        width=decoded.width,
        height=decoded.height,
        note=str(getattr(decoded, "note", "") or ""),
        pixels=array.tobytes(),
        ph=int(array.shape[0]),
        pw=int(array.shape[1]),
    )
    return out


def decode_rows(rows: list[Row], config: Any, ledger: Ledger | None = None) -> list[Row]:
    """Manifest rows (image_id, uri, shard, row, style) -> rows with decoded pixels or a failure."""
    retries = int(_cfg(config, "max_retries", 2))
    return guarded(ledger, "decode", rows, lambda rs: [decode_one(r, config) for r in rs], retries)


def pixels_of(row: Row) -> np.ndarray:
    return np.frombuffer(row["pixels"], dtype=np.uint8).reshape(int(row["ph"]), int(row["pw"]), 3)


def encode_rows(rows: list[Row], config: Any, storage: Any) -> list[Row]:
    """Encode and write each ok row under its deterministic key; drops the pixels."""
    fmt = str(_cfg(config, "format", "jpeg"))
    quality = int(_cfg(config, "quality", 92))
    out = []
    for row in rows:
        row = dict(row)
        if row["status"] == "ok":
            start = time.perf_counter()
            try:
                data = encode_image(pixels_of(row), fmt, quality)
                row["output_uri"] = storage.put(output_key(row["image_id"], fmt), data)
            except Exception as exc:  # noqa: BLE001
                row = fail(row, describe(exc))
            row["seconds_encode"] = time.perf_counter() - start
        row["pixels"] = b""
        row["finished_at"] = time.time()
        out.append(row)
    return out


# --- the stylizing step ---------------------------------------------------------------------------


def import_plugins() -> None:
    """Import the modules named in ``$STYLIZE_PLUGINS`` (comma-separated) so their stylizers register."""
    for name in filter(None, (p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


class Stylist:
    """One loaded stylizer (and VGG for quality metrics) that stylizes batches of decoded rows.

    Rows of the same size and style are stacked into one ``(B,3,H,W)`` tensor of at most
    ``batch_size``; a stack that raises is retried one image at a time so only the culprit fails.
    """

    def __init__(self, config: Any, *, threads: int | None = None) -> None:
        import pipeline.models as models

        if threads:
            torch.set_num_threads(int(threads))
        import_plugins()
        self.config = config
        self.device = resolve_device(_cfg(config, "device", "auto"))
        kwargs: dict[str, Any] = {"device": self.device}
        if _cfg(config, "weights"):
            kwargs["weights"] = config.weights
        if _cfg(config, "encoder_weights"):
            kwargs["encoder_weights"] = config.encoder_weights
        self.model = models.create(config.stylizer, **kwargs)
        self.scorer = (
            QualityScorer.load(_cfg(config, "encoder_weights"), device=self.device) if _cfg(config, "metrics") else None
        )
        self.batch_size = max(1, int(_cfg(config, "batch_size", 4)))
        self._styles: dict[str, list[Style]] = {}

    def styles(self, spec: str) -> list[Style]:
        """Parse (and for image styles, read through the allowed schemes) a spec once per process."""
        if spec not in self._styles:
            from pipeline.styles import parse_style_spec

            styles = []
            for s in parse_style_spec(spec, load_images=False):
                if s.index is None and s.label and self.model.style_kind == "image":
                    data = read_input(s.label, self.config)
                    image = to_tensor(decode_image(data).array)
                    s = Style(image=image, weight=s.weight, label=s.label)
                styles.append(s)
            self._styles[spec] = styles
        return self._styles[spec]

    @torch.inference_mode()
    def _run(self, content: torch.Tensor, styles: list[Style]) -> torch.Tensor:
        alpha = float(_cfg(self.config, "alpha", 1.0))
        content = content.to(self.device)
        return stylize(
            self.model, content, styles, alpha=alpha, preserve_color=_cfg(self.config, "preserve_color", "none")
        )

    def _stack(self, rows: list[Row], spec: str) -> list[Row]:
        start = time.perf_counter()
        styles = self.styles(spec)
        content = torch.cat([to_tensor(pixels_of(r).copy()) for r in rows])
        result = self._run(content, styles).float().cpu()
        per_image = (time.perf_counter() - start) / len(rows)
        out = []
        for i, row in enumerate(rows):
            row = dict(row)
            array = np.ascontiguousarray(to_array(result[i]))
            if self.scorer is not None:
                row.update(self.scorer.score(result[i : i + 1], content[i : i + 1], spec, styles))
            row.update(
                pixels=array.tobytes(),
                ph=int(array.shape[0]),
                pw=int(array.shape[1]),
                out_height=int(array.shape[0]),
                out_width=int(array.shape[1]),
                seconds_stylize=per_image,
            )
            out.append(row)
        return out

    def _group(self, rows: list[Row], spec: str) -> list[Row]:
        try:
            return self._stack(rows, spec)
        except Exception as exc:  # noqa: BLE001
            if len(rows) == 1:
                return [fail(rows[0], describe(exc))]
            return [r for row in rows for r in self._group([row], spec)]

    def stylize_rows(self, rows: list[Row]) -> list[Row]:
        """Decoded rows -> rows whose pixels are the stylized output (failed rows pass through)."""
        results: dict[int, Row] = {}
        groups: dict[tuple[int, int, str], list[int]] = {}
        for i, row in enumerate(rows):
            if row["status"] != "ok":
                results[i] = row
            else:
                groups.setdefault((int(row["ph"]), int(row["pw"]), str(row["style"])), []).append(i)
        for (_, _, spec), idx in groups.items():
            for j in range(0, len(idx), self.batch_size):
                chunk = idx[j : j + self.batch_size]
                for i, row in zip(chunk, self._group([rows[i] for i in chunk], spec), strict=True):
                    results[i] = row
        return [results[i] for i in range(len(rows))]

    def __call__(self, rows: list[Row], ledger: Ledger | None = None) -> list[Row]:
        retries = int(_cfg(self.config, "max_retries", 2))
        return guarded(ledger, "stylize", rows, self.stylize_rows, retries)


def process_rows(rows: list[Row], stylist: Stylist, storage: Any, ledger: Ledger | None = None) -> list[Row]:
    """The whole per-batch pipeline in one process (tests, and the runner's building blocks)."""
    config = stylist.config
    return encode_rows(stylist(decode_rows(rows, config, ledger), ledger), config, storage)


def metric_rows(rows: list[Row]) -> list[Row]:
    """Strip the in-flight fields."""
    return [{k: v for k, v in r.items() if k not in ("pixels", "ph", "pw")} for r in rows]


__all__ = [
    "Ledger",
    "Stylist",
    "assign_styles",
    "decode_rows",
    "encode_rows",
    "metric_rows",
    "output_key",
    "process_rows",
]
