"""`stylize run | status | logs | stop | demo` through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import submit
from pipeline.cli import app
from pipeline.cli.jobs import DEMO_PHOTOS, write_demo_photos
from pipeline.codec import decode_image
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, photo, write_inputs, write_manifest


@pytest.fixture(scope="module", autouse=True)
def plugins_and_ray():
    import ray

    mp = pytest.MonkeyPatch()
    mp.setenv("STYLIZE_PLUGINS", PLUGIN)
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
    ray.shutdown()
    mp.undo()


def test_run_with_flags_and_set(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"p{i}": encode(photo(seed=i)) for i in range(3)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--stylizer", "test-invert", "--style", "2"]
    args += ["--set", "format=png", "--set", "metrics=false", "--set", "batch_size=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 rows: 3 ok, 0 failed" in result.output
    table = pq.read_table(out / "metrics")
    assert table.num_rows == 3 and set(table.column("style").to_pylist()) == {"2"}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"p{i}": encode(photo(seed=i)) for i in range(5)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--set", "shard_rows=2", "--dry-run"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 rows in 3 shards of 2: 0 done, 3 pending (5 rows to stylize" in result.output
    assert not out.exists()  # nothing written, not even the plan
    (out / "metrics").mkdir(parents=True)
    (out / "metrics" / "shard-00001.parquet").write_bytes(b"")  # a committed shard (only its key counts)
    result = CliRunner().invoke(app, args)
    assert "1 done, 2 pending (3 rows" in result.output, result.output


def test_run_reports_config_errors_as_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--manifest", "m.parquet", "--output", "o", "--set", "batch_size=0"])
    assert result.exit_code != 0
    assert "batch_size" in str(result.exception)


def test_demo_on_a_folder_writes_outputs_metrics_and_report(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        (folder / f"pic{i}.png").write_bytes(encode(photo((72, 56), seed=i)))
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", str(folder), "--out", str(out), "--max-side", "64"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "output" / "metrics")
    assert table.num_rows == 2 and table.column("status").to_pylist() == ["ok", "ok"]
    assert set(table.column("stylizer").to_pylist()) == {"dumoulin"}
    assert max(table.column("out_width").to_pylist()) == 64
    assert len(list((out / "output" / "images").iterdir())) == 2
    assert (out / "output" / "report.html").read_text().count("data:image/jpeg;base64,") == 4
    assert "report:" in result.output


def test_demo_photos_are_real_decodable_files(tmp_path: Path) -> None:
    paths = write_demo_photos(tmp_path)
    assert len(paths) == len(DEMO_PHOTOS)
    assert all(decode_image(p.read_bytes()).array.shape[2] == 3 for p in paths)


class FakeJobs:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def get_job_status(self, job_id: str) -> str:
        return "JobStatus.RUNNING"

    def get_job_info(self, job_id: str) -> SimpleNamespace:
        return SimpleNamespace(
            status="RUNNING", message="", entrypoint="python -m jobs.run_job", start_time=1, end_time=None
        )

    def get_job_logs(self, job_id: str) -> str:
        return "progress 1/2 failed=0 images/s=1.00"

    def stop_job(self, job_id: str) -> bool:
        self.stopped.append(job_id)
        return True


def test_status_logs_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeJobs()
    monkeypatch.setattr(submit, "client", lambda address=None: fake)
    cli = CliRunner()
    status = cli.invoke(app, ["status", "stylize-abc"])
    assert status.exit_code == 0 and json.loads(status.output)["status"] == "RUNNING"
    logs = cli.invoke(app, ["logs", "stylize-abc"])
    assert "progress 1/2" in logs.output
    stop = cli.invoke(app, ["stop", "stylize-abc"])
    assert stop.exit_code == 0 and fake.stopped == ["stylize-abc"] and "stopping" in stop.output
