"""One run at a time per output: the lease object, its races and expiry, and two `stylize run`s on one output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import lease
from pipeline.errors import LeaseError
from pipeline.storage import Storage
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, files_under, photo, write_inputs, write_manifest

REPO = Path(__file__).resolve().parent.parent


def _foreign(storage: Storage, seconds: float) -> lease.Lease:
    """A lease held by a run on another host (so only its expiry ends it)."""
    other = lease.Lease(storage, seconds)
    other.record["host"] = "another-host"
    assert other.try_acquire() is None
    return other


def test_a_second_lease_is_refused_naming_the_holder_until_it_is_released(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    first = lease.Lease(storage, 60)
    assert first.try_acquire() is None
    second = lease.Lease(storage, 60)
    holder = second.try_acquire()
    assert holder is not None and holder["token"] == first.record["token"]
    message = str(second.refusal(holder))
    assert "\n" not in message
    assert f"pid {os.getpid()}" in message and "started " in message and "lease expires " in message, message
    assert "--wait-for-lease" in message
    first.release()
    assert second.try_acquire() is None
    assert second.generation == 1


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    old = _foreign(storage, 1.0)
    taker = lease.Lease(storage, 60)
    assert taker.try_acquire() is not None  # still live
    time.sleep(1.2)
    assert taker.try_acquire() is None  # expired: generation 1 is ours
    old.renew()
    assert old.lost.is_set()


def test_a_killed_holder_on_this_host_frees_the_lease_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = (
        "import os, sys\nfrom pipeline.lease import Lease\nfrom pipeline.storage import Storage\n"
        "assert Lease(Storage(sys.argv[1]), 600).try_acquire() is None\nos.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert proc.returncode == -signal.SIGKILL
    record = json.loads((out / "_lease" / "000000000000.json").read_text())
    assert not record["released"] and record["expires"] > time.time() + 500
    assert lease.Lease(Storage(str(out)), 60).try_acquire() is None  # not 600 s later


@pytest.mark.parametrize("root", ["local", "memory"])
def test_of_many_runs_taking_the_lease_at_once_exactly_one_gets_it(tmp_path: Path, root: str, monkeypatch) -> None:
    monkeypatch.setattr(lease, "SETTLE_SECONDS", 0.2)
    uri = str(tmp_path / "out") if root == "local" else f"memory://lease-race-{time.time_ns()}"
    leases = [lease.Lease(Storage(uri), 60) for _ in range(8)]
    barrier = threading.Barrier(len(leases))
    results: list[object] = [None] * len(leases)

    def take(i: int) -> None:
        barrier.wait()
        results[i] = leases[i].try_acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    tokens = {r["token"] for r in results if r is not None}  # type: ignore[index]
    assert tokens == {leases[winners[0]].record["token"]}  # every loser names the winner


def test_held_waits_for_the_holder_with_wait_and_raises_without(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    _foreign(storage, 1.5)
    with pytest.raises(LeaseError, match="being written by another run"), lease.held(storage, 60):
        pass
    t0 = time.monotonic()
    with lease.held(storage, 60, wait=True) as mine:
        assert mine.generation == 1
        assert time.monotonic() - t0 > 0.5
    assert json.loads((tmp_path / "out" / "_lease" / "000000000001.json").read_text())["released"]


def test_held_renews_the_lease_while_the_run_runs(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    with lease.held(storage, 0.6) as mine:
        time.sleep(1.5)  # more than the lease's length: only heartbeats keep it
        assert lease.Lease(storage, 60).try_acquire() is not None
        assert mine.record["heartbeat"] > mine.record["started"]


def test_a_dry_run_takes_no_lease_and_runs_beside_a_holder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    paths = write_inputs(tmp_path / "in", {f"d{i}": encode(photo((16, 16), seed=i)) for i in range(4)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    with lease.held(Storage(str(out)), 60):
        args = ["run", "--manifest", str(manifest), "--output", str(out), "--set", "shard_rows=2", "--dry-run"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "4 rows in 2 shards" in result.output
    assert [p.name for p in (out / "_lease").iterdir()] == ["000000000000.json"]


# --- two `stylize run`s on one output --------------------------------------------------------------


def _cli(manifest: Path, out: Path, *extra: str) -> list[str]:
    stylize = str(Path(sys.executable).parent / "stylize")
    return [
        stylize, "run", "--manifest", str(manifest), "--output", str(out), "--stylizer", "test-slow", "--style", "1",
        "--set", "metrics=false", "--set", "format=png", "--set", "shard_rows=2", "--set", "batch_size=2",
        "--set", "actors=1", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "STYLIZE_PLUGINS": PLUGIN}
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_for_lease_file(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (out / "_lease").exists() or not list((out / "_lease").iterdir()):
        assert proc.poll() is None, "the first run ended before it took its lease"
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_run_on_one_output_stops_at_once_or_waits_and_the_first_finishes(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"l{i:02d}": encode(photo((24, 24), seed=i)) for i in range(16)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    first = subprocess.Popen(_cli(manifest, out), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lease_file(out, first)
        second = subprocess.run(_cli(manifest, out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 8, second.stdout + second.stderr
        lines = (second.stdout + second.stderr).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert f"pid {first.pid}" in lines[0] and "lease expires" in lines[0], lines[0]
        assert first.poll() is None  # the second stopped while the first still ran
        third = subprocess.run(
            _cli(manifest, out, "--wait-for-lease"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        if first.poll() is None:
            first.kill()
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.strip().splitlines()[-1].startswith("16 rows: 16 ok, 0 failed"), third.stdout
    ids = [r["image_id"] for r in pq.read_table(out / "metrics").to_pylist()]
    assert sorted(ids) == sorted(paths)  # the work was done once
    records = [json.loads(p.read_text()) for p in sorted((out / "_lease").iterdir())]
    assert len(records) == 2 and records[0]["pid"] == first.pid and all(r["released"] for r in records)
    assert records[1]["started"] >= records[0]["heartbeat"]  # the third took the output once the first let go
    assert json.loads((out / "_SUCCESS").read_text())["processed_this_run"] == 16  # the first's: nothing redone


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_lease_that_a_later_run_takes_over(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"k{i:02d}": encode(photo((24, 24), seed=i)) for i in range(12)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cli(manifest, out, "--set", "lease_seconds=3"),
        cwd=REPO,
        env=_env(),
        start_new_session=True,  # its embedded Ray lives in this process group: kill them all at once
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_lease_file(out, proc)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    path = out / "_lease" / "000000000000.json"
    left = json.loads(path.read_text())
    assert left["pid"] == proc.pid and not left["released"]
    # as if it had run on another node: only its expiry (3 s after its last heartbeat) frees the output
    path.write_text(json.dumps({**left, "host": "another-node"}))
    with pytest.raises(LeaseError), lease.held(Storage(str(out)), 60):
        pass

    later = subprocess.run(
        _cli(manifest, out, "--wait-for-lease"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert later.returncode == 0, later.stdout + later.stderr
    ids = [r["image_id"] for r in pq.read_table(out / "metrics").to_pylist()]
    assert sorted(ids) == sorted(paths)
    assert {p for p in files_under(out) if p.startswith("images/")} == {f"images/{i}.png" for i in paths}
    taken = json.loads((out / "_lease" / "000000000001.json").read_text())
    assert taken["pid"] != proc.pid and taken["released"]
