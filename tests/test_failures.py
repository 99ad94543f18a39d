"""Failures that mean what they say: each failed row names its kind and stage; a fault of the machine or
the store (a full disk, a refused write, refused credentials) is never recorded as a bad photo."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import layout
from pipeline.errors import MachineError
from pipeline.metrics import STAGES, failures_by_kind, summarize
from pipeline.shard import ShardWorker
from pipeline.storage import Storage, machine_fault
from tests.pipeline_helpers import encode, files_under, job_config, magenta, photo, write_inputs, write_manifest
from tests.test_shard import run_shard


def test_every_failed_row_names_its_kind_and_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.shard as shard

    files = {"good": encode(photo(seed=1)), "garbage": b"not an image at all" * 8, "magenta": magenta()}
    files["unencodable"] = encode(photo((33, 31), seed=2))
    paths = write_inputs(tmp_path / "in", files)
    rows = [(k, v) for k, v in paths.items()]
    rows += [("missing", str(tmp_path / "in" / "nowhere.png")), ("x" * 253, paths["good"])]
    real = shard.encode_image

    def encoder(array, *args, **kwargs):  # the encoder refuses one photo (by its odd size)
        if array.shape[:2] == (31, 33):
            raise ValueError("encoder says no")
        return real(array, *args, **kwargs)

    monkeypatch.setattr(shard, "encode_image", encoder)
    got, summary = run_shard(tmp_path, rows, stylizer="test-picky", batch_size=4)
    by_id = {r["image_id"]: r for r in got}
    expected = {
        "missing": ("StorageError", "read"),
        "garbage": ("DecodeError", "decode"),
        "magenta": ("ValueError", "stylize"),
        "unencodable": ("ValueError", "encode"),
        "x" * 253: ("StorageError", "write"),  # its id makes no output key: the photo's own fault
    }
    for image_id, (kind, stage) in expected.items():
        r = by_id[image_id]
        assert (r["status"], r["error_kind"], r["failed_stage"]) == ("failed", kind, stage), (image_id, r["error"])
    assert by_id["good"]["status"] == "ok" and by_id["good"]["error_kind"] is None
    assert by_id["good"]["failed_stage"] is None
    assert summary["failures_by_kind"] == {"StorageError": 2, "DecodeError": 1, "ValueError": 2}
    assert {stage for _, stage in expected.values()} | {"metrics"} == set(STAGES)


def test_a_metrics_failure_fails_its_row_in_the_metrics_stage(tmp_path: Path) -> None:
    class Scorer:
        def score_batch(self, out, content, specs, styles):
            raise RuntimeError("vgg fell over")

    paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1))})
    config = job_config(write_manifest(tmp_path / "m.parquet", list(paths.items())), tmp_path / "out")
    worker = ShardWorker(config)
    worker.scorer = Scorer()  # type: ignore[assignment]
    try:
        worker.run(0, 0, 1)
    finally:
        worker.close()
    row = pq.read_table(tmp_path / "out" / layout.shard_key(0)).to_pylist()[0]
    assert (row["status"], row["error_kind"], row["failed_stage"]) == ("failed", "RuntimeError", "metrics")
    assert "vgg fell over" in row["error"]


def test_failures_by_kind_are_summed_over_shards_and_capped() -> None:
    shards = [
        {"rows": 30, "ok": 0, "failed": 30, "failures_by_kind": {f"Kind{i:02d}": i + 1 for i in range(25)}},
        {"rows": 9, "ok": 5, "failed": 4, "failures_by_kind": {"Kind24": 4}},
        {"rows": 3, "ok": 1, "failed": 2},  # committed before kinds were recorded
    ]
    kinds = failures_by_kind(shards, cap=20)
    assert list(kinds)[:2] == ["Kind24", "Kind23"] and kinds["Kind24"] == 29
    assert len(kinds) == 21 and kinds["other"] == 1 + 2 + 3 + 4 + 5 + 2  # Kind00..04, unknown
    assert sum(kinds.values()) == 25 * 26 // 2 + 4 + 2
    doc = summarize(shards, config={}, wall_seconds=1.0, processed=0)
    assert doc["failures_by_kind"] == kinds


class _Refused(Exception):
    """A botocore ``ClientError`` as s3fs keeps it behind the ``PermissionError`` it raises."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}


def _permission(code: str) -> PermissionError:
    exc = PermissionError(code)
    exc.__cause__ = _Refused(code)
    return exc


class NoCredentialsError(Exception):
    """botocore's, by name (it is not a dependency)."""


class EndpointConnectionError(Exception):
    """botocore's: the store cannot be reached (after s3fs's own retries)."""


def test_machine_faults_are_told_from_the_photos() -> None:
    assert machine_fault(OSError(errno.ENOSPC, "No space left on device"))
    assert machine_fault(OSError(errno.EROFS, "Read-only file system"))
    assert machine_fault(PermissionError(errno.EACCES, "Permission denied"))
    assert machine_fault(_permission("AccessDenied"))  # a refused write to the output
    assert machine_fault(NoCredentialsError("Unable to locate credentials"))
    assert machine_fault(EndpointConnectionError("Could not connect to the endpoint URL"))
    assert machine_fault(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), source=True)
    assert not machine_fault(OSError(errno.EIO, "I/O error"))  # transient: the shard is retried
    # reading a source: only credentials refused for the whole store are the machine's
    assert machine_fault(_permission("InvalidAccessKeyId"), source=True)
    assert machine_fault(NoCredentialsError("no"), source=True)
    assert not machine_fault(_permission("AccessDenied"), source=True)  # also how a missing key looks
    assert not machine_fault(PermissionError(errno.EACCES, "Permission denied"), source=True)


def test_a_read_only_output_raises_machine_error_and_fails_no_row(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    _mount(out, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1))})
        config = job_config(write_manifest(tmp_path / "m.parquet", list(paths.items())), out)
        worker = ShardWorker(config)
        try:
            with pytest.raises(MachineError, match="Read-only file system"):
                worker.run(0, 0, 1)
        finally:
            worker.close()
        assert not files_under(out)
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs at tmp_path/disk (skipped where the test may not mount one); ``grow()`` gives it room."""
    disk = tmp_path / "disk"
    _mount(disk, "1m")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)

    try:
        yield disk, grow
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def noisy_photos(folder: Path, n: int, side: int = 160) -> dict[str, str]:
    """``n`` photos of noise (PNG outputs of about side*side*3 bytes each: they do not compress)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return write_inputs(
        folder, {f"n{i:02d}": encode(rng.integers(0, 256, (side, side, 3), np.uint8)) for i in range(n)}
    )


def test_a_full_disk_stops_the_shard_and_fails_no_row(tmp_path: Path, small_disk) -> None:
    disk, grow = small_disk
    paths = noisy_photos(tmp_path / "in", 20)  # 20 x 77 KB: the disk fills about half-way
    config = job_config(write_manifest(tmp_path / "m.parquet", list(paths.items())), disk / "out", batch_size=4)
    worker = ShardWorker(config)
    try:
        with pytest.raises(MachineError, match="No space left"):
            worker.run(0, 0, 20)
        assert not (disk / "out" / layout.shard_key(0)).exists()  # not committed
        assert not (disk / "out" / layout.attempt_key(0)).exists()  # no image blamed: the retry runs at full speed
        grow()
        summary = worker.run(0, 0, 20)
    finally:
        worker.close()
    assert summary["ok"] == 20 and summary["failed"] == 0
    rows = pq.read_table(disk / "out" / layout.shard_key(0)).to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(paths) and {r["status"] for r in rows} == {"ok"}


def test_a_full_disk_on_a_careful_retry_blames_no_image(tmp_path: Path, small_disk) -> None:
    disk, _ = small_disk
    paths = noisy_photos(tmp_path / "in", 20)
    config = job_config(write_manifest(tmp_path / "m.parquet", list(paths.items())), disk / "out", max_retries=0)
    Storage(str(disk / "out")).put(layout.attempt_key(0), json.dumps({"attempt": 1}).encode())  # after a crash
    worker = ShardWorker(config)
    try:
        with pytest.raises(MachineError):
            worker.run(0, 0, 20)
    finally:
        worker.close()
    marker = json.loads((disk / "out" / layout.attempt_key(0)).read_text())
    assert "suspect" not in marker and not marker.get("crashes")  # the image being written is not a crash


@pytest.fixture
def cli_plugins(monkeypatch: pytest.MonkeyPatch):
    import ray

    from tests.pipeline_fakes import PLUGIN

    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_stylize_run_into_a_disk_that_fills_stops_and_the_rerun_finishes(
    tmp_path: Path, small_disk, cli_plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import run

    disk, grow = small_disk
    paths = noisy_photos(tmp_path / "in", 24)
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    out = disk / "out"
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--stylizer", "test-invert"]
    args += ["--set", "format=png", "--set", "metrics=false", "--set", "shard_rows=6", "--set", "actors=1"]
    code = run(args)
    said = capsys.readouterr()
    assert code != 0, said
    errors = [line for line in (said.out + said.err).splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "No space left" in errors[0], said
    assert "Traceback" not in said.out + said.err
    assert not (out / "_SUCCESS").exists()
    for key in files_under(out):  # whatever shards did commit hold no row failed for lack of space
        if key.startswith("metrics/"):
            assert {r["status"] for r in pq.read_table(out / key).to_pylist()} == {"ok"}
    grow()
    assert run(args) == 0, capsys.readouterr()
    rows = pq.read_table(out / "metrics").to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted(paths)  # exactly one row each
    assert {r["status"] for r in rows} == {"ok"} and (out / "_SUCCESS").exists()


def test_the_jobs_seed_seeds_the_worker_and_optimisation_noise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import pipeline.models.gatys as gatys
    from pipeline.models.vgg import VGGEncoder

    monkeypatch.setattr(gatys, "load_encoder", lambda *a, **k: VGGEncoder("vgg16", last="relu5_1", source="random"))
    config = job_config(tmp_path / "m.parquet", tmp_path / "out", stylizer="gatys", seed=7)
    worker = ShardWorker(config)
    try:
        assert torch.initial_seed() == 7
        assert worker.model.options.seed == 7  # gatys' init=noise draws from it
    finally:
        worker.close()
