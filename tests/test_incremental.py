"""Incremental runs over one output: nights over a growing folder, rerun=failed|all, prune, a kill between
generations, the refusal of changed pixel settings, and the streamed counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import incremental, runner
from pipeline.cli import app
from pipeline.codec import decode_image
from pipeline.errors import JobError
from pipeline.manifest import hash64
from pipeline.shard import ShardWorker
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, job_config, photo, write_inputs, write_manifest


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    from pipeline.raysession import ensure_ray

    mp = pytest.MonkeyPatch()
    mp.setenv("STYLIZE_PLUGINS", PLUGIN)
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ensure_ray()
    yield
    ray.shutdown()
    mp.undo()


def current_rows(out: Path) -> list[dict]:
    """``OUTPUT/metrics/`` read as one Parquet dataset: what any reader of the output sees."""
    return ds.dataset(str(out / "metrics"), format="parquet").to_table().to_pylist()


def stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}


def write_photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(photo((12, 10), seed=seed)))


def test_two_nights_over_a_growing_folder_stylize_only_what_changed(tmp_path: Path) -> None:
    src, out = tmp_path / "photos", tmp_path / "out"
    for i in range(30):
        write_photo(src / f"p{i:02d}.png", seed=i)
    night = ["nightly", str(src), "--output", str(out), "--stylizer", "test-invert", "--style", "2"]
    night += ["--set", "format=png", "--set", "metrics=false", "--set", "shard_rows=8", "--set", "actors=2"]

    first = CliRunner().invoke(app, night)
    assert first.exit_code == 0, first.output
    assert "30 rows: 30 ok, 0 failed" in first.output and (out / "report.html").exists()
    before = stamps(out)
    assert len(before) == 30

    for i in range(30, 40):  # 10 added
        write_photo(src / f"p{i:02d}.png", seed=i)
    old_mtime = (src / "p05.png").stat().st_mtime_ns
    write_photo(src / "p05.png", seed=500)  # 1 replaced under the same name
    os.utime(src / "p05.png", ns=(old_mtime + 10**9, old_mtime + 10**9))
    (src / "p07.png").unlink()  # 1 deleted

    dry = CliRunner().invoke(app, [*night, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "10 new, 1 changed, 28 unchanged, 1 deleted; 11 to stylize" in dry.output

    second = CliRunner().invoke(app, [*night, "--no-report"])
    assert second.exit_code == 0, second.output
    success = json.loads((out / "_SUCCESS").read_text())
    assert (success["new"], success["changed"], success["unchanged"], success["deleted"]) == (10, 1, 28, 1)
    assert success["processed_this_run"] == 11 and success["generation"] == 1
    after = stamps(out)
    unchanged = {f"p{i:02d}.png" for i in range(30)} - {"p05.png", "p07.png"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}  # not rewritten
    assert after["p05.png"] != before["p05.png"] and len(after) == 40
    replaced = decode_image((out / "images" / "p05.png").read_bytes()).array.astype(int)
    assert np.abs(replaced - (255 - photo((12, 10), seed=500).astype(int))).max() <= 1  # the new photo's output
    assert "p07.png" in after  # no prune: the deleted photo's output stays

    rows = current_rows(out)
    current = sorted(p.stem for p in src.iterdir())
    assert sorted(r["image_id"] for r in rows) == [f"{c}.png" for c in current]  # one row each, none superseded
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 39
    assert not [p for p in (out / "metrics").iterdir() if not p.name.startswith("shard-g0001-")]

    third = CliRunner().invoke(app, [a if a != "2" else "3" for a in night])  # night 3: another style
    assert third.exit_code != 0
    message = str(third.exception)  # the CLI prints it as one `error:` line (tests/test_cli_errors.py)
    assert isinstance(third.exception, JobError) and "\n" not in message, third.output
    assert "style was '2' and is now '3'" in message and "new output" in message and "rerun=all" in message
    assert "nightly" not in third.output  # refused before any progress bar


def test_a_second_night_while_the_first_runs_stops_before_touching_its_manifest(tmp_path: Path) -> None:
    """The lease is held from the manifest's rebuild on: an overlapping night (a cron tick that fires again)
    stops with one line and leaves the running night's manifest as it is; a dry run needs no lease."""
    from pipeline import lease
    from pipeline.errors import LeaseError
    from pipeline.storage import Storage

    src, out = tmp_path / "photos", tmp_path / "out"
    for i in range(3):
        write_photo(src / f"p{i}.png", seed=i)
    night = ["nightly", str(src), "--output", str(out), "--stylizer", "test-invert", "--style", "2"]
    night += ["--set", "format=png", "--set", "metrics=false"]
    running = out / "_manifest" / "manifest.parquet"
    running.parent.mkdir(parents=True)
    running.write_bytes(b"the first night's manifest")
    with lease.held(Storage(str(out)), 60):  # the first night, still running
        second = CliRunner().invoke(app, night)
        dry = CliRunner().invoke(app, [*night, "--dry-run"])
    assert isinstance(second.exception, LeaseError) and "\n" not in str(second.exception), second.output
    assert running.read_bytes() == b"the first night's manifest"
    assert dry.exit_code == 0 and "3 new" in dry.output, dry.output
    assert running.read_bytes() == b"the first night's manifest"


def test_rerun_failed_then_all_then_prune(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"q{i}": encode(photo((10, 8), seed=i)) for i in range(5)})
    rows = [*paths.items(), ("late", str(tmp_path / "in" / "late.png"))]  # not there yet: a failed row
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "out"
    config = job_config(manifest, out, stylizer="test-invert", style="1", shard_rows=2)

    first = runner.run(config)
    assert (first["ok"], first["failed"]) == (5, 1)
    (tmp_path / "in" / "late.png").write_bytes(encode(photo((10, 8), seed=9)))  # the fault is fixed
    before = stamps(out)

    again = runner.run(config)  # rerun=new: an unchanged failed row stays failed
    assert again["failed"] == 1 and stamps(out) == before

    fixed = runner.run(config.model_copy(update={"rerun": "failed"}))
    assert (fixed["ok"], fixed["failed"], fixed["processed_this_run"]) == (6, 0, 1)
    assert {k: v for k, v in stamps(out).items() if k in before} == before  # only the failed row was redone
    assert len(current_rows(out)) == 6 and {r["status"] for r in current_rows(out)} == {"ok"}

    redone = runner.run(config.model_copy(update={"rerun": "all"}))
    assert redone["processed_this_run"] == 6
    assert all(stamps(out)[k] != v for k, v in before.items())

    fewer = write_manifest(tmp_path / "m2.parquet", rows[2:])
    pruned = runner.run(job_config(fewer, out, stylizer="test-invert", style="1", shard_rows=2, prune=True))
    # 1 processed: "late" now has a size in the new manifest (its source tag changed)
    assert (pruned["deleted"], pruned["pruned"], pruned["processed_this_run"], pruned["changed"]) == (2, 2, 1, 1)
    assert sorted(stamps(out)) == sorted(f"{r[0]}.png" for r in rows[2:])
    assert sorted(r["image_id"] for r in current_rows(out)) == sorted(r[0] for r in rows[2:])


def test_a_kill_between_generations_reruns_to_exactly_once(tmp_path: Path) -> None:
    files = {f"k{i:02d}": encode(photo((10, 8), seed=i)) for i in range(12)}
    paths = write_inputs(tmp_path / "in", files)
    night1 = write_manifest(tmp_path / "m1.parquet", sorted(paths.items())[:8])
    out = tmp_path / "out"
    runner.run(job_config(night1, out, stylizer="test-invert", shard_rows=3))
    before = stamps(out)

    # night 2: the new generation is planned and one of its shards commits, then the job dies
    night2 = write_manifest(tmp_path / "m2.parquet", sorted(paths.items()))
    config = job_config(night2, out, stylizer="test-invert", shard_rows=3)
    storage, plan = runner.plan_job(config)
    assert (plan.generation, plan.base, plan.shards) == (1, 0, 4)
    worker = ShardWorker(config)
    summary = worker.run(3, *plan.shard_range(3))
    assert (summary["new"], summary["processed"]) == (3, 3)
    worker.close()
    assert not (out / "_SUCCESS").exists()
    mixed = current_rows(out)  # both generations' files while the new one is incomplete
    assert len(mixed) == 8 + 3

    # another of its shards was killed after writing k00's output: its attempt marker names the ids it held
    (out / "_attempts").mkdir(exist_ok=True)
    (out / "_attempts" / "shard-g0001-00000.json").write_text(json.dumps({"attempt": 1, "ids": ["k00"]}))

    # night 3 before the rerun: the manifest changed again (k11 gone); it keeps rows of both earlier generations
    night3 = write_manifest(tmp_path / "m3.parquet", sorted(paths.items())[:11])
    done = runner.run(job_config(night3, out, stylizer="test-invert", shard_rows=3))
    assert (done["generation"], done["rows"], done["processed_this_run"]) == (2, 11, 2)  # k00 again, k08 new
    assert (done["new"], done["unchanged"], done["deleted"]) == (2, 9, 1)
    rows = current_rows(out)
    assert sorted(r["image_id"] for r in rows) == sorted(files)[:11] and {r["status"] for r in rows} == {"ok"}
    kept = {k: v for k, v in before.items() if k != "k00.png"}
    assert {k: stamps(out)[k] for k in kept} == kept and stamps(out)["k00.png"] != before["k00.png"]
    assert not (out / "_attempts").exists()
    assert sorted(p.name for p in (out / "metrics").iterdir()) == [f"shard-g0002-{s:05d}.parquet" for s in range(4)]
    index = json.loads((out / "_generations" / "g0002.json").read_text())  # what night 4's shards will read
    assert sorted(p.name for p in (out / "_generations").iterdir()) == ["g0002.json"]
    assert index["metrics/shard-g0002-00000.parquet"] == ["k00", "k02"]


def test_changed_pixel_settings_are_refused_with_the_ways_on(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"a": encode(photo((10, 8)))})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = tmp_path / "out"
    runner.run(job_config(manifest, out, stylizer="test-invert"))
    with pytest.raises(JobError, match=r"format was 'png' and is now 'jpeg'.*new output.*rerun=all"):
        runner.plan_job(job_config(manifest, out, stylizer="test-invert", format="jpeg"))
    _, plan = runner.plan_job(job_config(manifest, out, stylizer="test-invert", format="jpeg", rerun="all"))
    assert plan.generation == 1


def test_diff_counts_stream_in_hash_partitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.storage import Storage

    ids = [f"x{i:04d}" for i in range(1000)]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_id": ids[100:], "uri": [f"/p/{i}" for i in ids[100:]]}), manifest)
    out = Storage(str(tmp_path / "out"))
    earlier = pa.table(
        {
            "image_id": ids[:900],
            "source_uri": [f"/p/{i}" if n % 100 else f"/q/{i}" for n, i in enumerate(ids[:900])],
            "source_tag": pa.nulls(900, pa.string()),
            "status": ["ok" if n % 7 else "failed" for n in range(900)],
        }
    )
    pq.write_table(earlier, str(tmp_path / "out" / "e.parquet")) if (tmp_path / "out").mkdir() is None else None
    monkeypatch.setattr(incremental, "PARTITION_ROWS", 100)  # ten partitions: the same counts
    counts = incremental.diff_counts(out, ["e.parquet"], str(manifest), None, 900, "new")
    assert counts == {"new": 100, "changed": 8, "unchanged": 792, "deleted": 100, "to_process": 108}
    assert len(set(hash64(pa.array(ids)).tolist())) == 1000
