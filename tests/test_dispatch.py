"""The dispatch loop on an embedded Ray: storage faults retried or stopping the run, a hung actor, pool sizing,
and the dashboards' metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline import runner
from pipeline.errors import JobError, MachineError, StorageError
from tests.flaky_fs import DIR_ENV, write_faults, writes
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, job_config, photo, write_inputs, write_manifest


@pytest.fixture(scope="module")
def flaky_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flaky")


@pytest.fixture(scope="module", autouse=True)
def local_ray(flaky_dir: Path):
    import ray

    from pipeline.raysession import ensure_ray

    mp = pytest.MonkeyPatch()
    mp.setenv("STYLIZE_PLUGINS", f"{PLUGIN},tests.flaky_fs")
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    mp.setenv(DIR_ENV, str(flaky_dir))  # Ray's workers inherit it: where the faults are armed and counted
    ensure_ray()
    yield
    ray.shutdown()
    mp.undo()


def _job(tmp_path: Path, n: int = 8, **overrides: Any) -> Any:
    paths = write_inputs(tmp_path / "in", {f"f{i:02d}": encode(photo((24, 20), seed=i)) for i in range(n)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    output = f"flaky://{tmp_path / 'out'}"
    schemes = ["", "file", "flaky"]
    return job_config(manifest, output, allowed_schemes=schemes, shard_rows=4, batch_size=2, **overrides)


def _rows(tmp_path: Path) -> list[dict]:
    return pq.read_table(tmp_path / "out" / "metrics").to_pylist()


def test_a_shard_whose_commit_fails_twice_with_a_storage_error_is_retried_and_the_job_finishes(
    tmp_path: Path, flaky_dir: Path
) -> None:
    write_faults(flaky_dir, "metrics/shard-00000", fail=2)
    summary = runner.run(_job(tmp_path))
    assert writes(flaky_dir) == 3  # two failed commits, then the one that held
    assert summary["rows"] == summary["ok"] == 8
    ids = [r["image_id"] for r in _rows(tmp_path)]
    assert sorted(ids) == [f"f{i:02d}" for i in range(8)]
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_a_shard_that_keeps_failing_ends_the_run_after_shard_retries(tmp_path: Path, flaky_dir: Path) -> None:
    write_faults(flaky_dir, "metrics/shard-00001", fail=100)
    with pytest.raises(StorageError) as info:
        runner.run(_job(tmp_path, shard_retries=1, actors=1))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("shard 1 failed 2 times with a storage error (shard_retries=1)"), message
    assert "injected I/O error" in message
    assert writes(flaky_dir) == 2
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "metrics" / "shard-00001.parquet").exists()


def test_a_machine_error_stops_the_run_at_once_with_its_own_line(tmp_path: Path, flaky_dir: Path) -> None:
    write_faults(flaky_dir, "metrics/shard-00000", fail=100, kind="machine")
    with pytest.raises(MachineError) as info:
        runner.run(_job(tmp_path, actors=1))
    assert str(info.value) == "no space left on device writing shard-00000.parquet (injected)"
    assert info.value.exit_code == 6
    assert writes(flaky_dir) == 1  # not retried
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_shard_that_keeps_killing_its_actor_outside_any_image_ends_the_run_naming_it(
    tmp_path: Path, flaky_dir: Path
) -> None:
    write_faults(flaky_dir, "_attempts/shard-00000", fail=100, kind="die")  # dies writing its attempt marker
    with pytest.raises(JobError) as info:
        runner.run(_job(tmp_path, n=4, actors=1, max_retries=1))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("shard 0 lost its actor 4 times outside any image (more than max_retries + 2 = 3)")
    assert writes(flaky_dir) == 4
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_run_whose_actor_hangs_fails_after_stall_timeout_naming_the_shard(tmp_path: Path, flaky_dir: Path) -> None:
    write_faults(flaky_dir, "nothing-matches", fail=0)
    config = _job(tmp_path, n=4, stylizer="test-hangs", actors=1, stall_timeout=4)
    with pytest.raises(JobError) as info:
        runner.run(config)
    message = str(info.value)
    assert "\n" not in message
    assert "stall_timeout=4" in message and "waited for shard 0" in message, message
    assert "rerun" in message
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    # the lease was released: a rerun (here one that does not hang) takes the output and finishes
    # (another stylizer changes pixels, so the rerun says rerun=all: pipeline.plan refuses it otherwise)
    rerun = config.model_copy(update={"stylizer": "test-invert", "stall_timeout": 600, "rerun": "all"})
    assert runner.run(rerun)["ok"] == 4


class FakeMetric:
    def __init__(self, name: str, description: str = "", tag_keys: tuple = (), boundaries: Any = None) -> None:
        self.name, self.tag_keys, self.calls = name, tag_keys, []
        FakeApi.made[name] = self

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def set(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("set", value, tags))

    def observe(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("observe", value, tags))


class FakeApi:
    made: dict[str, FakeMetric] = {}
    Counter = Gauge = Histogram = FakeMetric


def test_job_progress_is_exported_through_ray_metrics(tmp_path: Path, flaky_dir: Path, monkeypatch) -> None:
    from pipeline import raymetrics

    write_faults(flaky_dir, "nothing-matches", fail=0)
    FakeApi.made.clear()
    real = raymetrics.JobMetrics
    monkeypatch.setattr(raymetrics, "JobMetrics", lambda output: real(output, api=FakeApi))
    config = _job(tmp_path, n=8)
    runner.run(config)

    made = FakeApi.made
    assert set(made) == {
        "stylize_images_done",
        "stylize_images_failed",
        "stylize_images_per_second",
        "stylize_images_remaining",
        "stylize_stage_seconds",
    }
    tags = {"output": config.output}
    assert sum(v for _, v, t in made["stylize_images_done"].calls if t == tags) == 8
    assert made["stylize_images_failed"].calls == []
    assert made["stylize_images_remaining"].calls[-1] == ("set", 0, tags)
    assert made["stylize_images_per_second"].calls[-1][1] > 0
    stages = {t["stage"] for _, _, t in made["stylize_stage_seconds"].calls}
    assert stages == {"decode", "stylize", "encode"}  # metrics=false: no metrics stage
    assert len(made["stylize_stage_seconds"].calls) == 3 * 2  # three stages of each of the two shards


def test_the_metrics_objects_work_with_rays_own_api() -> None:
    from pipeline.raymetrics import JobMetrics

    metrics = JobMetrics("/tmp/out")  # ray.util.metrics on the embedded Ray: no Prometheus needed
    metrics.update({"done": 3, "failed": 0, "total": 10, "rate": 1.5})
    metrics.update({"done": 7, "failed": 1, "total": 10, "rate": 2.0})
    metrics.shard({"n_seconds_decode": 4, "sum_seconds_decode": 0.4, "n_seconds_stylize": 0})


def test_on_a_cluster_unset_actors_fill_its_resources(tmp_path: Path, monkeypatch) -> None:
    import ray

    from pipeline.dispatch import pool_size

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    base = {"manifest": "m.parquet", "output": str(tmp_path)}
    from pipeline.config import JobConfig

    assert pool_size(JobConfig(**base, gpus_per_actor=1), local=False, units=100) == (4, 1)
    assert pool_size(JobConfig(**base, gpus_per_actor=0.5), local=False, units=100) == (8, 1)
    assert pool_size(JobConfig(**base, cpus_per_actor=2), local=False, units=100) == (8, 2)
    assert pool_size(JobConfig(**base), local=False, units=5) == (5, 1)  # no more actors than units
    assert pool_size(JobConfig(**base, actors=3), local=False, units=100) == (3, 1)


def test_the_lease_is_released_and_recorded_after_a_run(tmp_path: Path, flaky_dir: Path) -> None:
    write_faults(flaky_dir, "nothing-matches", fail=0)
    runner.run(_job(tmp_path, n=4))
    leases = sorted((tmp_path / "out" / "_lease").iterdir())
    assert len(leases) == 1
    record = json.loads(leases[0].read_text())
    assert record["released"] is True and record["pid"] > 0 and record["host"]
