"""Incremental runs: what a new generation keeps from the one before it.

Per shard (``ShardWorker``), ``EarlierResults`` looks up the earlier generation's metrics rows of the
shard's own ids: it reads only the earlier files whose ``image_id`` range (Parquet statistics) overlaps
the shard's, so an id-sorted manifest (``manifest build`` writes one) touches one or two files a shard.
``classify`` then says whether a row is new, changed (another uri or source tag) or unchanged, and
whether it is kept (its earlier metrics row copied forward, its output untouched) or stylized again.

For the whole manifest (``stylize run --dry-run``, ``_SUCCESS``'s counts, ``prune``), ``diff_counts``
and ``prune_outputs`` compare 64-bit hashes (of ids, and of (id, uri, source tag)) as sorted numpy arrays,
streamed in Arrow batches and split into hash partitions past ``PARTITION_ROWS``: never a Python object
per row.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline import layout
from pipeline.manifest.hashing import hash64, hash_mix, source_tags
from pipeline.manifest.read import open_manifest
from pipeline.manifest.schema import TAG_COLUMNS
from pipeline.storage import Storage

KEPT_FILES = 4  # earlier metrics files an actor keeps read (consecutive shards overlap the same ones)
PARTITION_ROWS = 16_000_000  # rows hashed at once by the whole-manifest diff (16 bytes each, both sides)
_BATCH_ROWS = 65_536


class EarlierResults:
    """The earlier generations' metrics rows, looked up by id, one shard's ids at a time.

    ``files`` are ``(generation, key)``, newest generation first: an id's newest row wins. ``touched``
    (``touched_ids``) names the ids a run abandoned unfinished may have written outputs for: a row of a
    generation older than that run does not describe the output any more, so it is not kept."""

    def __init__(
        self,
        storage: Storage,
        files: list[tuple[int, str]],
        touched: dict[str, int] | None = None,
        ranges: dict[str, tuple[str | None, str | None]] | None = None,
    ) -> None:
        self.storage = storage
        self.files = files
        self.touched = touched or {}
        self.known = ranges or {}  # from the generations' indexes (read_ranges); other files' footers are read
        self._ranges: list[tuple[int, str, str | None, str | None]] | None = None
        self._tables: OrderedDict[str, pa.Table] = OrderedDict()

    def _id_ranges(self) -> list[tuple[int, str, str | None, str | None]]:
        """(generation, key, smallest id, largest id) of every earlier file, from the footers (None: unknown)."""
        if self._ranges is None:
            self._ranges = []
            for generation, key in self.files:
                if key in self.known:
                    self._ranges.append((generation, key, *self.known[key]))
                    continue
                with self.storage.open(key) as f:
                    meta = pq.ParquetFile(f).metadata
                lo = hi = None
                column = meta.schema.names.index("image_id")
                stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
                if stats and all(s is not None and s.has_min_max for s in stats):
                    lo, hi = min(str(s.min) for s in stats), max(str(s.max) for s in stats)
                self._ranges.append((generation, key, lo, hi))
        return self._ranges

    def _table(self, key: str) -> pa.Table:
        if key in self._tables:
            self._tables.move_to_end(key)
        else:
            with self.storage.open(key) as f:
                self._tables[key] = pq.read_table(f)
            while len(self._tables) > KEPT_FILES:
                self._tables.popitem(last=False)
        return self._tables[key]

    def lookup(self, ids: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """``{(image_id, k): earlier metrics row}`` for those of ``ids`` the earlier generations hold: one row
        per (photo, k) of ``styles_per_image`` (rows written before ``k`` existed are k = 0)."""
        present = [i for i in ids if i]
        if not present or not self.files:
            return {}
        lo, hi = min(present), max(present)
        wanted = pa.array(present, pa.string())
        found: dict[tuple[str, int], dict[str, Any] | None] = {}
        for generation, key, first, last in self._id_ranges():
            if first is not None and last is not None and (last < lo or first > hi):
                continue
            table = self._table(key)
            for row in table.filter(pc.is_in(table.column("image_id"), value_set=wanted)).to_pylist():
                image_id = row["image_id"]
                pair = (image_id, int(row.get("k") or 0))
                if pair not in found:  # the newest generation's row; None where a later run touched it
                    found[pair] = row if self.touched.get(image_id, -1) <= generation else None
        return {k: v for k, v in found.items() if v is not None}


def read_ranges(storage: Storage, generations: list[int]) -> dict[str, tuple[str | None, str | None]]:
    """``{metrics key: (first id, last id)}`` from the indexes finished generations left (``write_index``):
    one read a generation instead of one footer a shard."""
    ranges: dict[str, tuple[str | None, str | None]] = {}
    for generation in generations:
        data = storage.read_if_exists(layout.index_key(generation))
        try:
            ranges.update({k: (v[0], v[1]) for k, v in json.loads(data).items()} if data else {})
        except (ValueError, TypeError, IndexError):  # a damaged index: the footers say the same
            continue
    return ranges


def write_index(storage: Storage, generation: int, keys: dict[int, str], summaries: list[dict[str, Any]]) -> None:
    """A finished generation's metrics files and their id ranges (from the shard summaries' footers)."""
    index = {keys[s["shard"]]: [s["first_id"], s["last_id"]] for s in summaries if "first_id" in s}
    storage.put(layout.index_key(generation), json.dumps(index).encode())


def touched_ids(storage: Storage, generations: list[int]) -> dict[str, int]:
    """``{image_id: newest generation}`` named by attempt markers left by those generations: the rows their
    unfinished shards were stylizing (``ShardWorker.run`` lists them before writing any output)."""
    touched: dict[str, int] = {}
    for key in storage.list(layout.ATTEMPTS_PREFIX + "/"):
        parsed = layout.parse_shard_key(key, layout.ATTEMPT_FILE)
        if parsed is None or parsed[0] not in generations:
            continue
        data = storage.read_if_exists(key)
        try:
            ids = json.loads(data).get("ids", []) if data else []
        except ValueError:
            ids = []
        for image_id in ids:
            touched[image_id] = max(parsed[0], touched.get(image_id, -1))
    return touched


def classify(earlier: dict[str, Any] | None, uri: str, tag: str | None, rerun: str) -> tuple[str, bool]:
    """(``new`` | ``changed`` | ``unchanged``, kept) of one row against its earlier metrics row."""
    if earlier is None:
        return "new", False
    # metrics written before source tags were recorded have no source_tag: the uri alone decides
    if earlier.get("source_uri") != uri or earlier.get("source_tag", tag) != tag:
        return "changed", False
    kept = rerun == "new" or (rerun == "failed" and earlier.get("status") == "ok")
    return "unchanged", kept


# --- whole-manifest counts ------------------------------------------------------------------------


def _pair(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One 64-bit hash of (id, row): equal pairs mean the same id with the same uri and source tag."""
    with np.errstate(over="ignore"):
        return hash_mix(ids ^ (rows * np.uint64(0x9FB21C651E98DF25)))


def _manifest_hashes(path: str, storage_options: dict[str, Any] | None) -> Iterator[tuple[np.ndarray, ...]]:
    """(id hash, (id, uri, source tag) hash) per manifest batch."""
    pf = open_manifest(path, storage_options)
    columns = ["image_id", "uri", *[c for c in TAG_COLUMNS if c in pf.schema_arrow.names]]
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=columns, use_threads=True):
        ids = hash64(batch.column(0))
        yield ids, _pair(ids, hash64(batch.column(1)) ^ hash64(source_tags(batch), salt=1))


_EARLIER_COLUMNS = pa.schema(
    [("image_id", pa.string()), ("source_uri", pa.string()), ("source_tag", pa.string()), ("status", pa.string())]
)


def _earlier_dataset(storage: Storage, keys: list[str]) -> ds.Dataset:
    """The earlier metrics files as one dataset (read in threads, no per-file round trip in Python); files
    written before source tags have null tags."""
    paths = [f"{storage.root}/{key}" for key in keys]  # keys from storage.list: already checked
    return ds.dataset(paths, schema=_EARLIER_COLUMNS, filesystem=storage.fs, format="parquet")


def _earlier_hashes(files: ds.Dataset) -> Iterator[tuple[np.ndarray, ...]]:
    """(id hash, pair hash, failed) per batch of the earlier metrics files."""
    for batch in files.to_batches(batch_size=_BATCH_ROWS, use_threads=True):
        ids = hash64(batch.column(0))
        failed = pc.not_equal(pc.fill_null(batch.column(3), ""), "ok").to_numpy(zero_copy_only=False)
        yield ids, _pair(ids, hash64(batch.column(1)) ^ hash64(batch.column(2), salt=1)), failed


def _common(queries: np.ndarray, values: np.ndarray) -> int:
    """How many of the sorted ``queries`` occur in the sorted ``values`` (sorted: a cache-friendly search)."""
    if not len(queries) or not len(values):
        return 0
    at = np.minimum(np.searchsorted(values, queries), len(values) - 1)
    return int((values[at] == queries).sum())


def diff_counts(
    storage: Storage,
    earlier_keys: list[str],
    manifest: str,
    storage_options: dict[str, Any] | None,
    rows: int,
    rerun: str,
) -> dict[str, int]:
    """new, changed, unchanged, deleted rows of ``manifest`` against the earlier generations' files, and how
    many rows a run would stylize (``to_process``). Rows are photos (manifest rows): with ``styles_per_image``
    K the earlier files hold K rows an id, counted once (ids are deduplicated; a photo is to be processed when
    any of its pairs is). Only sorts of 64-bit hashes and searches of one sorted
    array in another: no gather in random order, which is what costs at 10M rows."""
    files = _earlier_dataset(storage, earlier_keys)
    earlier_rows = files.count_rows() if earlier_keys else 0
    parts = max(1, math.ceil(max(rows, earlier_rows) / PARTITION_ROWS))
    counts = dict.fromkeys(("new", "changed", "unchanged", "deleted", "to_process"), 0)
    for part in range(parts):
        ids, pairs = (np.sort(a) for a in _collect(_manifest_hashes(manifest, storage_options), parts, part))
        old_ids, old_pairs, old_failed = _collect(_earlier_hashes(files) if earlier_keys else iter(()), parts, part)
        failed_pairs = np.sort(old_pairs[old_failed])
        old_ids, old_pairs = np.sort(old_ids), np.sort(old_pairs)
        # an id in several earlier generations (a run abandoned unfinished) counts once
        old_ids = old_ids[np.concatenate([[True], old_ids[1:] != old_ids[:-1]])] if len(old_ids) else old_ids
        found, same = _common(ids, old_ids), _common(pairs, old_pairs)
        counts["new"] += len(ids) - found
        counts["changed"] += found - same
        counts["unchanged"] += same
        counts["deleted"] += len(old_ids) - found
        redo = len(ids) - same
        if rerun == "all":
            redo = len(ids)
        elif rerun == "failed":
            redo += _common(pairs, failed_pairs)
        counts["to_process"] += redo
    return counts


def _collect(batches: Iterator[tuple[np.ndarray, ...]], parts: int, part: int) -> tuple[np.ndarray, ...]:
    """The batches' arrays concatenated, only rows whose id hash falls in ``part`` of ``parts``."""
    pieces: list[tuple[np.ndarray, ...]] = []
    for arrays in batches:
        if parts > 1:
            keep = arrays[0] % np.uint64(parts) == np.uint64(part)
            arrays = tuple(a[keep] for a in arrays)
        pieces.append(arrays)
    if not pieces:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, bool)
    return tuple(np.concatenate(column) for column in zip(*pieces, strict=True))


# --- prune ----------------------------------------------------------------------------------------


def prune_outputs(storage: Storage, current_keys: list[str]) -> int:
    """Delete outputs (``images/``, ``videos/``, ``shards/``) that no ok row of the current generation names;
    returns how many. Each row's ``output_uri`` says where its output is (a kept row's may have an older
    name: outputs were once named ``<id>.<ext>``); a sample in a shard file names the file. Compared as
    64-bit hashes of the keys, sorted."""
    wanted_parts = []
    for key in current_keys:
        with storage.open(key) as f:
            table = pq.read_table(f, columns=["status", "output_uri"])
        uris = table.filter(pc.equal(table.column("status"), "ok")).column("output_uri").to_pylist()
        keys = {layout.relative_key(storage.root_uri, layout.split_member(u)[0]) for u in uris if u}
        wanted_parts.append(hash64(pa.array(sorted(keys), pa.string())))  # one shard's keys at a time
    wanted = np.sort(np.concatenate(wanted_parts)) if wanted_parts else np.zeros(0, np.uint64)
    deleted = 0
    for prefix in (layout.IMAGES_PREFIX + "/", layout.VIDEOS_PREFIX + "/", layout.SHARDS_PREFIX + "/"):
        found = storage.list(prefix)
        if not found:
            continue
        hashes = hash64(pa.array(found, pa.string()))
        at = np.minimum(np.searchsorted(wanted, hashes), max(len(wanted) - 1, 0))
        stale = ~(wanted[at] == hashes) if len(wanted) else np.ones(len(found), bool)
        for i in np.flatnonzero(stale):
            storage.delete(found[i])
            deleted += 1
    return deleted
