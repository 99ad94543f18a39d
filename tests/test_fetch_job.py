"""A batch job with a stylizer not yet fetched: the driver fetches each file once, before Ray starts (issue 21)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline_helpers import encode, photo, write_inputs, write_manifest
from tests.test_fetch import animegan_files, cache, server  # noqa: F401 - fixtures


@pytest.fixture(scope="module", autouse=True)
def own_ray():
    """An embedded Ray started inside the test, so its actors see this test's cache and mirror."""
    import ray

    ray.shutdown()
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
    ray.shutdown()
    mp.undo()


def test_a_job_on_two_actors_downloads_each_file_once(
    server: SimpleNamespace,  # noqa: F811
    cache: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    server.files.update(animegan_files())
    paths = write_inputs(tmp_path / "in", {f"p{i}": encode(photo((40, 32), seed=i)) for i in range(4)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--stylizer", "animegan"]
    args += ["--set", "actors=2", "--set", "shard_rows=2", "--set", "metrics=false", "--set", "format=png"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 rows: 4 ok, 0 failed" in result.output
    assert server.counts == Counter({"paprika.pt": 1})  # the default network, once, for the driver and both actors
    assert pq.read_table(out / "metrics").num_rows == 4
    assert (cache / "animegan" / "paprika.pt").is_file()
