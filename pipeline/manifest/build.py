"""``manifest build``: walk a source folder (local or fsspec URI), probe headers, write a manifest.

It streams: the source is walked folder by folder, headers are probed in a small thread pool and
a Parquet row group is written every ``batch_rows`` rows, so memory does not grow with the archive.
Hidden files and folders (``.name``, e.g. macOS ``._IMG.jpg`` sidecars that carry an image
extension but no image) and symlinked folders are skipped.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.codec import probe
from pipeline.errors import DecodeError, ManifestError, StorageError
from pipeline.manifest.footer import FooterDigest, labels_metadata, local_output
from pipeline.manifest.hashing import hash64
from pipeline.manifest.ids import make_image_id
from pipeline.manifest.labels import Labeler
from pipeline.manifest.schema import (
    LABEL_COLUMN,
    MEDIA_EXTENSIONS,
    PROBE_BYTES,
    PROBE_RETRY_BYTES,
    SCHEMA,
    VIDEO_COLUMNS,
    VIDEOS_KEY,
    ManifestStats,
)
from pipeline.media.video import is_video
from pipeline.storage import ALLOWED_SCHEMES, check_scheme, is_local, open_fs


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
    label_from: str | None = None,
    labels: dict[str, str] | None = None,
) -> ManifestStats:
    """List ``src`` (folder or fsspec URI) recursively into a Parquet manifest at ``out``.

    ``progress(listed)`` is called for every file listed. ``label_from`` (``parent`` | ``top``) or
    ``labels`` (``{image_id: label}``, ``labels.read_labels``) add a ``label`` column and the class names
    to the footer (``pipeline.manifest.labels``). Raises ``ManifestError`` when the
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
    labeler = Labeler(label_from, labels)
    schema = SCHEMA.append(pa.field(LABEL_COLUMN, pa.string())) if labeler.active else SCHEMA
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
        extra = {LABEL_COLUMN: labeler(ids, rel)} if labeler.active else {}
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
                **extra,
            },
            schema=schema,
        )

    digest, seen = FooterDigest(), []
    with ThreadPoolExecutor(max_workers=max(1, probe_workers)) as pool, local_output(out, storage_options) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
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
                    writer.write_table(_digested(to_table(batch), digest, seen))
                    batch = []
            if batch:
                writer.write_table(_digested(to_table(batch), digest, seen))
            meta = digest.metadata(_unique(seen))
            if labeler.active:
                meta.update(labels_metadata(labeler.names))
            writer.add_key_value_metadata({**meta, VIDEOS_KEY: json.dumps(videos).encode()})
        if stats.rows == 0:
            raise ManifestError(
                f"no images under {src}: listed {stats.listed} files, none with {', '.join(sorted(exts))}"
            )
    stats.unreadable_dirs = len(errors)
    stats.unlabeled, stats.classes = (labeler.unlabeled, len(labeler.names)) if labeler.active else (0, 0)
    stats.seconds = time.perf_counter() - t0
    return stats


def _digested(table: pa.Table, digest: FooterDigest, seen: list[np.ndarray]) -> pa.Table:
    """Feed a written batch to the manifest's footer digests and duplicate check (8 bytes an id)."""
    digest.update(table)
    seen.append(hash64(table.column("image_id")))
    return table


def _unique(seen: list[np.ndarray]) -> bool:
    """No two ids hash alike, so none repeats; on a (rare) equal hash the footer says "not checked" and
    planning checks the strings."""
    hashes = np.sort(np.concatenate(seen)) if seen else np.zeros(0, np.uint64)
    return not bool((hashes[1:] == hashes[:-1]).any())
