"""Reading and checking manifests: open (footer only), read, class names, URI lists, per-row problems,
duplicates."""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ManifestError, StorageError
from pipeline.manifest.schema import LABEL_COLUMN, LABELS_KEY, REQUIRED_COLUMNS
from pipeline.storage import ALLOWED_SCHEMES, key_problem, open_fs, schemes_of


def open_manifest(path: str, storage_options: dict[str, Any] | None = None) -> pq.ParquetFile:
    """The manifest at ``path`` opened (its footer read, no rows); ``ManifestError`` if unreadable."""
    fs, fpath = open_fs(path, storage_options)
    try:
        return pq.ParquetFile(fs.open(fpath, "rb"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None


def class_names(manifest: str | os.PathLike | Any, storage_options: dict[str, Any] | None = None) -> list[str] | None:
    """The sorted class names of a manifest's ``label`` column, or None when it has none; a label's index is
    its position, as torchvision's ImageFolder numbers classes. ``manifest``: a path or URI, an open
    ``ParquetFile`` or a binary file object. Read from the footer
    (``LABELS_KEY``, written by ``manifest build`` and ``from_table``); a manifest written elsewhere with a
    ``label`` column has them computed from that column (streamed)."""
    if isinstance(manifest, (str, os.PathLike)):
        pf = open_manifest(str(manifest), storage_options)
    else:  # an open ParquetFile, or a binary file object
        pf = manifest if isinstance(manifest, pq.ParquetFile) else pq.ParquetFile(manifest)
    recorded = (pf.metadata.metadata or {}).get(LABELS_KEY)
    if recorded is not None:
        try:
            return [str(name) for name in json.loads(recorded)]
        except (ValueError, TypeError):
            pass  # a damaged key: the column says the same
    if LABEL_COLUMN not in pf.schema_arrow.names:
        return None
    names: set[str] = set()
    for batch in pf.iter_batches(batch_size=65_536, columns=[LABEL_COLUMN]):
        names.update(str(v) for v in pc.unique(pc.drop_null(batch.column(0))).to_pylist())
    return sorted(names)


def read_manifest(path: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """The manifest at ``path`` as a table; raises ``ManifestError`` if unreadable or lacking columns."""
    pf = open_manifest(path, storage_options)
    try:
        table = pf.read()
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"manifest {path} lacks column(s) {', '.join(missing)}; has {table.column_names}")
    return table


def read_uri_list(
    path: str, storage_options: dict[str, Any] | None = None, allowed_schemes: Iterable[str] = ALLOWED_SCHEMES
) -> list[str]:
    """URIs (or style specs) listed by ``path``: a Parquet manifest's ``uri`` column, or a UTF-8 text
    file with one entry a line (blank lines and ``#`` comments skipped). Raises ``ManifestError``."""
    return read_uri_column(path, storage_options, allowed_schemes)[0]


def read_uri_column(
    path: str,
    storage_options: dict[str, Any] | None = None,
    allowed_schemes: Iterable[str] = ALLOWED_SCHEMES,
    column: str | None = None,
) -> tuple[list[str], list[Any] | None]:
    """``read_uri_list``'s URIs and, for a Parquet manifest that has ``column``, that column's value beside each
    (a style manifest's ``split``); None where there is no such column (a text list has none)."""
    if str(path).endswith(".parquet"):
        table = read_manifest(path, storage_options)
        uris = table.column("uri").to_pylist()
        keep = [i for i, u in enumerate(uris) if u]
        values = table.column(column).to_pylist() if column and column in table.column_names else None
        return [str(uris[i]) for i in keep], ([values[i] for i in keep] if values is not None else None)
    from pipeline.storage import read_source

    try:
        data = read_source(path, allowed_schemes, storage_options)
        text = (gzip.decompress(data) if str(path).endswith(".gz") else data).decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is neither a .parquet manifest nor a UTF-8 list of URIs") from None
    except StorageError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")], None


def read_table_file(path: str, storage_options: dict | None, allowed: Iterable[str] = ALLOWED_SCHEMES) -> pa.Table:
    """Another tool's table: Parquet, CSV/TSV (optionally .gz; every column read as text) or a .txt list of
    URIs (one a line, as a ``uri`` column). Raises ``ManifestError``."""
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


def row_problem(image_id: object, uri: object, allowed_schemes: Iterable[str] = ALLOWED_SCHEMES) -> str | None:
    """Why one row cannot be processed, or None: what the runner records as the row's failure."""
    if image_id is None or image_id == "":
        return "missing image_id"
    problem = key_problem(image_id)
    if problem:
        return f"unsafe image_id: {problem}"
    if uri is None or uri == "":
        return "missing uri"
    if not isinstance(uri, str):
        return f"uri must be a string, got {type(uri).__name__}"
    allowed = {s.lower() for s in allowed_schemes}
    bad = [s for s in schemes_of(uri) if s not in allowed]
    if bad:
        return f"uri scheme {bad[0] or 'local'!r} not allowed"
    return None


def duplicate_ids(table: pa.Table) -> dict[str, int]:
    """``{image_id: count}`` for ids that occur more than once."""
    counts = pc.value_counts(table.column("image_id"))
    values, ns = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    return {v: n for v, n in zip(values, ns, strict=True) if n > 1 and v is not None}


def validate(table: pa.Table, allowed_schemes: Iterable[str] = ALLOWED_SCHEMES, *, limit: int = 100) -> list[str]:
    """Every problem of a manifest as one line each (at most ``limit``, then a count of the rest)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        return [f"missing column {c!r}" for c in missing]
    problems = []
    for name in REQUIRED_COLUMNS:
        typ = table.schema.field(name).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            problems.append(f"column {name!r} must hold strings, got {typ}")
    if problems:
        return problems
    total = 0
    for image_id, n in sorted(duplicate_ids(table).items()):
        total += 1
        if len(problems) < limit:
            problems.append(f"duplicate image_id {image_id!r} ({n} rows)")
    allowed = {s.lower() for s in allowed_schemes}
    ids, uris = table.column("image_id"), table.column("uri")
    step = 65_536
    for start in range(0, table.num_rows, step):
        chunk_ids = ids.slice(start, step).to_pylist()
        chunk_uris = uris.slice(start, step).to_pylist()
        for i, (image_id, uri) in enumerate(zip(chunk_ids, chunk_uris, strict=True), start):
            problem = row_problem(image_id, uri, allowed)
            if problem:
                total += 1
                if len(problems) < limit:
                    problems.append(f"row {i} ({image_id!r}): {problem}")
    if total > len(problems):
        problems.append(f"... and {total - len(problems)} more problems")
    return problems
