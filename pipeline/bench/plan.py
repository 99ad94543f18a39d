"""Planning benchmark: driver wall time and peak memory to plan a job over N synthetic manifest rows.

``python -m pipeline.bench.plan 1000000 10000000 100000000`` writes one synthetic manifest per size
(as ``manifest build`` would: fingerprint and duplicate check in the footer, 65,536-row groups),
then plans a job over each in a fresh Python process (``runner.plan_job``, what ``stylize run``
does before Ray starts) and prints its wall time and peak RSS. ``--no-footer`` writes manifests
without the footer keys (a manifest written by pyarrow alone, as a Spark or warehouse export is), so
planning computes the fingerprint and duplicate check itself. ``--incremental`` measures the dry run of
a second night instead: the output holds a finished first run over the first 99 % of the rows
(synthetic metrics files of 65,536 rows), and ``stylize run --dry-run`` plans the new generation and
counts new, changed, unchanged and deleted rows (``runner.dry_run_counts``) over the whole manifest.

``python -m pipeline.bench.plan 10000000 100000000 --no-footer`` and
``python -m pipeline.bench.plan 10000000 --incremental`` are the rows in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CHUNK = 1_048_576

_PLAN = """
import json, resource, sys, time
t0 = time.perf_counter()
from pipeline.config import JobConfig
from pipeline.runner import dry_run_counts, plan_job
config = JobConfig(manifest=sys.argv[1], output=sys.argv[2])
storage, plan = plan_job(config, write=sys.argv[3] != "dry")
counts = dry_run_counts(config, storage, plan) if sys.argv[3] == "dry" else {}
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = {"shards": plan.shards, "pending": len(plan.pending), "seconds": round(wall, 2), "peak_mb": round(rss)}
print(json.dumps({**result, **counts}))
"""
METRICS_ROWS = 65_536  # rows per synthetic metrics file of the earlier run (its shard_rows)


def write_synthetic(path: Path, rows: int, *, footer: bool = True) -> float:
    """A manifest of ``rows`` rows (image_id, uri); returns the seconds it took to write."""
    from pipeline.manifest import Fingerprint, manifest_metadata

    t0 = time.perf_counter()
    schema = pa.schema([("image_id", pa.string()), ("uri", pa.string())])
    fingerprint = Fingerprint()
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK):
            n = pc.cast(pa.array(np.arange(start, min(rows, start + CHUNK))), pa.string())
            ids = pc.binary_join_element_wise("photo-", n, "")
            uris = pc.binary_join_element_wise("s3://archive/2026/", ids, ".jpg", "")
            fingerprint.update(ids, uris)
            writer.write_table(pa.table({"image_id": ids, "uri": uris}, schema=schema), row_group_size=65_536)
        if footer:  # ids are unique by construction, as manifest build would have checked
            writer.add_key_value_metadata(
                {k.decode(): v.decode() for k, v in manifest_metadata(fingerprint.hexdigest(), True).items()}
            )
    return time.perf_counter() - t0


def earlier_run(output: Path, manifest: Path, rows: int) -> None:
    """What a finished first night over ``manifest``'s first ``rows`` rows leaves: its plan, one ok metrics
    row per manifest row (in files of ``METRICS_ROWS``, as shards of that size would write) and ``_SUCCESS``."""
    from pipeline import layout
    from pipeline.config import JobConfig
    from pipeline.generations import pixel_settings
    from pipeline.plan import Plan

    config = JobConfig(manifest=str(manifest), output=str(output))
    plan = Plan(rows, METRICS_ROWS, "earlier", set(), settings=pixel_settings(config))
    (output / layout.METRICS_PREFIX).mkdir(parents=True)
    (output / layout.PLAN_KEY).write_text(json.dumps(plan.as_json()))
    pf = pq.ParquetFile(manifest)
    done, shard = 0, 0
    for batch in pf.iter_batches(batch_size=METRICS_ROWS, columns=["image_id", "uri"]):
        n = min(batch.num_rows, rows - done)
        if n <= 0:
            break
        table = pa.table(
            {
                "image_id": batch.column(0).slice(0, n),
                "source_uri": batch.column(1).slice(0, n),
                "source_tag": pa.nulls(n, pa.string()),
                "status": pa.array(["ok"] * n),
            }
        )
        pq.write_table(table, output / layout.shard_key(shard))
        done, shard = done + n, shard + 1
    (output / layout.SUCCESS_KEY).write_text(json.dumps({"generation": 0, "rows": rows, "failed": 0}))


def plan_once(manifest: Path, output: Path, mode: str = "plan") -> dict:
    command = [sys.executable, "-c", _PLAN, str(manifest), str(output), mode]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="+")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stylize-bench-plan"))
    parser.add_argument("--no-footer", action="store_true", help="manifests without the fingerprint in the footer")
    parser.add_argument("--incremental", action="store_true", help="a second night's dry run, 1%% rows new")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        manifest = args.workdir / f"manifest-{rows}{'-bare' if args.no_footer else ''}.parquet"
        written = None
        if not manifest.exists():
            written = round(write_synthetic(manifest, rows, footer=not args.no_footer), 1)
        output = args.workdir / f"out-{rows}-{time.time_ns()}"
        result = {"rows": rows, "footer": not args.no_footer, "manifest_mb": round(manifest.stat().st_size / 2**20)}
        if args.incremental:
            earlier_run(output, manifest, rows - rows // 100)
            result["incremental"] = True
        result.update(plan_once(manifest, output, "dry" if args.incremental else "plan"))
        result["write_seconds"] = written
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
