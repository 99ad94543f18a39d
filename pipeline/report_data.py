"""What the report reads and computes: a job's metrics rows and ``_SUCCESS`` (its output contract only,
``pipeline.layout``), then percentiles, failure and note kinds, the seeded sample and the worst rows.
No torch, no HTML."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import layout

TIMING_COLUMNS = ("seconds_decode", "seconds_stylize", "seconds_encode")  # and any other seconds_* column found
QUALITY_COLUMNS = ("style_distance", "content_distance", "colour_distance")
WORST_FALLBACKS = ("content_distance", "style_distance", "colour_distance", "seconds_stylize")


def load(storage: Any) -> tuple[pa.Table, dict[str, Any]]:
    """All metrics rows (shards concatenated, unsorted) and the ``_SUCCESS`` summary ({} if unfinished)."""
    keys = [k for k in storage.list(layout.METRICS_PREFIX + "/") if layout.SHARD_FILE.search(k)]
    tables = [pq.read_table(io.BytesIO(storage.get(k))) for k in keys]
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    for name, typ in _EXPECTED.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, typ))
    summary = json.loads(storage.get(layout.SUCCESS_KEY)) if storage.exists(layout.SUCCESS_KEY) else {}
    return table, summary


_EXPECTED: dict[str, pa.DataType] = {
    **{
        c: pa.string()
        for c in (
            "image_id",
            "source_uri",
            "status",
            "error",
            "error_kind",
            "failed_stage",
            "output_uri",
            "stylizer",
            "style",
            "note",
            "media_type",
        )
    },
    **{c: pa.int64() for c in ("shard", "row", "width", "height", "out_width", "out_height")},
    **{c: pa.float64() for c in (*TIMING_COLUMNS, *QUALITY_COLUMNS, "finished_at")},
}


def timing_columns(table: pa.Table) -> list[str]:
    """The known stage timings first, then any other ``seconds_*`` column the runner has added."""
    extra = sorted(c for c in table.column_names if c.startswith("seconds_") and c not in TIMING_COLUMNS)
    return [*TIMING_COLUMNS, *extra]


def floats(table: pa.Table, column: str, *, keep_nan: bool = False) -> np.ndarray:
    """The column's finite values as float64 (nulls dropped, or NaN with ``keep_nan``)."""
    values = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    return values if keep_nan else values[np.isfinite(values)]


def percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "n": float(len(values)),
        "mean": float(values.mean()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": float(values.max()),
    }


_URI = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"]*[^\s'\",;:.)]")
_PATH = re.compile(r"(?<![\w<>])(?:~|\.{1,2})?/[^\s'\",;:()]+")
_QUOTED = re.compile(r"'[^']{17,}'|\"[^\"]{17,}\"")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def message_kind(message: str | None) -> str:
    """A message with its particulars (URIs, paths, long quotes, hex, numbers) stripped: its kind. For notes,
    which have no class; failures are grouped by their recorded ``error_kind`` (``count_failures``)."""
    text = message or "(no reason given)"
    text = _URI.sub("<uri>", text)
    text = _PATH.sub("<path>", text)
    text = _QUOTED.sub("'…'", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("N", text)
    text = " ".join(text.split())
    return text[:160] + ("…" if len(text) > 160 else "")


@dataclass
class Kind:
    kind: str
    count: int
    example_id: str
    example: str


def count_failures(rows: pa.Table) -> list[Kind]:
    """Failed rows grouped by their recorded ``error_kind`` and ``failed_stage`` ("kind in stage"), most
    frequent first, with the first example of each. Rows written before kinds were recorded group as
    "not recorded"."""
    kinds, stages = rows.column("error_kind").to_pylist(), rows.column("failed_stage").to_pylist()
    labels = [f"{k} in {s}" if k and s else k or "not recorded" for k, s in zip(kinds, stages, strict=True)]
    return _tally(labels, rows.column("image_id").to_pylist(), rows.column("error").to_pylist())


def count_notes(rows: pa.Table) -> list[Kind]:
    """Rows grouped by the ``message_kind`` of their note, most frequent first, with the first example of each."""
    notes = rows.column("note").to_pylist()
    cache: dict[str | None, str] = {}
    labels = [cache[n] if n in cache else cache.setdefault(n, message_kind(n)) for n in notes]
    return _tally(labels, rows.column("image_id").to_pylist(), notes)


def _tally(labels: list[str], ids: list[str | None], messages: list[str | None]) -> list[Kind]:
    """Rows counted by label, most frequent first, each with its first row's id and message as the example."""
    kinds: dict[str, Kind] = {}
    for label, image_id, message in zip(labels, ids, messages, strict=True):
        entry = kinds.get(label)
        if entry is None:
            kinds[label] = Kind(label, 1, image_id or "", message or "")
        else:
            entry.count += 1
    return sorted(kinds.values(), key=lambda k: (-k.count, k.kind))


def sample_rows(ok: pa.Table, n: int, seed: int) -> list[int]:
    """Indices into ``ok`` of a seeded random sample of ``n`` rows; the same seed gives the same manifest rows."""
    if not ok.num_rows or n <= 0:
        return []
    order = np.argsort(ok.column("row").to_numpy(zero_copy_only=False), kind="stable")  # shard order must not matter
    picked = np.random.default_rng(seed).choice(len(order), size=min(n, len(order)), replace=False)
    return [int(i) for i in order[np.sort(picked)]]


def worst_rows(ok: pa.Table, n: int, by: str | None) -> tuple[str | None, list[int]]:
    """``(column, indices)``: the ``n`` ok rows with the highest ``by`` (else the first fallback column with values)."""
    for column in [by, *WORST_FALLBACKS] if by else WORST_FALLBACKS:
        if column not in ok.column_names or n <= 0:
            continue
        values = floats(ok, column, keep_nan=True)
        values = np.where(np.isfinite(values), values, -np.inf)
        if np.isfinite(values).any():
            top = np.argsort(-values, kind="stable")[: min(n, int(np.isfinite(values).sum()))]
            return column, [int(i) for i in top]
    return None, []
