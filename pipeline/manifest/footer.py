"""What ``manifest build`` stores in the Parquet footer so planning reads no rows, and the atomic write."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.manifest.hashing import Fingerprint, source_tags
from pipeline.manifest.schema import FINGERPRINT_KEY, LABEL_COLUMN, LABELS_KEY, SOURCES_KEY, UNIQUE_IDS_KEY
from pipeline.storage import is_local, open_fs


def manifest_metadata(table_fingerprint: str, unique_ids: bool, sources: str = "") -> dict[bytes, bytes]:
    """The footer keys: the (id, uri) fingerprint, the duplicate check and, when known, the sources' digest."""
    meta = {FINGERPRINT_KEY: table_fingerprint.encode(), UNIQUE_IDS_KEY: b"true" if unique_ids else b"false"}
    if sources:
        meta[SOURCES_KEY] = sources.encode()
    return meta


class FooterDigest:
    """The fingerprint and the sources' digest of a manifest written batch by batch."""

    def __init__(self) -> None:
        self.rows = Fingerprint()
        self.sources = Fingerprint()

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        ids = table.column("image_id")
        self.rows.update(ids, table.column("uri"))
        self.sources.update(ids, pc.fill_null(source_tags(table), ""))

    def metadata(self, unique_ids: bool) -> dict[bytes, bytes]:
        return manifest_metadata(self.rows.hexdigest(), unique_ids, self.sources.hexdigest())


def labels_metadata(names: Iterable[str]) -> dict[bytes, bytes]:
    """The footer key of the class names: sorted, so a label's index is its position (torchvision's
    ImageFolder numbers its classes so)."""
    return {LABELS_KEY: json.dumps(sorted(set(names))).encode()}


def write_table(table: pa.Table, path: str, *, row_group_size: int = 65_536) -> None:
    """Write a manifest table with its fingerprint and duplicate check in the footer (what planning reads),
    and the class names where it has a ``label`` column."""
    digest = FooterDigest()
    digest.update(table)
    unique = pc.count_distinct(table.column("image_id"), mode="all").as_py() == table.num_rows
    found = digest.metadata(unique)
    if LABEL_COLUMN in table.column_names:
        labels = pc.unique(pc.drop_null(table.column(LABEL_COLUMN))).to_pylist()
        found.update(labels_metadata(str(v) for v in labels))
    meta = {k.decode(): v.decode() for k, v in found.items()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table, row_group_size=row_group_size)
        writer.add_key_value_metadata(meta)


@contextlib.contextmanager
def local_output(out: str, storage_options: dict | None) -> Iterator[str]:
    """A local temp path that becomes ``out`` (any fsspec URI) only if the block succeeds."""
    fs, path = open_fs(out, storage_options)
    local = is_local(fs)
    folder = os.path.dirname(path) if local else None
    if local:
        os.makedirs(folder or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".manifest-", suffix=".parquet.tmp")
    os.close(fd)
    try:
        yield tmp
        if local:
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
