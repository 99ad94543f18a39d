"""The driver's side of a batch job, without Ray: which shards exist, which are done, which are pending.

Planning reads the manifest's Parquet footer, the job's ``_plan.json`` and one listing of
``metrics/``; it never builds per-row Python objects. A shard is a fixed run of ``shard_rows``
manifest rows, recorded in ``_plan.json`` with the manifest's fingerprint, so a rerun cuts the
same shards and a different manifest is refused.

The fingerprint (sha256 over every ``image_id`` and ``uri``) and the duplicate-id check are
written into the manifest's footer by ``stylize manifest build`` (``pipeline.manifest``); for a
manifest made elsewhere they are computed here, streaming two columns in batches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import layout, segments
from pipeline.errors import JobError, ManifestError, StorageError
from pipeline.manifest import (
    FINGERPRINT_KEY,
    UNIQUE_IDS_KEY,
    VIDEOS_KEY,
    Fingerprint,
    duplicate_ids,
    open_manifest,
    validate,
)
from pipeline.segments import Segment, cut
from pipeline.storage import Storage

DEFAULT_SHARD_ROWS = 256
_SHARD_FILE = re.compile(r"shard-(\d+)\.parquet$")
_BATCH_ROWS = 65_536


@dataclass
class ManifestInfo:
    """What planning knows of a manifest: its row count, row groups, fingerprint."""

    path: str
    rows: int
    columns: list[str]
    fingerprint: str
    videos: list[tuple[int, int]] = field(default_factory=list)  # (row, frames) from the footer


def _check_duplicates(pf: pq.ParquetFile, path: str) -> None:
    """No image_id repeats (outputs are keyed by it); the fast path counts distinct values only."""
    ids = pf.read(columns=["image_id"], use_threads=True)
    if pc.count_distinct(ids.column("image_id"), mode="all").as_py() == pf.metadata.num_rows:
        return
    dupes = duplicate_ids(ids)
    shown = [f"{k!r} ({n} rows)" for k, n in sorted(dupes.items())[:3]]
    more = f" (+{len(dupes) - 3} more duplicate ids)" if len(dupes) > 3 else ""
    raise ManifestError(f"{path}: duplicate image_id " + "; ".join(shown) + more)


def inspect_manifest(path: str, storage_options: dict[str, Any] | None = None) -> ManifestInfo:
    """Read the footer; compute the fingerprint and duplicate check only when the footer lacks them."""
    pf = open_manifest(path, storage_options)
    schema = pf.schema_arrow
    problems = validate(schema.empty_table())  # the column checks alone: a bad row only fails that row
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems) + f" (columns: {schema.names})")
    meta = pf.metadata.metadata or {}
    fingerprint = meta.get(FINGERPRINT_KEY, b"").decode()
    if meta.get(UNIQUE_IDS_KEY) != b"true":
        _check_duplicates(pf, path)
    if not fingerprint:
        fp = Fingerprint()
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=["image_id", "uri"], use_threads=True):
            fp.update(batch.column(0), batch.column(1))
        fingerprint = fp.hexdigest()
    try:
        videos = [(int(r), int(n)) for r, n in json.loads(meta.get(VIDEOS_KEY, b"[]"))]
    except (ValueError, TypeError):  # a footer written elsewhere: its videos are done whole
        videos = []
    return ManifestInfo(path, pf.metadata.num_rows, list(schema.names), fingerprint, videos)


@dataclass
class Plan:
    """Shards of one job over one manifest, and which of them have committed."""

    rows: int
    shard_rows: int
    fingerprint: str
    done: set[int]
    segment_frames: int = 0  # videos longer than this are cut (pipeline.segments); 0: never
    videos: list[tuple[int, int]] = field(default_factory=list)
    segments_done: set[tuple[int, int]] = field(default_factory=set)

    @property
    def pending_segments(self) -> list[Segment]:
        """Segments of long videos in shards not yet committed, without a commit marker."""
        out = []
        for row, frames in self.videos:
            if row < self.rows and row // self.shard_rows not in self.done:
                out += [s for s in cut(row, frames, self.segment_frames) if (row, s.index) not in self.segments_done]
        return out

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
            "segment_frames": self.segment_frames,
        }


def committed_shards(storage: Storage) -> set[int]:
    done = set()
    for key in storage.list(layout.METRICS_PREFIX + "/"):
        m = _SHARD_FILE.search(str(key))
        if m:
            done.add(int(m.group(1)))
    return done


def make_plan(
    storage: Storage,
    info: ManifestInfo,
    shard_rows: int | None = None,
    *,
    write: bool = True,
    segment_frames: int = 0,
) -> Plan:
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
        seg = int(recorded.get("segment_frames", 0))  # fixed once a run starts, like shard_rows
        plan = Plan(info.rows, int(recorded["shard_rows"]), info.fingerprint, set(), seg, info.videos)
    else:
        rows = max(1, int(shard_rows or DEFAULT_SHARD_ROWS))
        plan = Plan(info.rows, rows, info.fingerprint, set(), int(segment_frames or 0), info.videos)
        if write:
            storage.put(layout.PLAN_KEY, json.dumps(plan.as_json(), indent=2).encode())
    plan.done = {s for s in committed_shards(storage) if s < plan.shards}
    if plan.segment_frames and plan.videos:
        plan.segments_done = segments.committed(segments.listing(storage))
    return plan
