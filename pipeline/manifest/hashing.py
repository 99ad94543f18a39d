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

_R = 0x9E3779B97F4A7C15  # odd, so invertible mod 2**64: a string's hash needs no per-byte position
_R_INV = pow(_R, -1, 1 << 64)
_POWERS: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]  # R**i and R**-i, grown on demand


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]))
        for i, base in enumerate((_R, _R_INV)):
            table = np.full(size, base, dtype=np.uint64)
            table[0] = 1
            _POWERS[i] = np.cumprod(table, dtype=np.uint64)  # wraps mod 2**64, as intended
    return _POWERS[0], _POWERS[1]


def _string_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0, bytes) of a string array, nulls as empty strings; no copy of the bytes."""
    if not pa.types.is_large_string(values.type):
        values = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    if values.null_count:
        values = pc.fill_null(values, "")
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + len(values) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def hash64(values: pa.Array | pa.ChunkedArray, salt: int = 0) -> np.ndarray:
    """A 64-bit hash per string (uint64; null hashes as ""): the polynomial sum of its bytes times powers of
    an odd constant mod 2**64 (one prefix sum over the batch's bytes, rebased per string by the inverse
    power), mixed with the length through a splitmix64 finaliser. Deterministic across processes; not for
    adversarial input: callers that must be exact (duplicate ids) confirm equal hashes on the strings."""
    out = []
    for chunk in _chunks(values):
        offsets, data = _string_buffers(chunk)
        powers, inverse = _powers(len(data) + 1)
        sums = np.zeros(len(data) + 1, dtype=np.uint64)
        np.cumsum(np.multiply(data, powers[: len(data)], dtype=np.uint64), out=sums[1:])
        with np.errstate(over="ignore"):
            h = (sums[offsets[1:]] - sums[offsets[:-1]]) * inverse[offsets[:-1]]
            h ^= np.diff(offsets).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93) + np.uint64(salt)
        out.append(hash_mix(h))
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


def hash_mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves about half the output bits."""
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
