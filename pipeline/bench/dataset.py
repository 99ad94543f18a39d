"""Dataset generation's throughput per output format: images/s for small photos, K styles each.

``python -m pipeline.bench.dataset --photos 2000 --styles-per-image 2`` writes PHOTOS seeded 224x224
crops of scikit-image's photos as an ImageFolder tree (one class a source photo), builds its manifest
(``stylize manifest build``, with ``--label-from parent`` where this build has it), then runs the same
job (``runner.run`` on an embedded Ray, as ``stylize run`` does; the default fast model, ``dumoulin``,
with a pool of ``--pool`` styles sampled per photo, PNG, metrics off as a training set would be made) once
per output format, in turn, ``--repeats`` times, each into a fresh output. Ray is started, and a small
job run, before the clock. It prints samples/s per format (median) and its ratio to ``files``: small
photos are where the per-image cost of a format shows. ``--styles-per-image`` above 1 needs ``styles_per_image`` in the
build (the metrics rows then have a ``k`` column); otherwise the job runs with one style a photo and
says so. ``--writers-only`` times each writer alone on 1,024 incompressible 224 px PNGs (ms a sample).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("files", "webdataset", "parquet")
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def write_tree(folder: Path, n: int, side: int = 224, seed: int = 0) -> None:
    """``n`` seeded ``side`` px crops as JPEGs, ``<source name>/photo-NNNNN.jpg`` (the class is the source)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    sources = []
    for name in SOURCES:
        img = np.asarray(getattr(skimage.data, name)())
        sources.append(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])
    for i in range(n):
        c = i % len(SOURCES)
        src = sources[c]
        crop = int(rng.integers(side, min(src.shape[:2]) + 1))
        y, x = int(rng.integers(0, src.shape[0] - crop + 1)), int(rng.integers(0, src.shape[1] - crop + 1))
        image = Image.fromarray(src[y : y + crop, x : x + crop]).resize((side, side), Image.Resampling.BICUBIC)
        path = folder / SOURCES[c] / f"photo-{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)


def build(tree: Path, manifest: Path) -> bool:
    """The tree's manifest; True if it carries labels (``label_from``, where this build has it)."""
    from pipeline.manifest import build_manifest

    labels = "label_from" in inspect.signature(build_manifest).parameters
    build_manifest(str(tree), str(manifest), **({"label_from": "parent"} if labels else {}))
    return labels


def run_format(config: object) -> tuple[float, dict]:
    from pipeline import runner

    t0 = time.perf_counter()
    summary = runner.run(config)  # type: ignore[arg-type]
    return time.perf_counter() - t0, summary


def writers_only(workdir: Path, samples: int = 1024, side: int = 224, shard_rows: int = 256) -> dict[str, float]:
    """Milliseconds a sample of each writer alone (``pipeline.writers``): ``samples`` distinct PNGs of noise
    (incompressible, as photos' PNGs nearly are), put and finished in shards of ``shard_rows``, to local disk."""
    import io

    from pipeline import writers
    from pipeline.storage import Storage

    rng = np.random.default_rng(0)
    data = []
    for _ in range(samples):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        data.append(buf.getvalue())
    out: dict[str, float] = {}
    for fmt in FORMATS:
        root = workdir / f"writers-{fmt}"
        shutil.rmtree(root, ignore_errors=True)
        storage = Storage(str(root))
        t0 = time.perf_counter()
        for shard in range(0, samples, shard_rows):
            writer = writers.open_writer(fmt, storage, shard // shard_rows, 0, set())
            for i in range(shard, min(samples, shard + shard_rows)):
                image_id = f"class/photo-{i:05d}.jpg"
                writer.put(writers.Sample(image_id, None, "png", data[i], {"image_id": image_id, "k": 0}))
            writer.finish()
        out[fmt] = round((time.perf_counter() - t0) / samples * 1000, 3)
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--styles-per-image", type=int, default=2)
    parser.add_argument("--pool", type=int, default=8, help="styles in the pool (dumoulin's built-in indices)")
    parser.add_argument("--stylizer", default="dumoulin")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stylize-bench-dataset"))
    parser.add_argument("--writers-only", action="store_true", help="time the writers alone (no model, no Ray)")
    args = parser.parse_args(argv)
    if args.writers_only:
        print(json.dumps({"side": args.side, "ms_per_sample": writers_only(args.workdir, side=args.side)}))
        return

    from pipeline.config import JobConfig
    from pipeline.metrics import COLUMNS
    from pipeline.raysession import ensure_ray, exit_now

    tree = args.workdir / f"tree-{args.photos}-{args.side}"
    if not tree.exists() or sum(1 for _ in tree.rglob("*.jpg")) != args.photos:
        shutil.rmtree(tree, ignore_errors=True)
        write_tree(tree, args.photos, args.side)
    manifest = args.workdir / f"manifest-{args.photos}-{args.side}.parquet"
    labelled = build(tree, manifest)
    pool = args.workdir / "styles.txt"
    pool.write_text("".join(f"{i}\n" for i in range(args.pool)))
    k = args.styles_per_image if "k" in COLUMNS else 1

    def job(manifest: Path, output: Path, fmt: str) -> JobConfig:
        shutil.rmtree(output, ignore_errors=True)
        return JobConfig(
            manifest=str(manifest),
            output=str(output),
            stylizer=args.stylizer,
            style_manifest=str(pool),
            styles_per_image=k,
            output_format=fmt,
            format="png",
            metrics=False,
        )

    ensure_ray(None)
    warm = args.workdir / "warm"  # an untimed small job first: Ray's workers, the model's first load
    if not warm.exists():
        write_tree(warm, 32, args.side, seed=1)
    build(warm, args.workdir / "warm.parquet")
    run_format(job(args.workdir / "warm.parquet", args.workdir / "out-warm", "files"))
    seconds: dict[str, list[float]] = {f: [] for f in args.formats.split(",")}
    samples = 0
    for _ in range(args.repeats):
        for fmt in seconds:
            wall, summary = run_format(job(manifest, args.workdir / f"out-{fmt}", fmt))
            seconds[fmt].append(round(wall, 2))
            samples = int(summary["ok"])
    rates = {f: round(samples / statistics.median(s), 1) for f, s in seconds.items()}
    base = rates.get("files")
    print(
        json.dumps(
            {
                "photos": args.photos,
                "side": args.side,
                "styles_per_image": k,
                "styles_per_image_asked": args.styles_per_image,
                "labels": labelled,
                "stylizer": args.stylizer,
                "samples": samples,
                "seconds": seconds,
                "images_per_second": rates,
                "ratio_to_files": {f: round(r / base, 3) for f, r in rates.items()} if base else None,
            }
        )
    )
    exit_now(0)  # with the embedded Ray it started


if __name__ == "__main__":
    main()
