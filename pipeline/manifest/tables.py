"""A manifest from an existing table of URIs (Parquet, CSV/TSV, or a .txt list), as other tools write them."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fsspec.core import split_protocol

from pipeline.errors import ManifestError, StorageError
from pipeline.manifest.footer import local_output, write_table
from pipeline.manifest.ids import id_from_uri
from pipeline.manifest.labels import Labeler
from pipeline.manifest.read import read_table_file, validate
from pipeline.manifest.schema import LABEL_COLUMN, SCHEMA, ManifestStats
from pipeline.storage import ALLOWED_SCHEMES, check_scheme


def _as_strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(col, pa.string())


def from_table(
    path: str,
    out: str,
    *,
    uri_column: str = "uri",
    id_column: str | None = None,
    allowed_schemes: Iterable[str] = ALLOWED_SCHEMES,
    storage_options: dict[str, Any] | None = None,
    label_from: str | None = None,
    labels: dict[str, str] | None = None,
) -> ManifestStats:
    """A manifest from an existing table of URIs (Parquet, CSV/TSV, or .txt one URI a line).

    A ``label`` column the table has is kept (as text: labels are class names); else ``label_from``
    (the folders of each image id) or ``labels`` (``{image_id: label}``) make one (``labels.Labeler``).

    Ids come from ``id_column``, else an existing ``image_id`` column, else ``id_from_uri``.
    Given ids are kept verbatim (``validate`` reports unsafe ones per row). Extra columns are
    kept after the standard ones, e.g. a per-image style column. Nothing is read from the URIs:
    size, width, height stay null unless the table has them.
    """
    t0 = time.perf_counter()
    allowed = set(allowed_schemes)
    try:
        check_scheme(out, allowed)
    except StorageError as exc:
        raise ManifestError(str(exc)) from None
    table = read_table_file(path, storage_options, allowed)
    names = table.column_names
    if uri_column not in names:
        raise ManifestError(f"{path} has no column {uri_column!r}; columns: {', '.join(names)}")
    if uri_column != "uri" and "uri" in names:
        raise ManifestError(f"{path} has both {uri_column!r} and 'uri'; rename one")
    id_source = id_column or ("image_id" if "image_id" in names else None)
    if id_column and id_column not in names:
        raise ManifestError(f"{path} has no column {id_column!r}; columns: {', '.join(names)}")
    if id_source and id_source != "image_id" and "image_id" in names:
        raise ManifestError(f"{path} has both {id_source!r} and 'image_id'; rename one")

    uris = _as_strings(table.column(uri_column))
    columns: dict[str, Any] = {"uri": uris}
    if id_source:
        ids = _as_strings(table.column(id_source))
        renamed = 0
    else:
        raw = uris.to_pylist()
        id_list = [id_from_uri(u) if u else None for u in raw]
        renamed = sum(
            1 for u, i in zip(raw, id_list, strict=True) if u and i != split_protocol(u.split("::")[-1])[1].lstrip("/")
        )
        ids = pa.array(id_list, pa.string())
    columns["image_id"] = ids
    used = {uri_column, id_source}
    for fld in SCHEMA:
        if fld.name in columns:
            continue
        if fld.name in names:
            try:
                columns[fld.name] = pc.cast(table.column(fld.name), fld.type)
            except pa.ArrowException as exc:
                raise ManifestError(f"column {fld.name!r} cannot be read as {fld.type}: {exc}") from None
        else:
            columns[fld.name] = pa.nulls(table.num_rows, fld.type)
        used.add(fld.name)
    arrays = [columns[f.name] for f in SCHEMA]
    extra = [n for n in names if n not in used]
    extra_arrays = [table.column(n) for n in extra]
    labeler = Labeler(label_from, labels)
    if LABEL_COLUMN in extra:
        if labeler.active:
            raise ManifestError(f"{path} has a {LABEL_COLUMN!r} column already; drop --label-from/--labels")
        at = extra.index(LABEL_COLUMN)
        extra_arrays[at] = pc.cast(extra_arrays[at], pa.string())
    elif labeler.active:
        id_list = ids.to_pylist()
        extra.append(LABEL_COLUMN)
        extra_arrays.append(labeler(id_list, id_list))
    fields = [pa.field(n, a.type) for n, a in zip(extra, extra_arrays, strict=True)]
    result = pa.Table.from_arrays(arrays + extra_arrays, schema=pa.schema(list(SCHEMA) + fields))
    with local_output(out, storage_options) as tmp:
        write_table(result, tmp)
    sizes = result.column("size_bytes")
    label_column = result.column(LABEL_COLUMN) if LABEL_COLUMN in result.column_names else None
    return ManifestStats(
        out=out,
        rows=result.num_rows,
        total_bytes=int(pc.sum(sizes).as_py() or 0),
        listed=result.num_rows,
        renamed_ids=renamed,
        seconds=time.perf_counter() - t0,
        problems=validate(result, allowed),
        unlabeled=label_column.null_count if label_column is not None else 0,
        classes=len(pc.unique(pc.drop_null(label_column))) if label_column is not None else 0,
    )
