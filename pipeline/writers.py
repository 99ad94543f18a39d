"""Where a shard's outputs go: loose files, one WebDataset tar or one Parquet file per shard.

One interface (``Writer``), as img2dataset's writers have it: ``put`` one sample (from the shard's
writer threads, so it is thread-safe), then ``finish`` once every sample is in, before the shard's
metrics file is committed (that file stays the commit marker of every format).

- ``files``: ``images/<id's stem>[-k].<ext>`` (``layout.output_key``), each written as it comes.
- ``webdataset``: ``shards/shard-[gGGGG-]NNNNN.tar`` with ``<key>.<jpg|png|webp>``, ``<key>.cls`` (the class
  index, where there are labels) and ``<key>.json`` (``sample_fields``) per sample.
- ``parquet``: ``shards/shard-[gGGGG-]NNNNN.parquet``, one row a sample: ``key``, ``image`` (a struct of
  ``bytes`` and ``path``, as Hugging Face ``datasets`` stores its Image feature, which the schema's
  ``huggingface`` metadata names, so ``load_dataset("parquet", ...)`` decodes it), and the same fields.

A shard file is written whole at ``finish``: samples are spooled to a local temporary file as they come
(memory stays flat whatever the photos' size), sorted by key, written to a second temporary file and
stored with one atomic ``put_file``; a rerun of the shard rewrites it whole, so no sample is ever
duplicated. Members have a fixed mtime, owner and mode, so the same samples give byte-identical tars.
A sample's ``output_uri`` is ``<shard file's URI>#<member>`` (``layout.split_member``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import layout
from pipeline.storage import Storage

SampleId = tuple[str, int | None]  # (image id, k or None when a photo has one style)
MTIME = 946_684_800  # 2000-01-01: every member's mtime, so tars do not depend on when they were made
PARQUET_ROWS = 64  # samples per row group (bounded memory: their image bytes are read from the spool at once)

FIELDS = pa.schema(
    [
        ("image_id", pa.string()),
        ("k", pa.int64()),
        ("label", pa.string()),
        ("label_index", pa.int64()),
        ("style", pa.string()),
        ("alpha", pa.float64()),
        ("stylizer", pa.string()),
        ("weights_sha256", pa.string()),
        ("seed", pa.int64()),
        ("style_seed", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARQUET_SCHEMA = pa.schema([("key", pa.string()), ("image", IMAGE), *FIELDS])
_HF_TYPES = {"string": "string", "int64": "int64", "double": "float64"}


def hf_features() -> dict[str, Any]:
    """The ``datasets`` Features of the Parquet schema, as ``Features.to_dict`` writes them."""
    features: dict[str, Any] = {"key": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"}}
    for f in FIELDS:
        features[f.name] = {"dtype": _HF_TYPES[str(f.type)], "_type": "Value"}
    return features


def sample_fields(row: dict[str, Any], config: Any, weights_sha256: str | None) -> dict[str, Any]:
    """What a sample records of how it was made (its ``.json`` member, its Parquet columns): enough to
    regenerate it. ``k``: which of its photo's styles (0 when a photo has one)."""
    return {
        "image_id": row["image_id"],
        "k": int(row.get("k") or 0),
        "label": row.get("label"),
        "label_index": row.get("label_index"),
        "style": row.get("style"),
        "alpha": config.alpha,
        "stylizer": config.stylizer,
        "weights_sha256": weights_sha256,
        "seed": config.seed,
        "style_seed": config.style_seed,
        "width": row.get("out_width"),
        "height": row.get("out_height"),
    }


@dataclass
class Sample:
    """One encoded output and its fields."""

    image_id: str
    k: int | None
    ext: str  # the encoding's extension: jpg, png, webp
    data: bytes
    fields: dict[str, Any] = field(default_factory=dict)


class Writer:
    """The interface: ``put`` samples (thread-safe), then ``finish`` (or ``discard`` when the shard is given up)."""

    def check(self, sample: Sample) -> None:
        """Raise if ``sample`` can have no output name (its id makes no storage key): the photo's fault."""

    def put(self, sample: Sample) -> str:
        """Store (or spool) one sample; its output URI, or "" until ``finish`` names it."""
        raise NotImplementedError

    def finish(self) -> dict[SampleId, str]:
        """Write what is spooled; the output URI of every sample whose ``put`` returned ""."""
        return {}

    def discard(self) -> None:
        """Drop what is spooled (the shard is not committed; its rerun writes everything again)."""


class FilesWriter(Writer):
    """Loose files under ``images/``, each stored as it comes. ``collisions``: the stems two source ids share
    (their names keep the source's extension); None: a plan from before names were mirrored (all keep it)."""

    def __init__(self, storage: Storage, collisions: set[str] | None) -> None:
        self.storage = storage
        self.collisions = collisions

    def key(self, image_id: str, ext: str, k: int | None) -> str:
        keep = self.collisions is None or layout.output_stem(image_id) in self.collisions
        return layout.output_key(image_id, ext, k=k, keep_extension=keep)

    def check(self, sample: Sample) -> None:
        self.key(sample.image_id, sample.ext, sample.k)

    def put(self, sample: Sample) -> str:
        return self.storage.put(self.key(sample.image_id, sample.ext, sample.k), sample.data)


@dataclass
class _Spooled:
    sample: Sample  # its data emptied: the bytes are in the spool file
    offset: int
    size: int


class ShardFileWriter(Writer):
    """A shard's samples in one file, written whole at ``finish`` (the subclasses say in which format)."""

    suffix = ""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="stylize-shard-")
        self._spool = open(os.path.join(self._dir, "spool"), "w+b")  # noqa: SIM115 - closed in discard
        self._samples: dict[SampleId, _Spooled] = {}

    def put(self, sample: Sample) -> str:
        with self._lock:
            offset = self._spool.seek(0, os.SEEK_END)
            self._spool.write(sample.data)
            # a retried sample (the careful pass after a crash) replaces its earlier bytes: one entry per sample
            self._samples[(sample.image_id, sample.k)] = _Spooled(
                Sample(sample.image_id, sample.k, sample.ext, b"", sample.fields), offset, len(sample.data)
            )
        return ""

    def _read(self, spooled: _Spooled) -> bytes:
        self._spool.seek(spooled.offset)
        return self._spool.read(spooled.size)

    def _keyed(self) -> Iterator[tuple[str, _Spooled]]:
        """(key, sample) sorted by key. Two ids whose keys coincide (``a.b`` and ``a_b``) both get 8 hex digits
        of their id's sha1, so neither's key depends on which came first."""
        by_key: dict[str, list[_Spooled]] = {}
        for spooled in self._samples.values():
            by_key.setdefault(layout.sample_key(spooled.sample.image_id, spooled.sample.k), []).append(spooled)
        out = []
        for key, group in by_key.items():
            for spooled in group:
                if len(group) > 1:
                    digest = hashlib.sha1(spooled.sample.image_id.encode()).hexdigest()[:8]
                    key = layout.sample_key(f"{spooled.sample.image_id}~{digest}", spooled.sample.k)
                out.append((key, spooled))
        return iter(sorted(out, key=lambda pair: pair[0]))

    def finish(self) -> dict[SampleId, str]:
        path = os.path.join(self._dir, "shard" + self.suffix)
        with self._lock:
            members = self._write(path, self._keyed())
            uri = self.storage.put_file(self.key, path)
        self.discard()
        return {sample_id: f"{uri}{layout.MEMBER_MARK}{member}" for sample_id, member in members.items()}

    def _write(self, path: str, keyed: Iterator[tuple[str, _Spooled]]) -> dict[SampleId, str]:
        raise NotImplementedError

    def discard(self) -> None:
        self._spool.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class WebDatasetWriter(ShardFileWriter):
    """``<key>.<ext>``, ``<key>.cls`` (with a label) and ``<key>.json`` per sample, members sorted by name."""

    suffix = ".tar"

    def _write(self, path: str, keyed: Iterator[tuple[str, _Spooled]]) -> dict[SampleId, str]:
        names: dict[SampleId, str] = {}
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, spooled in keyed:
                sample = spooled.sample
                parts = {f"{key}.json": json.dumps(sample.fields, sort_keys=True).encode()}
                if sample.fields.get("label_index") is not None:
                    parts[f"{key}.cls"] = str(int(sample.fields["label_index"])).encode()
                image = f"{key}.{sample.ext}"
                parts[image] = self._read(spooled)
                for name in sorted(parts):
                    tar.addfile(_member(name, len(parts[name])), io.BytesIO(parts[name]))
                names[(sample.image_id, sample.k)] = image
        return names


class ParquetWriter(ShardFileWriter):
    """One row a sample, sorted by key; the ``huggingface`` schema metadata says ``image`` is an Image."""

    suffix = ".parquet"

    def _write(self, path: str, keyed: Iterator[tuple[str, _Spooled]]) -> dict[SampleId, str]:
        schema = PARQUET_SCHEMA.with_metadata({"huggingface": json.dumps({"info": {"features": hf_features()}})})
        names: dict[SampleId, str] = {}
        pairs = list(keyed)
        small = [name for name in schema.names if name != "image"]
        # encoded images neither compress nor repeat: no codec, dictionary or statistics spent on their bytes
        options = {"compression": "none", "use_dictionary": small, "write_statistics": small}
        with pq.ParquetWriter(path, schema, **options) as writer:
            for start in range(0, max(len(pairs), 1), PARQUET_ROWS):
                chunk = pairs[start : start + PARQUET_ROWS]
                columns: dict[str, list[Any]] = {name: [] for name in schema.names}
                for key, spooled in chunk:
                    sample = spooled.sample
                    columns["key"].append(key)
                    columns["image"].append({"bytes": self._read(spooled), "path": f"{key}.{sample.ext}"})
                    for f in FIELDS:
                        columns[f.name].append(sample.fields.get(f.name))
                    names[(sample.image_id, sample.k)] = key
                writer.write_table(pa.table(columns, schema=schema))
        return names


def read_output(storage: Storage, uri: str) -> bytes:
    """The encoded image an ``output_uri`` names: a loose file, or a member of a shard file (a tar's member;
    a Parquet row's ``image.bytes``, reading only the row group that holds its key)."""
    base, member = layout.split_member(uri)
    key = layout.relative_key(storage.root_uri, base)
    if member is None:
        return storage.get(key)
    with storage.open(key) as f:
        if key.endswith(".tar"):
            with tarfile.open(fileobj=f) as tar:
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise KeyError(member)
                return extracted.read()
        pf = pq.ParquetFile(f)
        for group in range(pf.metadata.num_row_groups):
            keys = pf.read_row_group(group, columns=["key"]).column(0).to_pylist()
            if member in keys:
                image = pf.read_row_group(group, columns=["image"]).column(0)[keys.index(member)]
                return image["bytes"].as_py()
    raise KeyError(f"{member} is not in {base}")


def open_writer(
    output_format: str, storage: Storage, shard: int, generation: int, collisions: set[str] | None
) -> Writer:
    """The writer of one shard's outputs in ``output_format`` (JobConfig's ``output_format``)."""
    if output_format == "files":
        return FilesWriter(storage, collisions)
    key = layout.container_key(shard, generation, output_format)
    return WebDatasetWriter(storage, key) if output_format == "webdataset" else ParquetWriter(storage, key)


__all__ = ["FIELDS", "Sample", "Writer", "hf_features", "open_writer", "read_output", "sample_fields"]
