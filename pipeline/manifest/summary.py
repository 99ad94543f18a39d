"""``manifest inspect``: a summary of a manifest (rows, bytes, extensions, sizes, dimensions, problems)."""

from __future__ import annotations

import collections
import posixpath
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow.compute as pc
from fsspec.core import split_protocol

from pipeline.manifest.read import read_manifest, validate
from pipeline.storage import ALLOWED_SCHEMES, schemes_of


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
