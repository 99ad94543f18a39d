"""The driver's side of a batch job, without Ray: which shards exist, which are done, which are pending.

Planning reads the manifest's Parquet footer, the job's ``_plan.json`` and one listing of
``metrics/``; it never builds per-row Python objects. A shard is a fixed run of ``shard_rows``
manifest rows, recorded in ``_plan.json`` with the manifest's fingerprint, so a rerun cuts the
same shards.

A rerun over a changed manifest (new, replaced or deleted photos) starts a new *generation*
(``pipeline.generations``): new shards over the new manifest, each of which keeps the earlier
generation's results for its rows whose source did not change (``pipeline.incremental``). A rerun
whose pixel settings differ from the recorded ones is refused unless ``rerun=all``.

The fingerprint (sha256 over every ``image_id`` and ``uri``), the sources' digest (over every
``image_id`` and source tag) and the duplicate-id check are written into the manifest's footer by
``stylize manifest build``; for a manifest made elsewhere they are computed here in one streamed
pass over Arrow batches (numpy over the buffers, 64-bit hashes sorted for the duplicate check), so
planning memory is a few bytes a row whatever the manifest's size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import generations, layout, segments
from pipeline.errors import JobError, ManifestError, StorageError
from pipeline.manifest.footer import FooterDigest
from pipeline.manifest.hashing import has_tags, hash64
from pipeline.manifest.read import duplicate_ids, open_manifest, validate
from pipeline.manifest.schema import FINGERPRINT_KEY, SOURCES_KEY, TAG_COLUMNS, UNIQUE_IDS_KEY, VIDEOS_KEY
from pipeline.segments import Segment, cut
from pipeline.storage import Storage

DEFAULT_SHARD_ROWS = 256
_BATCH_ROWS = 65_536


@dataclass
class ManifestInfo:
    """What planning knows of a manifest: its row count, columns, fingerprint and sources' digest."""

    path: str
    rows: int
    columns: list[str]
    fingerprint: str
    videos: list[tuple[int, int]] = field(default_factory=list)  # (row, frames) from the footer
    sources: str = ""  # "" when the manifest has no etag/size/mtime column


def _duplicates(pf: pq.ParquetFile, path: str, hashes: np.ndarray) -> None:
    """No image_id repeats (outputs are keyed by it): equal 64-bit hashes are candidates, confirmed on
    the strings of those rows only (a second pass), so a clean manifest costs one sort."""
    hashes.sort()
    candidates = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if not len(candidates):
        return
    suspects = []
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=["image_id"], use_threads=True):
        ids = batch.column(0)
        suspects.append(ids.filter(pa.array(np.isin(hash64(ids), candidates))))
    dupes = duplicate_ids(pa.table({"image_id": pa.chunked_array(suspects, pa.string())}))
    if not dupes:
        return
    shown = [f"{k!r} ({n} rows)" for k, n in sorted(dupes.items())[:3]]
    more = f" (+{len(dupes) - 3} more duplicate ids)" if len(dupes) > 3 else ""
    raise ManifestError(f"{path}: duplicate image_id " + "; ".join(shown) + more)


def _stems(ids: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Image ids without their source extension (``layout.output_stem``, in Arrow)."""
    return pc.replace_substring_regex(ids, layout.SOURCE_EXTENSION, layout.STEM_REPLACEMENT)


def _names(batch: pa.RecordBatch, kept: np.ndarray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(stems, output names without the encoding's extension, their 64-bit hashes) of a batch of ids: the
    name is the stem, or the whole id where the stem is one of ``kept`` (sorted stem hashes)."""
    ids = batch.column(0)
    stems = _stems(ids)
    stem_hashes = hash64(stems)
    if not len(kept):
        return stems, stems, stem_hashes
    keep = np.isin(stem_hashes, kept)
    return stems, pc.if_else(pa.array(keep), ids, stems), np.where(keep, hash64(ids), stem_hashes)


def colliding_stems(path: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The stems whose ids must keep the source's extension under ``images/`` (``layout.output_key``) so
    that no two outputs share a name: those two ids share (``a.jpg``, ``a.png`` -> ``a``), then, until no
    name repeats, those whose stem is the whole name of a kept id (``a.jpg.jpg`` beside them). Each round
    is one streamed pass of 64-bit hashes of the names, sorted, and equal hashes confirmed on the strings
    of those rows only; a manifest without a shared stem costs the one pass."""
    pf = open_manifest(path, storage_options)
    colliding: set[str] = set()
    while True:
        kept = np.sort(hash64(pa.array(sorted(colliding), pa.string())))
        hashes = np.empty(pf.metadata.num_rows, dtype=np.uint64)
        filled = 0
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=["image_id"], use_threads=True):
            hashes[filled : filled + batch.num_rows] = _names(batch, kept)[2]
            filled += batch.num_rows
        hashes.sort()
        candidates = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        if not len(candidates):
            return sorted(colliding)
        names, stems = [], []
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=["image_id"], use_threads=True):
            batch_stems, batch_names, name_hashes = _names(batch, kept)
            suspect = pa.array(np.isin(name_hashes, candidates))
            names.append(batch_names.filter(suspect))
            stems.append(batch_stems.filter(suspect))
        table = pa.table({"name": pa.chunked_array(names, pa.string()), "stem": pa.chunked_array(stems, pa.string())})
        counts = pc.value_counts(table.column("name"))
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        clashing = table.filter(pc.is_in(table.column("name"), value_set=repeated)).column("stem").to_pylist()
        if not clashing:  # 64-bit hashes equal, strings not: no name repeats
            return sorted(colliding)
        colliding.update(str(v) for v in clashing)


def inspect_manifest(path: str, storage_options: dict[str, Any] | None = None) -> ManifestInfo:
    """Read the footer; what it lacks (fingerprint, sources' digest, duplicate check) is computed in one
    streamed pass over the columns it needs."""
    pf = open_manifest(path, storage_options)
    schema = pf.schema_arrow
    problems = validate(schema.empty_table())  # the column checks alone: a bad row only fails that row
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems) + f" (columns: {schema.names})")
    meta = pf.metadata.metadata or {}
    fingerprint = meta.get(FINGERPRINT_KEY, b"").decode()
    sources = meta.get(SOURCES_KEY, b"").decode()
    tagged = has_tags(schema.names)
    check_ids = meta.get(UNIQUE_IDS_KEY) != b"true"
    if not fingerprint or check_ids or (tagged and not sources):
        digest = FooterDigest()
        hashes = np.empty(pf.metadata.num_rows if check_ids else 0, dtype=np.uint64)
        filled = 0
        columns = ["image_id", "uri", *[c for c in TAG_COLUMNS if c in schema.names]]
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns, use_threads=True):
            if not fingerprint or (tagged and not sources):
                digest.update(batch)
            if check_ids:
                hashes[filled : filled + batch.num_rows] = hash64(batch.column(0))
                filled += batch.num_rows
        fingerprint = fingerprint or digest.rows.hexdigest()
        sources = sources or (digest.sources.hexdigest() if tagged else "")
        if check_ids:
            _duplicates(pf, path, hashes)
    try:
        videos = [(int(r), int(n)) for r, n in json.loads(meta.get(VIDEOS_KEY, b"[]"))]
    except (ValueError, TypeError):  # a footer written elsewhere: its videos are done whole
        videos = []
    return ManifestInfo(path, pf.metadata.num_rows, list(schema.names), fingerprint, videos, sources)


@dataclass
class Plan:
    """Shards of one generation of a job over one manifest, and which of them have committed."""

    rows: int
    shard_rows: int
    fingerprint: str
    done: set[int]
    segment_frames: int = 0  # videos longer than this are cut (pipeline.segments); 0: never
    videos: list[tuple[int, int]] = field(default_factory=list)
    segments_done: set[tuple[int, int]] = field(default_factory=set)
    generation: int = 0
    # the generations whose results this one keeps where the source is unchanged, newest first: the one
    # before, and the ones before that while a run over them was abandoned unfinished
    bases: list[int] = field(default_factory=list)
    sources: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    rerun: str = "new"
    # output_format files: the stems two ids share (colliding_stems); None: planned before names were mirrored
    collisions: list[str] | None = None

    @property
    def pending_segments(self) -> list[Segment]:
        """Segments of long videos in shards not yet committed, without a commit marker."""
        out = []
        for row, frames in self.videos:
            if row < self.rows and row // self.shard_rows not in self.done:
                out += [s for s in cut(row, frames, self.segment_frames) if (row, s.index) not in self.segments_done]
        return out

    @property
    def base(self) -> int | None:
        return self.bases[0] if self.bases else None

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
            "sources_sha256": self.sources,
            "rows": self.rows,
            "shard_rows": self.shard_rows,
            "shards": self.shards,
            "segment_frames": self.segment_frames,
            "generation": self.generation,
            "bases": self.bases,
            "rerun": self.rerun,
            "settings": self.settings,
            **({"collisions": self.collisions} if self.collisions is not None else {}),
        }


def _recorded(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        data = storage.read_if_exists(key)
        return json.loads(data) if data is not None else None
    except (StorageError, ValueError) as exc:
        raise JobError(f"{storage.uri(key)} is unreadable ({exc}); delete it to start over") from None


def _finished(storage: Storage, generation: int) -> dict[str, Any] | None:
    """``_SUCCESS`` if it records ``generation`` (files written before generations existed are generation 0)."""
    try:
        success = _recorded(storage, layout.SUCCESS_KEY)
    except JobError:
        return None
    return success if success is not None and int(success.get("generation", 0)) == generation else None


def make_plan(
    storage: Storage,
    info: ManifestInfo,
    shard_rows: int | None = None,
    *,
    write: bool = True,
    segment_frames: int = 0,
    settings: dict[str, Any] | None = None,
    rerun: str = "new",
    mirrored: bool = False,
    keep_earlier: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Plan:
    """This output's plan: the recorded generation resumed, or a new generation (a changed manifest, or
    ``rerun=failed|all`` after a finished run) cut and recorded. ``write=False`` (a dry run) records nothing.
    ``mirrored`` (output_format files): a plan it records lists the colliding stems of the manifest.
    ``keep_earlier=False`` (shard files): a new generation keeps nothing, so each shard file holds all its rows."""
    settings = settings or {}
    recorded = _recorded(storage, layout.PLAN_KEY)
    rows = max(1, int(shard_rows or DEFAULT_SHARD_ROWS))
    plan = Plan(info.rows, rows, info.fingerprint, set(), int(segment_frames or 0), info.videos)
    plan.sources, plan.settings, plan.rerun = info.sources, settings, rerun
    listing = generations.listing(storage)
    if recorded is not None:
        generation = int(recorded.get("generation", 0))
        changed = _refusal(storage, recorded.get("settings") or {}, settings)
        same_manifest = (
            recorded.get("manifest_sha256") == info.fingerprint
            and int(recorded.get("rows", -1)) == info.rows
            # a plan written before sources were recorded: the fingerprint alone decides, as it did then
            and recorded.get("sources_sha256", info.sources) == info.sources
        )
        if changed and rerun != "all":
            raise JobError(changed)
        finished = _finished(storage, generation)
        redo = rerun == "all" or (rerun == "failed" and int((finished or {}).get("failed", 0)) > 0)
        if same_manifest and not changed and (finished is None or not redo):
            return _resume(storage, recorded, info, listing)
        plan.generation = generation + 1
        # results made under other pixel settings (rerun=all starts over), or in shard files, are never kept
        if not changed and keep_earlier:
            plan.bases = [generation] + ([] if finished else [int(g) for g in recorded.get("bases", [])])
        if plan.bases:  # segments are keyed by manifest row, which moves: changed long videos go whole
            plan.segment_frames = 0
        if write:
            _record(storage, plan, info.path if mirrored else None, storage_options)
            storage.delete(layout.SUCCESS_KEY)  # the output is incomplete until this generation finishes
            for key in storage.list(layout.SEGMENTS_PREFIX + "/"):  # an earlier generation's, by its rows
                storage.delete(key)
        return plan
    if write:
        _record(storage, plan, info.path if mirrored else None, storage_options)
    plan.done = {s for s in listing.get(0, {}) if s < plan.shards}
    if plan.segment_frames and plan.videos:
        plan.segments_done = segments.committed(segments.listing(storage))
    return plan


def _refusal(storage: Storage, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The one line that refuses a rerun whose pixel settings differ from the recorded ones, or None."""
    key = generations.changed_setting(old, new)
    if key is None:
        return None
    return (
        f"{storage.uri(layout.PLAN_KEY)}: {key} was {old[key]!r} and is now {new.get(key)!r}, which changes "
        "the outputs already made; use a new output, or --set rerun=all to stylize everything again"
    )


def _record(storage: Storage, plan: Plan, mirrored: str | None, storage_options: dict[str, Any] | None) -> None:
    """Write ``_plan.json``; ``mirrored`` (the manifest of an output_format files job): with its colliding stems."""
    plan.collisions = colliding_stems(mirrored, storage_options) if mirrored else None
    storage.put(layout.PLAN_KEY, json.dumps(plan.as_json(), indent=2).encode())


def _resume(storage: Storage, recorded: dict[str, Any], info: ManifestInfo, listing: dict[int, dict[int, str]]) -> Plan:
    """The recorded generation, its shards cut as they were (shard_rows and segment_frames are fixed once it starts)."""
    generation = int(recorded.get("generation", 0))
    plan = Plan(
        info.rows,
        int(recorded["shard_rows"]),
        info.fingerprint,
        set(),
        int(recorded.get("segment_frames", 0)),
        info.videos,
        generation=generation,
        bases=[int(g) for g in recorded.get("bases", [])],
        sources=info.sources,
        settings=recorded.get("settings") or {},
        rerun=str(recorded.get("rerun", "new")),
        collisions=recorded.get("collisions"),
    )
    plan.done = {s for s in listing.get(generation, {}) if s < plan.shards}
    if plan.segment_frames and plan.videos:
        plan.segments_done = segments.committed(segments.listing(storage))
    return plan
