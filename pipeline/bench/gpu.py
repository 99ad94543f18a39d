"""The GPU run, ready to go: one command that prints what a GPU does with every stylizer and a whole job.

``python -m pipeline.bench.gpu`` (or ``stylize bench gpu``) prints one JSON object per line:

- ``env``: torch, CUDA, the GPU's name and memory (every later line carries the GPU's name too);
- ``model``: images/s per stylizer at 512 and 1024 px (the network at that size, weights loaded once;
  families without weights here run with random weights of their published architecture, labelled),
  in fp32, bf16 autocast, channels-last, channels-last + bf16, and ``torch.compile`` (inductor) where
  the time budget allows, with its first call's seconds;
- ``decode``: JPEG decoding of 1024x683 photos, Pillow on the CPU threads against ``torchvision.io.decode_jpeg``
  on the GPU (batched), images/s;
- ``job``: one whole batch job (manifest, embedded Ray, GPU actors, PNG out, metrics on) over generated
  photos of an archive's sizes, images/s and batch fill.

Everything runs within ``--budget`` seconds (default 420, so the command ends inside 8 minutes with its
start-up); a row that would pass the budget prints as skipped. Without a GPU the same code runs as a
smoke test on the CPU at 64 px (rows marked ``"smoke": true``, not figures) and the job is skipped,
so CI keeps this command working for whoever has a GPU next.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

STYLIZERS = ("dumoulin", "ghiasi", "johnson", "adain", "wct", "sanet", "cyclegan", "animegan")
MODES = ("fp32", "bf16", "channels-last", "channels-last+bf16", "compile+bf16")
JOB_SIZES = [(1024, 683), (683, 1024), (640, 480), (1200, 800), (4032, 3024), (256, 256), (517, 333)]


class Budget:
    """Seconds left for the whole command; a step that does not fit is reported as skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def emit(kind: str, gpu: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, "gpu": gpu, **fields}), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(fn: Callable[[], object], batch: int, device: torch.device, *, seconds: float = 1.5) -> float:
    """Median images/s over timed rounds after two warm-up calls; rounds stop after ``seconds``."""
    fn()
    fn()
    _sync(device)
    rates = []
    started = time.perf_counter()
    while len(rates) < 3 or (time.perf_counter() - started < seconds and len(rates) < 30):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        rates.append(batch / (time.perf_counter() - t0))
    return round(statistics.median(rates), 2)


def model_rows(device: torch.device, gpu: str, budget: Budget, sizes: list[int], smoke: bool, names: list[str]) -> None:
    from pipeline.bench.models import bench_image, default_styles, load_for_bench, random_init

    for name in names:
        try:
            model, weights = load_for_bench(name, device, random_init)
        except Exception as exc:  # noqa: BLE001 - a family that cannot load here is a row, not the end of the run
            emit("model", gpu, stylizer=name, skipped=f"{type(exc).__name__}: {exc}"[:200])
            continue
        styles = default_styles(model)
        for size in sizes:
            batch = 2 if smoke else (8 if size <= 512 else 4)
            content = bench_image(size, batch).to(device)
            for mode in MODES:
                row = {"stylizer": name, "size": size, "batch": batch, "mode": mode, "weights": weights}
                if smoke:
                    row["smoke"] = True
                if budget.left() < (60 if mode.startswith("compile") else 10):
                    emit("model", gpu, **row, skipped="time budget")
                    continue
                if mode.startswith("compile") and smoke:
                    emit("model", gpu, **row, skipped="torch.compile is timed on a GPU only")
                    continue
                try:
                    emit("model", gpu, **row, **_time_mode(model, content, styles, mode, device))
                except Exception as exc:  # noqa: BLE001
                    emit("model", gpu, **row, skipped=f"{type(exc).__name__}: {exc}"[:200])
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _time_mode(model: Any, content: torch.Tensor, styles: list, mode: str, device: torch.device) -> dict[str, Any]:
    x = content.contiguous(memory_format=torch.channels_last) if "channels-last" in mode else content
    net = model
    extra: dict[str, Any] = {}
    if "channels-last" in mode:
        net = model.to(memory_format=torch.channels_last)
    if mode.startswith("compile"):
        net = torch.compile(model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in mode else nullcontext()
    with torch.inference_mode(), autocast:
        if mode.startswith("compile"):
            t0 = time.perf_counter()
            net(x, styles)
            _sync(device)
            extra["first_call_s"] = round(time.perf_counter() - t0, 1)
        rate = images_per_s(lambda: net(x, styles), x.shape[0], device)
    if "channels-last" in mode:
        model.to(memory_format=torch.contiguous_format)
    return {"images_per_s": rate, **extra}


def _jpegs(count: int) -> list[bytes]:
    from PIL import Image

    from pipeline.bench.models import bench_image

    photo = (bench_image(1024)[0, :, :683].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(np.roll(photo, i * 7, axis=1)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_rows(device: torch.device, gpu: str, budget: Budget, smoke: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.codec import decode_image

    data = _jpegs(4 if smoke else 64)
    cpu = torch.device("cpu")
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        rate = images_per_s(lambda: list(pool.map(decode_image, data)), len(data), cpu, seconds=1.0)
    emit("decode", gpu, how=f"Pillow, {threads} threads", images_per_s=rate, smoke=smoke)
    if device.type != "cuda" or budget.left() < 10:
        emit("decode", gpu, how="torchvision.io.decode_jpeg on the GPU", skipped="no GPU" if smoke else "time budget")
        return
    from torchvision.io import decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    rate = images_per_s(lambda: decode_jpeg(tensors, device=device), len(data), device, seconds=1.0)
    emit("decode", gpu, how="torchvision.io.decode_jpeg on the GPU, batched", images_per_s=rate)


def job_row(device: torch.device, gpu: str, budget: Budget, photos: int) -> None:
    """One whole batch job with GPU actors over generated photos of an archive's sizes."""
    if device.type != "cuda":
        emit("job", gpu, skipped="no GPU")
        return
    if budget.left() < 120:
        emit("job", gpu, skipped="time budget")
        return
    from PIL import Image

    from pipeline.bench.models import bench_image
    from pipeline.config import JobConfig
    from pipeline.manifest import build_manifest
    from pipeline.runner import run

    base = (bench_image(1024)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="stylize-bench-gpu-") as tmp:
        folder = Path(tmp, "photos")
        folder.mkdir()
        for i in range(photos):
            w, h = JOB_SIZES[i % len(JOB_SIZES)]
            Image.fromarray(np.roll(base, i * 5, axis=0)).resize((w, h)).save(folder / f"p{i:04d}.jpg", quality=90)
        manifest = str(Path(tmp, "m.parquet"))
        build_manifest(str(folder), manifest)
        gpus = torch.cuda.device_count()
        config = JobConfig(
            manifest=manifest,
            output=str(Path(tmp, "out")),
            stylizer="dumoulin",
            style="7",
            format="png",
            batch_size=8,
            gpus_per_actor=1,
            actors=gpus,
            device="cuda",
            engine="torch",
        )
        t0 = time.perf_counter()
        summary = run(config)
        wall = time.perf_counter() - t0
    emit(
        "job",
        gpu,
        photos=photos,
        actors=gpus,
        wall_s=round(wall, 1),
        images_per_s=round(photos / wall, 2),
        batch_fill=summary.get("batch_fill"),
        ok=summary.get("ok"),
        failed=summary.get("failed"),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    parser.add_argument("--photos", type=int, default=256, help="photos in the whole-job row (default 256)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="model sizes in px")
    parser.add_argument("--stylizers", nargs="+", default=list(STYLIZERS), help="stylizers to time")
    args = parser.parse_args(argv)
    # weights do not change the arithmetic: families not installed run with random weights rather than
    # spending the GPU's minutes on a download (a GPU machine may have no egress at all)
    os.environ.setdefault("STYLIZE_OFFLINE", "1")
    budget = Budget(args.budget)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    gpu = torch.cuda.get_device_name(device) if cuda else "none (CPU smoke run)"
    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    if cuda:
        props = torch.cuda.get_device_properties(device)
        env |= {"gpus": torch.cuda.device_count(), "memory_gib": round(props.total_memory / 2**30, 1)}
    emit("env", gpu, **env)
    model_rows(device, gpu, budget, args.sizes if cuda else [64], not cuda, args.stylizers)
    decode_rows(device, gpu, budget, smoke=not cuda)
    job_row(device, gpu, budget, args.photos)


if __name__ == "__main__":
    main()
