"""Parquet manifests: one row per source image, the unit of work of a batch job.

Schema (``SCHEMA``; ``from_table`` keeps any extra columns after these)::

    image_id    string    stable id, safe as a storage key (see make_image_id)
    uri         string    where the worker reads the image (local path, s3://, gs://)
    size_bytes  int64     null when unknown (from_table without a size column)
    width       int32     from the header (codec.probe), null when unknown
    height      int32
    mtime       timestamp[us, UTC]   when the filesystem reports it
    etag        string    S3/GCS ETag when the store reports it
    media_type  string    "image" or "video" (by extension)
    duration    float64   videos: seconds, from the container header (null for images)
    fps         float64   videos: frames per second (frame_rate holds it exactly, e.g. "30000/1001")
    frame_rate  string
    frames      int64     videos: frame count declared by the header
    has_audio   bool      videos: whether there is an audio stream

The video columns were added later: manifests without them still work (their videos are then processed
whole, never cut into segments). ``build_manifest`` also stores ``[row, frames]`` of every probed video
in the footer (``VIDEOS_KEY``), so planning can cut long videos into segments without reading rows.

``build_manifest`` streams: it walks the source folder by folder, probes headers in a small
thread pool and writes a Parquet row group every ``batch_rows`` rows, so memory does not grow
with the archive. Hidden files and folders (``.name``, e.g. macOS ``._IMG.jpg`` sidecars that
carry an image extension but no image) and symlinked folders are skipped.

Bad rows do not fail a manifest: ``validate`` lists them and the runner marks each failed
(``row_problem``). Missing columns are the only fatal problem.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import hashlib
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import split_protocol

from pipeline.codec import probe
from pipeline.errors import DecodeError, ManifestError, StorageError
from pipeline.media.video import VIDEO_EXTENSIONS, is_video
from pipeline.storage import ALLOWED_SCHEMES, check_scheme, is_local, key_problem, open_fs, schemes_of

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MEDIA_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
REQUIRED_COLUMNS = ("image_id", "uri")
SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("etag", pa.string()),
        ("media_type", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("frame_rate", pa.string()),
        ("frames", pa.int64()),
        ("has_audio", pa.bool_()),
    ]
)
PROBE_BYTES = 64 * 1024
PROBE_RETRY_BYTES = 1024 * 1024  # JPEGs with big EXIF/XMP/ICC blocks put their size marker later
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SEGMENT = 120
FINGERPRINT_KEY = b"stylize.fingerprint"
VIDEO_COLUMNS = ("duration", "fps", "frame_rate", "frames", "has_audio")
VIDEOS_KEY = b"stylize.videos"  # JSON [[row, frames], ...] of the probed videos
UNIQUE_IDS_KEY = b"stylize.unique_ids"  # "true" when manifest build checked that no image_id repeats
_MAX_ID = 600  # leaves room under S3's 1024-byte keys for an output prefix and suffix


@dataclass
class ManifestStats:
    """What a manifest build did; ``problems`` are ``validate`` messages (capped)."""

    out: str
    rows: int = 0
    total_bytes: int = 0
    listed: int = 0
    skipped: int = 0
    unprobed: int = 0
    renamed_ids: int = 0
    unreadable_dirs: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


# -- ids -----------------------------------------------------------------------------------------


def make_image_id(rel_path: str) -> str:
    """A stable, storage-safe id for a path relative to the source root.

    Safe paths are kept as they are (``2020/trip/IMG_0001.JPG``). Otherwise every character
    outside ``[A-Za-z0-9._-]`` becomes ``_``, ``.``/``..``/empty segments become ``_``, long
    segments are cut, and ``~`` plus 8 hex digits of the SHA-1 of the original path is appended
    (``2020/my photo.jpg`` -> ``2020/my_photo.jpg~3f2a...``). ``~`` never survives the cleaning,
    so a changed id can never equal an unchanged one.
    """
    original = str(rel_path)
    segments = original.split("/")
    cleaned = []
    for seg in segments:
        new = _ID_CHARS.sub("_", seg)
        if new in ("", ".", ".."):
            new = "_"
        cleaned.append(new[:_MAX_SEGMENT])
    # keep the most specific part (the file name) when the whole path is too long
    while len(cleaned) > 1 and len("/".join(cleaned)) > _MAX_ID:
        cleaned.pop(0)
    image_id = "/".join(cleaned)
    if image_id != original:
        digest = hashlib.sha1(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        image_id = f"{image_id}~{digest}"
    return image_id


def id_from_uri(uri: str) -> str:
    """``make_image_id`` of the URI's path without scheme (``s3://b/a/x.jpg`` -> ``b/a/x.jpg``)."""
    _, path = split_protocol(str(uri).split("::")[-1])
    return make_image_id(path.lstrip("/"))


# -- build ---------------------------------------------------------------------------------------


def _walk_files(fs, root: str, errors: list[OSError]) -> Iterator[tuple[str, dict]]:
    """``(path, info)`` of every file under ``root``, folder by folder, in sorted order."""
    for _dirpath, dirs, files in fs.walk(root, detail=True, topdown=True, on_error=errors.append):
        keep = sorted(n for n, info in dirs.items() if not n.startswith(".") and not info.get("islink"))
        kept = {n: dirs[n] for n in keep}
        dirs.clear()
        dirs.update(kept)  # walk recurses into what is left, in this order
        for name in sorted(files):
            yield files[name]["name"], files[name]


def _mtime(info: dict) -> datetime | None:
    value = info.get("mtime", info.get("LastModified", info.get("updated", info.get("last_modified"))))
    try:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _etag(info: dict) -> str | None:
    value = info.get("ETag", info.get("etag", info.get("md5Hash")))
    return str(value).strip('"') if value else None


def _probe_file(fs, path: str, size: int) -> tuple[int, int] | None:
    """Width and height from the first bytes of a file, or None."""
    for limit in (PROBE_BYTES, PROBE_RETRY_BYTES):
        try:
            head = fs.cat_file(path, start=0, end=min(size, limit)) if size else b""
            w, h, _ = probe(head)
            return w, h
        except DecodeError:
            if size <= limit:
                return None
        except (OSError, ValueError):
            return None
    return None


def _probe_video(fs, path: str, local: bool) -> dict[str, Any] | None:
    """The video columns from the container header (local path, or range reads through fsspec), or None."""
    from pipeline.media.video import probe_video

    try:
        if local:
            info = probe_video(path)
        else:
            with fs.open(path, "rb") as f:
                info = probe_video(f)
    except (DecodeError, OSError, ValueError):
        return None
    return {
        "width": info.width,
        "height": info.height,
        "duration": info.duration,
        "fps": float(info.rate),
        "frame_rate": info.frame_rate,
        "frames": info.frames,
        "has_audio": info.has_audio,
    }


@contextlib.contextmanager
def _local_output(out: str, storage_options: dict | None) -> Iterator[str]:
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


def build_manifest(
    src: str,
    out: str,
    *,
    extensions: Iterable[str] = MEDIA_EXTENSIONS,
    probe_size: bool = True,
    batch_rows: int = 10_000,
    allowed_schemes: Iterable[str] = ALLOWED_SCHEMES,
    storage_options: dict[str, Any] | None = None,
    probe_workers: int = 8,
    progress: Callable[[int], None] | None = None,
) -> ManifestStats:
    """List ``src`` (folder or fsspec URI) recursively into a Parquet manifest at ``out``.

    ``progress(listed)`` is called for every file listed. Raises ``ManifestError`` when the
    source is missing or holds no images; ``out`` is only written on success.
    """
    t0 = time.perf_counter()
    if batch_rows < 1:
        raise ManifestError(f"batch_rows must be >= 1, got {batch_rows}")
    allowed = set(allowed_schemes)
    try:
        check_scheme(src, allowed)
        check_scheme(out, allowed)
    except StorageError as exc:
        raise ManifestError(str(exc)) from None
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    fs, root = open_fs(src, storage_options)
    root = root.rstrip("/")
    try:
        is_dir = fs.isdir(root)
    except OSError as exc:
        raise ManifestError(f"cannot list {src}: {type(exc).__name__}: {exc}") from None
    if not is_dir:
        hint = "; for a list of URIs use from_table (--from-table)" if fs.exists(root) else ""
        raise ManifestError(f"source folder not found: {src}{hint}")
    local = is_local(fs)
    stats = ManifestStats(out=out)
    errors: list[OSError] = []

    videos: list[list[int]] = []  # [row, frames] for the footer

    def to_table(batch: list[tuple[str, dict]]) -> pa.Table:
        sizes = [int(info.get("size") or 0) for _, info in batch]
        paths = [path for path, _ in batch]
        kinds = ["video" if is_video(p) else "image" for p in paths]
        image_paths = [p if k == "image" else None for p, k in zip(paths, kinds, strict=True)]
        probe = lambda p, n: _probe_file(fs, p, n) if p else None  # noqa: E731
        dims = list(pool.map(probe, image_paths, sizes)) if probe_size else [None] * len(batch)
        found = [p if k == "video" else None for p, k in zip(paths, kinds, strict=True)]
        video_cols = [None] * len(batch)
        if probe_size:
            video_cols = list(pool.map(lambda p: _probe_video(fs, p, local) if p else None, found))
        for i, (kind, cols) in enumerate(zip(kinds, video_cols, strict=True)):
            if cols:
                dims[i] = (cols["width"], cols["height"])
                videos.append([stats.rows + i, int(cols["frames"])])
            elif kind == "video":
                dims[i] = None
        rel = [path[len(root) + 1 :] for path, _ in batch]
        ids = [make_image_id(r) for r in rel]
        stats.renamed_ids += sum(i != r for i, r in zip(ids, rel, strict=True))
        stats.unprobed += sum(d is None for d in dims) if probe_size else 0
        stats.rows += len(batch)
        stats.total_bytes += sum(sizes)
        return pa.Table.from_pydict(
            {
                "image_id": ids,
                "uri": [path if local else fs.unstrip_protocol(path) for path, _ in batch],
                "size_bytes": sizes,
                "width": [d[0] if d else None for d in dims],
                "height": [d[1] if d else None for d in dims],
                "mtime": [_mtime(info) for _, info in batch],
                "etag": [_etag(info) for _, info in batch],
                "media_type": kinds,
                **{k: [c[k] if c else None for c in video_cols] for k in VIDEO_COLUMNS},
            },
            schema=SCHEMA,
        )

    fingerprint, seen = Fingerprint(), set()
    with ThreadPoolExecutor(max_workers=max(1, probe_workers)) as pool, _local_output(out, storage_options) as tmp:
        with pq.ParquetWriter(tmp, SCHEMA) as writer:
            batch: list[tuple[str, dict]] = []
            for path, info in _walk_files(fs, root, errors):
                stats.listed += 1
                if progress:
                    progress(stats.listed)
                name = posixpath.basename(path)
                if (
                    info.get("type") != "file"
                    or name.startswith(".")
                    or posixpath.splitext(name)[1].lower() not in exts
                    or not path.startswith(root + "/")
                ):
                    stats.skipped += 1
                    continue
                batch.append((path, info))
                if len(batch) >= batch_rows:
                    writer.write_table(_fingerprinted(to_table(batch), fingerprint, seen))
                    batch = []
            if batch:
                writer.write_table(_fingerprinted(to_table(batch), fingerprint, seen))
            meta = manifest_metadata(fingerprint.hexdigest(), len(seen) == stats.rows)
            writer.add_key_value_metadata({**meta, VIDEOS_KEY: json.dumps(videos).encode()})
        if stats.rows == 0:
            raise ManifestError(
                f"no images under {src}: listed {stats.listed} files, none with {', '.join(sorted(exts))}"
            )
    stats.unreadable_dirs = len(errors)
    stats.seconds = time.perf_counter() - t0
    return stats


class Fingerprint:
    """sha256 over the (image_id, uri) rows, independent of how the rows are chunked."""

    def __init__(self) -> None:
        self._data = hashlib.sha256()
        self._lengths = hashlib.sha256()

    def update(self, ids: pa.Array | pa.ChunkedArray, uris: pa.Array | pa.ChunkedArray) -> None:
        joined = pc.binary_join_element_wise(pc.cast(ids, pa.string()), pc.cast(uris, pa.string()), "\x00")
        chunks = joined.chunks if isinstance(joined, pa.ChunkedArray) else [joined]
        for chunk in chunks:
            if chunk.null_count:
                chunk = pc.fill_null(chunk, "")
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
            self._lengths.update(np.diff(offsets).astype("<i8").tobytes())
            self._data.update(memoryview(chunk.buffers()[2])[offsets[0] : offsets[-1]])

    def hexdigest(self) -> str:
        return hashlib.sha256(self._data.digest() + self._lengths.digest()).hexdigest()


def manifest_metadata(table_fingerprint: str, unique_ids: bool) -> dict[bytes, bytes]:
    """What ``manifest build`` stores in the Parquet footer so planning reads no rows."""
    return {FINGERPRINT_KEY: table_fingerprint.encode(), UNIQUE_IDS_KEY: b"true" if unique_ids else b"false"}


def _fingerprinted(table: pa.Table, fingerprint: Fingerprint, seen: set[str]) -> pa.Table:
    """Feed a written batch to the manifest's fingerprint and duplicate check (stored in its footer)."""
    fingerprint.update(table.column("image_id"), table.column("uri"))
    seen.update(table.column("image_id").to_pylist())
    return table


def write_table(table: pa.Table, path: str, *, row_group_size: int = 65_536) -> None:
    """Write a manifest table with its fingerprint and duplicate check in the footer (what planning reads)."""
    fingerprint = Fingerprint()
    fingerprint.update(table.column("image_id"), table.column("uri"))
    unique = pc.count_distinct(table.column("image_id"), mode="all").as_py() == table.num_rows
    meta = {k.decode(): v.decode() for k, v in manifest_metadata(fingerprint.hexdigest(), unique).items()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with pq.ParquetWriter(path, table.schema) as writer:
        writer.write_table(table, row_group_size=row_group_size)
        writer.add_key_value_metadata(meta)


# -- from an existing table ----------------------------------------------------------------------


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
    with _local_output(out, storage_options) as tmp:
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


# -- read / check --------------------------------------------------------------------------------


def open_manifest(path: str, storage_options: dict[str, Any] | None = None) -> pq.ParquetFile:
    """The manifest at ``path`` opened (its footer read, no rows); ``ManifestError`` if unreadable."""
    fs, fpath = open_fs(path, storage_options)
    try:
        return pq.ParquetFile(fs.open(fpath, "rb"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {type(exc).__name__}: {exc}") from None


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
    if str(path).endswith(".parquet"):
        return [str(u) for u in read_manifest(path, storage_options).column("uri").to_pylist() if u]
    from pipeline.storage import read_source

    try:
        data = read_source(path, allowed_schemes, storage_options)
        text = (gzip.decompress(data) if str(path).endswith(".gz") else data).decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path} is neither a .parquet manifest nor a UTF-8 list of URIs") from None
    except StorageError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


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


def _extension(uri: str | None) -> str:
    if not uri:
        return ""
    path = split_protocol(uri.split("::")[-1])[1]
    return posixpath.splitext(path)[1].lower()


def inspect(path: str, allowed_schemes: Iterable[str] = ALLOWED_SCHEMES, storage_options: dict | None = None) -> dict:
    """A summary of a manifest: rows, bytes, extensions, size distribution, dimensions, problems."""
    table = read_manifest(path, storage_options)
    uris = table.column("uri").to_pylist()
    summary: dict[str, Any] = {
        "path": path,
        "rows": table.num_rows,
        "columns": table.column_names,
        "extensions": dict(collections.Counter(_extension(u) for u in uris).most_common()),
        "schemes": dict(collections.Counter((schemes_of(u)[-1] or "local") if u else "" for u in uris).most_common()),
    }
    if "size_bytes" in table.column_names:
        sizes = np.array(pc.drop_null(table.column("size_bytes")).to_pylist(), dtype=np.int64)
        summary["total_bytes"] = int(sizes.sum())
        summary["size_bytes"] = {"unknown": table.num_rows - len(sizes)}
        if len(sizes):
            q = np.percentile(sizes, [0, 50, 90, 99, 100])
            summary["size_bytes"].update(
                dict(zip(("min", "p50", "p90", "p99", "max"), (int(v) for v in q), strict=True))
            )
    if {"width", "height"} <= set(table.column_names):
        known = pc.and_(pc.is_valid(table.column("width")), pc.is_valid(table.column("height")))
        w = np.array(pc.filter(table.column("width"), known).to_pylist(), dtype=np.int64)
        h = np.array(pc.filter(table.column("height"), known).to_pylist(), dtype=np.int64)
        summary["dimensions"] = {"known": len(w)}
        if len(w):
            mp = w * h / 1e6
            summary["dimensions"].update(
                {"median_megapixels": round(float(np.median(mp)), 3), "max_megapixels": round(float(mp.max()), 3)}
            )
    summary["problems"] = validate(table, allowed_schemes)
    return summary
