"""The driver's side of a batch job, without Ray: which shards exist, which are done, which are pending.

Planning reads the manifest's Parquet footer, the job's ``_plan.json`` and one listing of
``metrics/``; it never builds per-row Python objects. A shard is a fixed run of ``shard_rows``
manifest rows, recorded in ``_plan.json`` with the manifest's fingerprint, so a rerun cuts the
same shards and a different manifest is refused.

The fingerprint (sha256 over every ``image_id`` and ``uri``) and the duplicate-id check are
written into the manifest's own metadata by ``stylize manifest build``; for a manifest made
elsewhere they are computed here, streaming two columns in batches.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import layout
from pipeline.errors import JobError, ManifestError, StorageError
from pipeline.storage import Storage, open_fs

DEFAULT_SHARD_ROWS = 256
FINGERPRINT_KEY = b"stylize.fingerprint"
UNIQUE_IDS_KEY = b"stylize.unique_ids"  # "true" when manifest build checked that no image_id repeats
_SHARD_FILE = re.compile(r"shard-(\d+)\.parquet$")
_BATCH_ROWS = 65_536


class Fingerprint:
    """sha256 over the (image_id, uri) rows, independent of how the rows are chunked."""

    def __init__(self) -> None:
        self._data = hashlib.sha256()
        self._lengths = hashlib.sha256()

    def update(self, ids: pa.Array | pa.ChunkedArray, uris: pa.Array | pa.ChunkedArray) -> None:
        joined = pc.binary_join_element_wise(pc.cast(ids, pa.string()), pc.cast(uris, pa.string()), "\x00")
        chunks = joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined]
        for chunk in chunks:
            if chunk.null_count:
                chunk = pc.fill_null(chunk, "")
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
            self._lengths.update(np.diff(offsets).astype("<i8").tobytes())
            self._data.update(memoryview(chunk.buffers()[2])[offsets[0] : offsets[-1]])

    def hexdigest(self) -> str:
        return hashlib.sha256(self._data.digest() + self._lengths.digest()).hexdigest()


def manifest_metadata(table_fingerprint: str, unique_ids: bool) -> dict[bytes, bytes]:
    """What ``manifest build`` stores in the Parquet footer so planning reads no rows."""
    return {FINGERPRINT_KEY: table_fingerprint.encode(), UNIQUE_IDS_KEY: b"true" if unique_ids else b"false"}


@dataclass
class ManifestInfo:
    """What planning knows of a manifest: its row count, row groups, fingerprint."""

    path: str
    rows: int
    columns: list[str]
    fingerprint: str
    row_group_rows: list[int] = field(default_factory=list)


def open_manifest(path: str, storage_options: dict[str, Any] | None = None) -> pq.ParquetFile:
    fs, fpath = open_fs(path, storage_options)
    try:
        return pq.ParquetFile(fs.open(fpath, "rb"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None


def _check_columns(path: str, schema: pa.Schema) -> None:
    problems = []
    for name in ("image_id", "uri"):
        if name not in schema.names:
            problems.append(f"missing column {name!r}")
            continue
        typ = schema.field(name).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            problems.append(f"column {name!r} must hold strings, got {typ}")
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems) + f" (columns: {schema.names})")


def iter_columns(pf: pq.ParquetFile, columns: list[str], batch_rows: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    yield from pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True)


def _duplicates(pf: pq.ParquetFile, path: str) -> None:
    ids = pf.read(columns=["image_id"], use_threads=True).column("image_id")
    if pc.count_distinct(ids, mode="all").as_py() == pf.metadata.num_rows:
        return
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    shown = [
        f"{v!r} ({n} rows)"
        for v, n in zip(repeated.field("values")[:3].to_pylist(), repeated.field("counts")[:3].to_pylist(), strict=True)
    ]
    more = f" (+{len(repeated) - 3} more duplicate ids)" if len(repeated) > 3 else ""
    raise ManifestError(f"{path}: duplicate image_id " + "; ".join(shown) + more)


def inspect_manifest(path: str, storage_options: dict[str, Any] | None = None) -> ManifestInfo:
    """Read the footer; compute the fingerprint and duplicate check only when the footer lacks them."""
    pf = open_manifest(path, storage_options)
    schema = pf.schema_arrow
    _check_columns(path, schema)
    meta = pf.metadata.metadata or {}
    fingerprint = meta.get(FINGERPRINT_KEY, b"").decode()
    if meta.get(UNIQUE_IDS_KEY) != b"true":
        _duplicates(pf, path)
    if not fingerprint:
        fp = Fingerprint()
        for batch in iter_columns(pf, ["image_id", "uri"]):
            fp.update(batch.column(0), batch.column(1))
        fingerprint = fp.hexdigest()
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    return ManifestInfo(path, pf.metadata.num_rows, list(schema.names), fingerprint, groups)


@dataclass
class Plan:
    """Shards of one job over one manifest, and which of them have committed."""

    rows: int
    shard_rows: int
    fingerprint: str
    done: set[int]

    @property
    def shards(self) -> int:
        return (self.rows + self.shard_rows - 1) // self.shard_rows

    def shard_range(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_rows
        return start, min(self.shard_rows, self.rows - start)

    @property
    def pending(self) -> list[int]:
        return [s for s in range(self.shards) if s not in self.done]

    def pending_rows(self) -> int:
        return sum(self.shard_range(s)[1] for s in self.pending)

    def as_json(self) -> dict[str, Any]:
        return {
            "manifest_sha256": self.fingerprint,
            "rows": self.rows,
            "shard_rows": self.shard_rows,
            "shards": self.shards,
        }


def committed_shards(storage: Storage) -> set[int]:
    done = set()
    for key in storage.list(layout.METRICS_PREFIX + "/"):
        m = _SHARD_FILE.search(str(key))
        if m:
            done.add(int(m.group(1)))
    return done


def make_plan(storage: Storage, info: ManifestInfo, shard_rows: int | None = None, *, write: bool = True) -> Plan:
    """This output's plan: reused on rerun (refused if the manifest changed), else cut and recorded."""
    try:
        recorded = json.loads(storage.get(layout.PLAN_KEY)) if storage.exists(layout.PLAN_KEY) else None
    except (StorageError, ValueError) as exc:
        raise JobError(f"{storage.uri(layout.PLAN_KEY)} is unreadable ({exc}); delete it to start over") from None
    if recorded is not None:
        if recorded.get("manifest_sha256") != info.fingerprint or int(recorded.get("rows", -1)) != info.rows:
            raise JobError(
                f"{storage.uri(layout.PLAN_KEY)} belongs to a run over a different manifest "
                f"({recorded.get('rows')} rows); use a new output or delete the old one"
            )
        plan = Plan(info.rows, int(recorded["shard_rows"]), info.fingerprint, set())
    else:
        rows = max(1, int(shard_rows or DEFAULT_SHARD_ROWS))
        plan = Plan(info.rows, rows, info.fingerprint, set())
        if write:
            storage.put(layout.PLAN_KEY, json.dumps(plan.as_json(), indent=2).encode())
    plan.done = {s for s in committed_shards(storage) if s < plan.shards}
    return plan
