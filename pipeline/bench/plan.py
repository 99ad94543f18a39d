"""Planning benchmark: driver wall time and peak memory to plan a job over N synthetic manifest rows.

``python -m pipeline.bench.plan 1000000 10000000 100000000`` writes one synthetic manifest per size
(as ``manifest build`` would: fingerprint and duplicate check in the footer, 65,536-row groups),
then plans a job over each in a fresh Python process (``runner.plan_job``, what ``stylize run``
does before Ray starts) and prints its wall time and peak RSS. ``--no-footer`` writes manifests
without the footer keys, so planning computes the fingerprint and duplicate check itself.
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
from pipeline.runner import plan_job
storage, plan = plan_job(JobConfig(manifest=sys.argv[1], output=sys.argv[2]))
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = {"shards": plan.shards, "pending": len(plan.pending), "seconds": round(wall, 2), "peak_mb": round(rss)}
print(json.dumps(result))
"""


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


def plan_once(manifest: Path, output: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PLAN, str(manifest), str(output)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, nargs="+")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stylize-bench-plan"))
    parser.add_argument("--no-footer", action="store_true", help="manifests without the fingerprint in the footer")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        manifest = args.workdir / f"manifest-{rows}{'-bare' if args.no_footer else ''}.parquet"
        written = None
        if not manifest.exists():
            written = round(write_synthetic(manifest, rows, footer=not args.no_footer), 1)
        output = args.workdir / f"out-{rows}-{time.time_ns()}"
        result = {"rows": rows, "footer": not args.no_footer, "manifest_mb": round(manifest.stat().st_size / 2**20)}
        result.update(plan_once(manifest, output))
        result["write_seconds"] = written
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
