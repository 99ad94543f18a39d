"""A multi-node Ray cluster on 127.0.0.1 (Ray's own ``ray.cluster_utils.Cluster``) that loses a node mid-job:
`stylize run` joined through RAY_ADDRESS, as a user would, finishes exactly-once with a quiet terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, files_under, photo, write_inputs, write_manifest

REPO = Path(__file__).resolve().parent.parent
PHOTOS, SHARD_ROWS = 64, 8


@pytest.mark.slow
def test_a_worker_node_killed_mid_job_and_the_job_still_finishes_exactly_once(tmp_path: Path, monkeypatch) -> None:
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node and the driver stay on loopback
    paths = write_inputs(tmp_path / "in", {f"n{i:02d}": encode(photo((24, 20), seed=i)) for i in range(PHOTOS)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            # notice a dead node within seconds (defaults: about 30 s)
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    try:
        workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
        cluster.wait_for_nodes()
        env = {**os.environ, "PYTHONPATH": str(REPO), "STYLIZE_PLUGINS": PLUGIN, "RAY_ADDRESS": cluster.address}
        command = [
            str(Path(sys.executable).parent / "stylize"), "run", "--manifest", str(manifest), "--output", str(out),
            "--stylizer", "test-slow", "--style", "1", "--set", "metrics=false", "--set", "format=png",
            "--set", "actors=2", "--set", f"shard_rows={SHARD_ROWS}", "--set", "batch_size=2",
        ]  # fmt: skip
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while len(list((out / "metrics").glob("shard-*.parquet"))) < 2:
                assert proc.poll() is None, "the job ended before two shards committed: " + "".join(proc.communicate())
                assert time.monotonic() < deadline, "no two shards committed in time"
                time.sleep(0.1)
            committed_before = len(list((out / "metrics").glob("shard-*.parquet")))
            cluster.remove_node(workers[0], allow_graceful=False)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        cluster.shutdown()

    text = stdout + stderr
    assert proc.returncode == 0, text
    assert committed_before < PHOTOS // SHARD_ROWS  # the node died with work left
    for noise in ("(raylet)", "Traceback", "retries remaining", "WARNING"):
        assert noise not in text, text
    assert stdout.strip().splitlines()[-1].startswith(f"{PHOTOS} rows: {PHOTOS} ok, 0 failed"), text
    rows = pq.read_table(out / "metrics").to_pylist()
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids)) == PHOTOS and set(ids) == set(paths)  # nothing duplicated
    assert all(r["status"] == "ok" for r in rows)
    assert {p for p in files_under(out) if p.startswith("images/")} == {f"images/{i}.png" for i in paths}
    assert not [p for p in files_under(out) if p.startswith("_attempts/")]
