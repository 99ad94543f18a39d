"""Vectorised digests of Arrow string columns: the manifest fingerprint, 64-bit row hashes, source tags.

Everything here works on whole Arrow arrays with numpy over their buffers, batch by batch, so a
manifest of any size is fingerprinted, checked for duplicate ids and diffed in bounded memory
without a Python object per row.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest.schema import TAG_COLUMNS

_WEIGHTS = np.random.default_rng(0x5717_11E5).integers(1, 2**63, size=1 << 12, dtype=np.uint64) | np.uint64(1)


def _string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0, bytes) of a string array, nulls as empty strings."""
    values = pc.cast(values, pa.large_string())
    if values.null_count:
        values = pc.fill_null(values, "")
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def hash64(values: pa.Array | pa.ChunkedArray, salt: int = 0) -> np.ndarray:
    """A 64-bit hash per string (uint64; null hashes as ""): a random-weighted sum of the bytes by position,
    then a splitmix64 finaliser. Deterministic across processes; collisions are about n^2 / 2^65, so
    callers that must be exact (duplicate ids) confirm candidates on the strings themselves."""
    out = []
    for chunk in _chunks(values):
        offsets, data = _string_buffers(chunk)
        lengths = np.diff(offsets)
        pos = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        terms = (data.astype(np.uint64) + np.uint64(1)) * _WEIGHTS[pos % len(_WEIGHTS)]
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
        h = sums[offsets[1:]] - sums[offsets[:-1]]
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(salt)
        out.append(_mix(h))
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def source_tags(batch: pa.Table | pa.RecordBatch) -> pa.Array:
    """A row's source tag: its etag, else ``size@mtime_us``, else null (nothing known of the source).

    A replaced photo gets a new tag; a tag that is null on both sides compares equal, so a manifest
    without these columns reruns only new ids (and ids whose uri changed)."""
    names = set(batch.schema.names)
    n = batch.num_rows
    tags = pa.nulls(n, pa.string())
    if "size_bytes" in names:
        size = pc.cast(batch.column("size_bytes"), pa.string())
        mtime = pa.nulls(n, pa.string())
        if "mtime" in names:
            try:
                mtime = pc.cast(pc.cast(batch.column("mtime"), pa.timestamp("us", tz="UTC")), pa.int64())
                mtime = pc.cast(mtime, pa.string())
            except pa.ArrowException:  # an mtime column of another kind: size alone
                pass
        tags = pc.binary_join_element_wise(size, pc.fill_null(mtime, ""), "@")
    if "etag" in names:
        tags = pc.coalesce(pc.cast(batch.column("etag"), pa.string()), tags)
    if isinstance(tags, pa.ChunkedArray):
        tags = tags.combine_chunks()
    return tags


def has_tags(names: list[str]) -> bool:
    return any(c in names for c in TAG_COLUMNS)


class Fingerprint:
    """sha256 over (key, value) string rows, independent of how the rows are chunked."""

    def __init__(self) -> None:
        self._data = hashlib.sha256()
        self._lengths = hashlib.sha256()

    def update(self, ids: pa.Array | pa.ChunkedArray, values: pa.Array | pa.ChunkedArray) -> None:
        joined = pc.binary_join_element_wise(pc.cast(ids, pa.string()), pc.cast(values, pa.string()), "\x00")
        for chunk in _chunks(joined):
            offsets, data = _string_buffers(chunk)
            self._lengths.update(np.diff(offsets).astype("<i8").tobytes())
            self._data.update(data.tobytes() if not data.flags.c_contiguous else memoryview(data))

    def hexdigest(self) -> str:
        return hashlib.sha256(self._data.digest() + self._lengths.digest()).hexdigest()
