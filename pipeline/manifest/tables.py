"""A manifest from an existing table of URIs (Parquet, CSV/TSV, or a .txt list), as other tools write them."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import split_protocol

from pipeline.errors import ManifestError, StorageError
from pipeline.manifest.footer import local_output, write_table
from pipeline.manifest.ids import id_from_uri
from pipeline.manifest.read import read_uri_list, validate
from pipeline.manifest.schema import SCHEMA, ManifestStats
from pipeline.storage import ALLOWED_SCHEMES, check_scheme, open_fs


def _read_any_table(path: str, storage_options: dict | None, allowed: Iterable[str] = ALLOWED_SCHEMES) -> pa.Table:
    """Parquet, CSV/TSV (optionally .gz) or a .txt list of URIs (one a line)."""
    import pyarrow.csv as pacsv

    fs, fpath = open_fs(path, storage_options)
    lower = fpath.lower().removesuffix(".gz")
    try:
        if lower.endswith((".csv", ".tsv")):
            delimiter = "\t" if lower.endswith(".tsv") else ","
            compression = "gzip" if fpath.lower().endswith(".gz") else None
            with fs.open(fpath, "rt", encoding="utf-8", newline="", compression=compression) as f:
                header = next(csv.reader(f, delimiter=delimiter), [])
            with fs.open(fpath, "rb", compression=compression) as f:
                # every column as text: ids like "0001" must not turn into integers
                return pacsv.read_csv(
                    f,
                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                    convert_options=pacsv.ConvertOptions(
                        strings_can_be_null=True, column_types=dict.fromkeys(header, pa.string())
                    ),
                )
        if lower.endswith(".txt"):
            return pa.table({"uri": pa.array(read_uri_list(path, storage_options, allowed), pa.string())})
        return pq.read_table(fpath, filesystem=fs)
    except FileNotFoundError:
        raise ManifestError(f"table not found: {path}") from None
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"cannot read table {path}: {type(exc).__name__}: {exc}") from None


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
) -> ManifestStats:
    """A manifest from an existing table of URIs (Parquet, CSV/TSV, or .txt one URI a line).

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
    table = _read_any_table(path, storage_options, allowed)
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
    result = pa.Table.from_arrays(
        arrays + [table.column(n) for n in extra],
        schema=pa.schema(list(SCHEMA) + [table.schema.field(n) for n in extra]),
    )
    with local_output(out, storage_options) as tmp:
        write_table(result, tmp)
    sizes = result.column("size_bytes")
    return ManifestStats(
        out=out,
        rows=result.num_rows,
        total_bytes=int(pc.sum(sizes).as_py() or 0),
        listed=result.num_rows,
        renamed_ids=renamed,
        seconds=time.perf_counter() - t0,
        problems=validate(result, allowed),
    )
