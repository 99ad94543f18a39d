"""The actor pool on an embedded local Ray: end to end, resume after a kill, crashes, S3, a quiet terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import runner
from pipeline.errors import JobError
from pipeline.storage import Storage
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import (
    bad_corpus,
    encode,
    files_under,
    job_config,
    magenta,
    photo,
    write_inputs,
    write_manifest,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    import ray

    from pipeline.raysession import ensure_ray

    mp = pytest.MonkeyPatch()
    mp.setenv("STYLIZE_PLUGINS", PLUGIN)
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray's workers inherit this process's environment: where test-dies-once keeps its flag
    mp.setenv("STYLIZE_TEST_FLAG_DIR", str(tmp_path_factory.mktemp("flags")))
    ensure_ray()
    yield
    ray.shutdown()
    mp.undo()


def metrics_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "metrics").to_pylist() if (out / "metrics").exists() else []


def test_end_to_end_bad_inputs_attacks_and_rerun(tmp_path: Path) -> None:
    corpus = bad_corpus()
    files = {k: v[0] for k, v in corpus.items()}
    files.update({f"photo{i}": encode(photo((40, 30) if i % 2 else (30, 44), seed=i)) for i in range(5)})
    paths = write_inputs(tmp_path / "in", files)
    rows = list(paths.items()) + [("../../escape", paths["photo0"]), ("meta", "http://169.254.169.254/x")]
    styles = [str(i % 3) for i in range(len(rows))]
    manifest = write_manifest(tmp_path / "m.parquet", rows, style=styles)
    out = tmp_path / "out"
    config = job_config(manifest, out, batch_size=2, style_column="style", shard_rows=4)

    summary = runner.run(config)

    got = metrics_rows(out)
    assert sorted(r["image_id"] for r in got) == sorted(r[0] for r in rows)  # exactly one row each
    by_id = {r["image_id"]: r for r in got}
    for name, (_, expected) in corpus.items():
        assert by_id[name]["status"] == expected, (name, by_id[name]["error"])
    for i, (image_id, _) in enumerate(rows):
        assert by_id[image_id]["style"] == styles[i]
    assert by_id["../../escape"]["status"] == by_id["meta"]["status"] == "failed"
    ok = [r for r in got if r["status"] == "ok"]
    assert summary["rows"] == len(rows) and summary["ok"] + summary["failed"] == summary["rows"]
    assert summary["ok"] == len(ok) == 5 + 5
    images = {p for p in files_under(out) if p.startswith("images/")}
    assert images == {f"images/{r['image_id']}.png" for r in ok}
    assert {p for p in files_under(tmp_path) if not p.startswith(("in/", "out/"))} == {"m.parquet"}
    assert json.loads((out / "_SUCCESS").read_text())["ok"] == len(ok)
    assert len(list((out / "metrics").glob("shard-*.parquet"))) == 4

    # a rerun finds every shard committed and touches nothing but its own lease record
    def stamps() -> dict[str, int]:
        return {p: (out / p).stat().st_mtime_ns for p in files_under(out) if not p.startswith("_lease/")}

    before = stamps()
    again = runner.run(config)
    assert again["rows"] == len(rows)
    assert stamps() == before
    assert json.loads((out / "_lease" / "000000000001.json").read_text())["released"] is True

    # the same output with another manifest and other pixel settings is refused, not mixed
    other = write_manifest(tmp_path / "other.parquet", rows[:3])
    with pytest.raises(JobError, match="style_column was 'style' and is now None.*rerun=all"):
        runner.run(job_config(other, out))


KILL_SCRIPT = """
import sys
from pipeline import runner
from tests.pipeline_helpers import job_config
runner.run(job_config(sys.argv[1], sys.argv[2], stylizer="test-slow", batch_size=2, shard_rows=2))
"""


@pytest.mark.slow
def test_killed_job_reruns_to_exactly_one_row_per_input(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"p{i:02d}": encode(photo((32, 32), seed=i)) for i in range(16)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "STYLIZE_PLUGINS": PLUGIN}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(manifest), str(out)],
        cwd=REPO,
        env=env,
        start_new_session=True,  # its embedded Ray lives in this process group: kill them all at once
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "metrics" / "shard-00000.parquet").exists():
            assert proc.poll() is None, "the job ended before its first shard committed"
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "_SUCCESS").exists()
    committed = len(list((out / "metrics").glob("shard-*.parquet")))
    assert 1 <= committed < 8

    # the same stylizer: another one changes pixels and is refused (tests/test_incremental.py)
    summary = runner.run(job_config(manifest, out, stylizer="test-slow", batch_size=2))

    got = metrics_rows(out)
    ids = [r["image_id"] for r in got]
    assert len(ids) == len(set(ids)) == 16 and set(ids) == set(paths)
    assert summary["rows"] == summary["ok"] == 16
    assert summary["processed_this_run"] == 16 - 2 * committed  # committed shards were skipped
    assert {p for p in files_under(out) if p.startswith("images/")} == {f"images/{i}.png" for i in paths}
    assert not [p for p in files_under(out) if p.startswith("_attempts/")]


@pytest.mark.slow
def test_an_input_that_crashes_the_worker_is_retried_then_failed(tmp_path: Path) -> None:
    files = {"good0": encode(photo(seed=0)), "poison": magenta(), "good1": encode(photo(seed=1))}
    paths = write_inputs(tmp_path / "in", files)
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    summary = runner.run(job_config(manifest, out, stylizer="test-crashy", batch_size=4, max_retries=1))
    by_id = {r["image_id"]: r for r in metrics_rows(out)}
    assert by_id["poison"]["status"] == "failed"
    assert "crashed the worker" in by_id["poison"]["error"]
    assert by_id["good0"]["status"] == by_id["good1"]["status"] == "ok"
    assert summary["rows"] == 3 and summary["failed"] == 1


@pytest.mark.slow
def test_an_actor_killed_in_the_middle_of_a_shard_is_restarted_and_the_shard_finishes(tmp_path: Path) -> None:
    flag = Path(os.environ["STYLIZE_TEST_FLAG_DIR"]) / "died"
    paths = write_inputs(tmp_path / "in", {f"k{i}": encode(photo((32, 32), seed=i)) for i in range(6)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    summary = runner.run(job_config(manifest, out, stylizer="test-dies-once", batch_size=2, shard_rows=6))
    assert flag.exists()  # the process did die during its second model call, mid-shard
    got = metrics_rows(out)
    assert sorted(r["image_id"] for r in got) == sorted(paths)
    assert summary["ok"] == 6 and summary["rows"] == 6
    assert {p for p in files_under(out) if p.startswith("images/")} == {f"images/{i}.png" for i in paths}
    assert not (out / "_attempts").exists()


@pytest.mark.slow
def test_the_pool_grows_from_min_actors_while_shards_wait(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"g{i:02d}": encode(photo((24, 24), seed=i)) for i in range(32)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    config = job_config(manifest, out, stylizer="test-slow", shard_rows=2, min_actors=1, actors=2, cpus_per_actor=1)
    summary = runner.run(config)
    assert summary["ok"] == 32  # 16 shards of 0.4 s each: time for a second actor to start
    pids = {
        json.loads(pq.read_schema(p).metadata[b"stylize.shard_summary"])["pid"] for p in (out / "metrics").iterdir()
    }
    assert len(pids) == 2  # started with one actor, grew to two


def test_a_successful_run_prints_only_the_bar_and_the_summary(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"q{i}": encode(photo((32, 24), seed=i)) for i in range(5)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "STYLIZE_PLUGINS": PLUGIN}
    env.pop("RAY_ADDRESS", None)
    before = _ray_processes()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "stylize"),
            "run",
            "--manifest",
            str(manifest),
            "--output",
            str(out),
            "--stylizer",
            "test-invert",
            "--style",
            "1",
            "--set",
            "metrics=false",
            "--set",
            "format=png",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=300)
    text = stdout + stderr
    assert proc.returncode == 0, text
    for noise in ("WARNING", "Traceback", "core_worker", "INFO", "Progress bars"):
        assert noise not in text, text
    assert stdout.strip().splitlines()[-1].startswith("5 rows: 5 ok, 0 failed"), text
    assert not (out / "_attempts").exists()
    assert _left_behind(before) == []  # the CLI's fast exit skips ray.shutdown's waits, and stops all of Ray


def _ray_processes() -> dict[int, str]:
    """pid -> command line of the Ray processes now running (raylet, GCS, workers, the renamed ``ray::`` agents)."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text.startswith("ray::") or "/ray/" in text:
            found[int(cmdline.parent.name)] = text[:120]
    return found


def _left_behind(before: dict[int, str], wait_s: float = 10.0) -> list[str]:
    """Ray processes that were not running in ``before`` and are still running ``wait_s`` after."""
    deadline = time.monotonic() + wait_s
    while True:
        new = [text for pid, text in _ray_processes().items() if pid not in before]
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.5)


@pytest.mark.slow
def test_s3_end_to_end(tmp_path: Path) -> None:
    from tests.s3server import create_bucket, s3_server

    with s3_server() as endpoint:
        create_bucket(endpoint, "photos")
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        source = Storage("s3://photos/in", options)
        rows = []
        for i in range(3):
            source.put(f"p{i}.png", encode(photo((36, 28), seed=i)))
            rows.append((f"p{i}", f"s3://photos/in/p{i}.png"))
        rows.append(("missing", "s3://photos/in/missing.png"))
        manifest = write_manifest(tmp_path / "m.parquet", rows)
        config = job_config(manifest, "s3://photos/out", storage_options=options, batch_size=2, shard_rows=2)
        summary = runner.run(config)
        assert (summary["ok"], summary["failed"]) == (3, 1)
        store = Storage("s3://photos/out", options)
        keys = store.list("")
        assert {k for k in keys if k.startswith("images/")} == {f"images/p{i}.png" for i in range(3)}
        assert {"_SUCCESS", "metrics/shard-00000.parquet", "metrics/shard-00001.parquet"} <= set(keys)
        assert not [k for k in keys if k.startswith("_attempts/")]


def test_an_unknown_stylizer_fails_before_any_work(tmp_path: Path) -> None:
    from pipeline.errors import ModelNotFound

    paths = write_inputs(tmp_path / "in", {"a": encode(photo())})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    with pytest.raises(ModelNotFound, match="no-such-model"):
        runner.run(job_config(manifest, tmp_path / "out", stylizer="no-such-model"))
    assert not (tmp_path / "out" / "metrics").exists()


def test_actors_of_the_embedded_ray_start_on_workers_that_imported_the_pipeline_already() -> None:
    import ray

    from pipeline.raysession import PRELOAD

    @ray.remote(num_cpus=0)
    class Probe:
        def __init__(self) -> None:
            self.seen = [name for name in PRELOAD if name in sys.modules]  # before the actor imports anything

        def modules(self) -> list[str]:
            return self.seen

    assert ray.get(Probe.remote().modules.remote(), timeout=120) == list(PRELOAD)
    # an empty job runtime_env: Ray hands an actor only an idle worker started with the actor's runtime_env
    assert not ray.get_runtime_context().runtime_env
