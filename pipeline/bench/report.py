"""Synthetic job outputs at any row count, and the ``stylize report`` benchmark over them.

``make_output`` writes what a finished job leaves behind (``metrics/shard-NNNNN.parquet`` in the
metrics schema, a pool of small real originals and outputs that the rows point at, ``_SUCCESS``)
without running a model, so the report can be measured at 100k rows in seconds.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import Storage

# the metrics contract (pipeline.metrics.METRICS_SCHEMA; written out here so this module needs no torch)
SCHEMA = pa.schema(
    [
        *[(c, pa.string()) for c in ("image_id", "source_uri")],
        *[(c, pa.int64()) for c in ("shard", "row")],
        *[(c, pa.string()) for c in ("status", "error", "error_kind", "failed_stage", "output_uri")],
        *[(c, pa.int64()) for c in ("width", "height", "out_width", "out_height")],
        *[(c, pa.string()) for c in ("stylizer", "style", "note")],
        *[(c, pa.float64()) for c in ("seconds_decode", "seconds_stylize", "seconds_encode", "seconds_metrics")],
        *[(c, pa.float64()) for c in ("style_distance", "content_distance", "colour_distance", "finished_at")],
    ]
)

ERRORS = (  # (weight, template, error_kind, failed_stage): realistic reasons, kinds and stages
    (0.40, "not found: /data/archive/photos/{id}.jpg", "StorageError", "read"),
    (0.25, "truncated or corrupt JPEG header ({n} bytes)", "DecodeError", "decode"),
    (0.15, "image too large: {w}x{h} = {wh} pixels > max_pixels 50000000", "InputError", "decode"),
    (0.12, "RuntimeError: CUDA out of memory. Tried to allocate {n} MiB", "RuntimeError", "stylize"),
    (0.08, "crashed the worker 3 times; gave up (max_retries=2)", "WorkerCrashed", "stylize"),
)
SIZES = ((1024, 683), (683, 1024), (1200, 800), (800, 600), (4000, 3000), (640, 480))


Pool = list[tuple[str, str, str]]  # (source URI, output URI, style) that rows point at


def _jpeg(picture: Any) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _pool_images(storage: Storage, count: int, seed: int) -> Pool:
    """``count`` small JPEG originals under ``sources/`` and their "stylized" outputs under ``images/``."""
    from PIL import Image, ImageFilter, ImageOps

    rng = np.random.default_rng(seed)
    pool: Pool = []
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(count):
        c = rng.integers(0, 256, size=(2, 3))
        t = (xx / 320.0)[..., None] if i % 2 else (yy / 240.0)[..., None]
        base = (c[0] * (1 - t) + c[1] * t + rng.normal(0, 12, size=(240, 320, 3))).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(base)
        out = ImageOps.posterize(img.filter(ImageFilter.SMOOTH_MORE), 3)
        source = storage.put(f"sources/pool-{i:03d}.jpg", _jpeg(img))
        pool.append((source, storage.put(f"images/pool-{i:03d}.jpg", _jpeg(out)), str(i % 26)))
    return pool


FILTERS = ("posterize", "contour", "emboss", "solarize", "sepia", "edges")


def demo_pool(storage: Storage, count: int, seed: int = 0) -> Pool:
    """``count`` different photos (random crops of scikit-image's samples, 256 px) and Pillow-filtered
    "outputs": a real-looking output to screenshot the report with, no stylizer needed."""
    from PIL import Image, ImageFilter, ImageOps
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera",
             "coins", "brick", "grass", "gravel", "moon")  # fmt: skip
    photos = []
    for name in names:
        array = getattr(data, name)()
        photos.append(Image.fromarray(array if array.ndim == 3 else array[..., None].repeat(3, -1)).convert("RGB"))
    rng = np.random.default_rng(seed)
    pool: Pool = []
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        w = int(rng.integers(photo.width // 3, photo.width + 1))
        h = min(photo.height, int(w * rng.choice([0.66, 0.75, 1.0, 1.33])))
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        img = photo.crop((x, y, x + w, y + h))
        img.thumbnail((256, 256))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        kind = FILTERS[i % len(FILTERS)]
        if kind == "posterize":
            out = ImageOps.posterize(img.filter(ImageFilter.ModeFilter(5)), 2)
        elif kind == "contour":
            out = Image.blend(img, img.filter(ImageFilter.CONTOUR), 0.6)
        elif kind == "emboss":
            out = ImageOps.colorize(img.filter(ImageFilter.EMBOSS).convert("L"), "#203060", "#f0c040")
        elif kind == "solarize":
            out = ImageOps.solarize(img, 110)
        elif kind == "sepia":
            out = ImageOps.colorize(ImageOps.equalize(img).convert("L"), "#3b1f0b", "#fbe3b0")
        else:
            out = ImageOps.invert(img.filter(ImageFilter.FIND_EDGES).filter(ImageFilter.MaxFilter(3)))
        source = storage.put(f"sources/photo-{i:05d}.jpg", _jpeg(img))
        pool.append((source, storage.put(f"images/photo-{i:05d}.jpg", _jpeg(out)), kind))
    return pool


def make_output(
    root: str | Path,
    rows: int = 100_000,
    *,
    shards: int = 10,
    images: int = 16,
    pool: Pool | None = None,
    failed_fraction: float = 0.05,
    missing_fraction: float = 0.0,
    rate: float = 40.0,
    seed: int = 0,
) -> Storage:
    """A finished job's OUTPUT with ``rows`` metric rows over ``shards`` files; ok rows point at a pool of
    ``images`` real originals/outputs, or at ``pool`` (a ``missing_fraction`` at outputs that do not exist),
    finishing at ``rate`` images/s on average."""
    storage = Storage(str(root))
    rng = np.random.default_rng(seed)
    pool = pool if pool is not None else _pool_images(storage, images, seed)
    ids = [f"img-{i:07d}" for i in range(rows)]
    failed = rng.random(rows) < failed_fraction
    size = rng.integers(0, len(SIZES), rows)
    width = np.array([SIZES[s][0] for s in size], dtype=np.int64)
    height = np.array([SIZES[s][1] for s in size], dtype=np.int64)
    scale = np.minimum(1.0, 1024 / np.maximum(width, height))
    slot = np.arange(rows) % max(len(pool), 1)
    missing = rng.random(rows) < missing_fraction

    kinds = rng.choice(len(ERRORS), size=rows, p=[e[0] for e in ERRORS])
    error: list[str | None] = [None] * rows
    error_kind: list[str | None] = [None] * rows
    failed_stage: list[str | None] = [None] * rows
    for i in np.flatnonzero(failed):
        _, template, error_kind[i], failed_stage[i] = ERRORS[kinds[i]]
        w, h = int(width[i]) * 8, int(height[i]) * 8
        error[i] = template.format(id=ids[i], n=int(rng.integers(10, 5000)), w=w, h=h, wh=w * h, s=rng.random() * 60)

    def ok_only(values: np.ndarray) -> pa.Array:
        return pa.array(values, mask=failed)

    stylize_s = rng.lognormal(np.log(0.08), 0.35, rows) * scale**2 * 4
    t0 = 1_790_000_000.0
    gaps = rng.gamma(4.0, 1.0, rows) * (1.3 + 0.5 * np.sin(np.linspace(0.0, 7.0, rows)))  # a rate that varies
    finished = t0 + gaps.cumsum() / gaps.mean() / rate if rows else np.zeros(0)
    note = np.where(rng.random(rows) < 0.02, "exif orientation 6 applied", None)
    columns: dict[str, Any] = {
        "image_id": ids,
        "source_uri": [pool[p][0] if pool else f"/nowhere/{p}.jpg" for p in slot],
        "shard": np.arange(rows) * shards // max(rows, 1),
        "row": np.arange(rows),
        "status": np.where(failed, "failed", "ok"),
        "error": error,
        "error_kind": error_kind,
        "failed_stage": failed_stage,
        "output_uri": pa.array(
            [
                f"{storage.uri('images')}/gone-{i}.jpg" if missing[i] or not pool else pool[p][1]
                for i, p in enumerate(slot)
            ],
            mask=failed,
        ),
        "width": width,
        "height": height,
        "out_width": ok_only(np.round(width * scale).astype(np.int64)),
        "out_height": ok_only(np.round(height * scale).astype(np.int64)),
        "stylizer": ["dumoulin"] * rows,
        "style": [pool[p][2] if pool else "0" for p in slot],
        "note": note,
        "seconds_decode": ok_only(rng.lognormal(np.log(0.01), 0.5, rows) * (width * height / 7e5)),
        "seconds_stylize": ok_only(stylize_s),
        "seconds_encode": ok_only(rng.lognormal(np.log(0.006), 0.4, rows)),
        "seconds_metrics": ok_only(rng.lognormal(np.log(0.004), 0.3, rows)),
        "style_distance": ok_only(rng.normal(0.35, 0.06, rows).clip(0.05)),
        "content_distance": ok_only(rng.normal(0.9, 0.05, rows).clip(0.3)),
        "colour_distance": ok_only(rng.gamma(2.0, 0.04, rows)),
        "finished_at": finished,
    }
    table = pa.table({f.name: pa.array(columns[f.name], type=f.type) for f in SCHEMA}, schema=SCHEMA)
    bounds = np.searchsorted(table.column("shard").to_numpy(), np.arange(shards + 1))
    for s in range(shards):
        buf = io.BytesIO()
        pq.write_table(table.slice(bounds[s], bounds[s + 1] - bounds[s]), buf)
        storage.put(f"metrics/shard-{s:05d}.parquet", buf.getvalue())
    n_failed = int(failed.sum())
    summary = {
        "rows": rows,
        "ok": rows - n_failed,
        "failed": n_failed,
        "processed_this_run": rows,
        "wall_seconds": round(float(finished[-1] - t0) + 12.0, 3) if rows else 0.0,  # + start-up
        "images_per_second": round(rows / (float(finished[-1] - t0) + 12.0), 4) if rows else None,
        "batch_fill": 0.91,
        "finished_at": float(finished[-1]) if rows else t0,
        "config": {"stylizer": "dumoulin", "output": storage.root_uri, "batch_size": 8},
        "versions": {},
    }
    storage.put("_SUCCESS", json.dumps(summary, indent=2).encode())
    return storage


def make_demo_output(root: str | Path, rows: int = 2_000) -> Storage:
    """The README's report picture: ``rows`` synthetic metric rows, each ok row with its own photo crop and
    a Pillow-filtered "output" (about 20 s for 2,000 rows). Screenshot OUTPUT/report.html after ``stylize report``."""
    pool = demo_pool(Storage(str(root)), rows)
    return make_output(root, rows, shards=8, pool=pool, failed_fraction=0.04, seed=1)


def bench_report(rows: int = 100_000, *, shards: int = 10, sample: int = 24, cli: bool = True) -> dict[str, Any]:
    """Time ``stylize report`` on a synthetic output of ``rows`` rows: in process, and (``cli``) as a fresh
    ``stylize report`` process, imports included. Returns seconds and the page's size in bytes."""
    from pipeline.report import REPORT_KEY, write_report

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        start = time.perf_counter()
        storage = make_output(Path(tmp) / "out", rows, shards=shards)
        made = time.perf_counter() - start
        start = time.perf_counter()
        write_report(storage, sample=sample)
        seconds = time.perf_counter() - start
        result: dict[str, Any] = {
            "rows": rows,
            "shards": shards,
            "sample": sample,
            "seconds": round(seconds, 3),
            "html_bytes": len(storage.get(REPORT_KEY)),
            "make_output_seconds": round(made, 3),
        }
        if cli:
            code = "import sys; from pipeline.cli import main; sys.argv = ['stylize', *sys.argv[1:]]; main()"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code, "report", storage.root_uri, "--sample", str(sample)],
                check=True,
                capture_output=True,
            )
            result["cli_seconds"] = round(time.perf_counter() - start, 3)
    return result


if __name__ == "__main__":  # python -m pipeline.bench.report [ROWS] | python -m pipeline.bench.report demo DIR
    if sys.argv[1:2] == ["demo"]:
        print(make_demo_output(sys.argv[2]).root_uri)
    else:
        print(json.dumps(bench_report(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), indent=2))
