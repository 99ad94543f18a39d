"""The framework's own cost: ``stylize run`` over many tiny photos, where the model costs almost nothing.

``python -m pipeline.bench.framework --images 12000`` writes IMAGES 16x16 PNGs and their manifest,
then times the whole ``stylize run`` command (process start to exit; dumoulin, metrics off,
batch_size 16) and prints images/s over that wall time, plus the run's own summary numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_tiny(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"t{i:05d}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stylize-bench-framework"))
    parser.add_argument("--set", action="append", default=[], help="extra --set key=value for the run")
    args = parser.parse_args(argv)
    photos, manifest = args.workdir / f"photos-{args.images}", args.workdir / f"manifest-{args.images}.parquet"
    stylize = str(Path(sys.executable).parent / "stylize")
    if not manifest.exists():
        write_tiny(photos, args.images)
        subprocess.run(
            [stylize, "manifest", "build", str(photos), "--out", str(manifest)], check=True, capture_output=True
        )
    output = args.workdir / "out"
    shutil.rmtree(output, ignore_errors=True)
    sets = ["metrics=false", f"batch_size={args.batch_size}", "format=png", *args.set]
    cmd = [
        stylize,
        "run",
        "--manifest",
        str(manifest),
        "--output",
        str(output),
        "--stylizer",
        "dumoulin",
        "--style",
        "7",
    ] + [x for s in sets for x in ("--set", s)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr.strip()[-800:])
    summary = json.loads((output / "_SUCCESS").read_text())
    print(
        json.dumps(
            {
                "images": args.images,
                "command_wall_s": round(wall, 2),
                "command_images_per_s": round(args.images / wall, 1),
                "run_wall_s": summary["wall_seconds"],
                "run_images_per_s": summary["images_per_second"],
                "batch_fill": summary.get("batch_fill"),
                "sets": sets,
            }
        )
    )


if __name__ == "__main__":
    main()
