"""Videos in batch jobs: manifest build, one shard without Ray (segments, join, audio, bad inputs,
resume without redoing segments), and a job on the embedded Ray mixing photos and videos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import layout
from pipeline.manifest import VIDEOS_KEY, build_manifest, read_manifest
from pipeline.media.video import probe_video
from pipeline.plan import inspect_manifest, make_plan
from pipeline.segments import committed, cut
from pipeline.shard import ShardWorker
from pipeline.storage import Storage
from tests import video_helpers as vh
from tests.pipeline_helpers import encode, files_under, job_config, photo
from tests.test_video import bad_videos
from tests.video_fakes import FlickerStylizer

N = 40
SEGMENT = 16  # 40 frames -> segments of 16, 16 and the rest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "in").mkdir()
    (root / "in" / "a.png").write_bytes(encode(photo((40, 30), seed=1)))
    (root / "in" / "b.png").write_bytes(encode(photo((30, 44), seed=2)))
    vh.write_video(root / "in" / "long.mp4", vh.frames(N))
    vh.write_video(root / "in" / "short.mov", vh.frames(10, seed=3), audio=False)
    return root


def config(manifest: Path, out: Path, **kw):
    return job_config(manifest, out, **{"stylizer": "test-flicker", "style": "0", "segment_frames": SEGMENT, **kw})


def rows_of(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r for r in pq.read_table(out / "metrics").to_pylist()}


def test_manifest_build_picks_up_videos_beside_images(folder: Path, tmp_path: Path) -> None:
    stats = build_manifest(str(folder / "in"), str(tmp_path / "m.parquet"))
    assert stats.rows == 4
    rows = {r["image_id"]: r for r in read_manifest(str(tmp_path / "m.parquet")).to_pylist()}
    assert rows["a.png"]["media_type"] == "image" and rows["a.png"]["frames"] is None
    long = rows["long.mp4"]
    assert (long["media_type"], long["frames"], long["frame_rate"], long["has_audio"]) == (
        "video",
        N,
        "30000/1001",
        True,
    )
    assert (long["width"], long["height"]) == vh.SIZE and abs(long["fps"] - 29.97002997) < 1e-6
    assert abs(long["duration"] - N * 1001 / 30000) < 1e-9
    assert rows["short.mov"]["has_audio"] is False
    footer = pq.ParquetFile(tmp_path / "m.parquet").metadata.metadata
    order = list(rows)
    assert json.loads(footer[VIDEOS_KEY]) == sorted([[order.index("long.mp4"), N], [order.index("short.mov"), 10]])


def test_plan_cuts_long_videos_and_skips_committed_segments(folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.parquet"
    build_manifest(str(folder / "in"), str(manifest))
    storage = Storage(str(tmp_path / "out"))
    info = inspect_manifest(str(manifest))
    row = [r for r, n in info.videos if n == N][0]
    plan = make_plan(storage, info, 2, segment_frames=SEGMENT)
    assert [(s.start, s.stop) for s in plan.pending_segments] == [(0, 16), (16, 32), (32, None)]
    storage.put(layout.segment_key(row, 1, "json"), b"{}")
    again = make_plan(storage, info, segment_frames=999)  # a rerun keeps the recorded cut
    assert again.segment_frames == SEGMENT and [s.index for s in again.pending_segments] == [0, 2]
    assert committed(storage.list("_segments/")) == {(row, 1)}
    assert cut(0, 16, 16) == [] and len(cut(0, 17, 16)) == 2


def test_a_segment_follows_the_shards_crash_rule(folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.parquet"
    build_manifest(str(folder / "in"), str(manifest))
    info = inspect_manifest(str(manifest))
    row = [r for r, n in info.videos if n == N][0]
    out = tmp_path / "out"
    make_plan(Storage(str(out)), info, 100, segment_frames=SEGMENT)
    attempts = out / layout.ATTEMPTS_PREFIX
    attempts.mkdir(parents=True)
    # segment 1's first attempt crashed the worker (its attempt count was left behind); segment 0 never ran
    (attempts / f"seg-{row:09d}-00001.json").write_text(json.dumps({"attempt": 1}))
    worker = ShardWorker(config(manifest, out, shard_rows=100, max_retries=0))
    try:
        before = FlickerStylizer.frames
        first = worker.run_segment(row, 0, 0, 16)
        assert first["error"] == "" and FlickerStylizer.frames - before == 16  # tried once, with max_retries=0
        second = worker.run_segment(row, 1, 16, 32)
    finally:
        worker.close()
    assert "crashed the worker 1 times; gave up (max_retries=0)" in second["error"]
    marker = json.loads((out / layout.segment_key(row, 1, "json")).read_text())
    assert (marker["error_kind"], marker["failed_stage"]) == ("WorkerCrashed", "stylize")


def test_a_segment_whose_store_fails_raises_and_is_not_counted_as_a_crash(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.errors import MachineError

    manifest = tmp_path / "m.parquet"
    build_manifest(str(folder / "in"), str(manifest))
    info = inspect_manifest(str(manifest))
    row = [r for r, n in info.videos if n == N][0]
    out = tmp_path / "out"
    make_plan(Storage(str(out)), info, 100, segment_frames=SEGMENT)
    worker = ShardWorker(config(manifest, out, shard_rows=100, max_retries=0))

    def full(key: str, local_path: str) -> str:
        raise MachineError(f"cannot write {key}: OSError: [Errno 28] No space left on device")

    try:
        monkeypatch.setattr(worker.storage, "put_file", full)
        with pytest.raises(MachineError, match="No space left"):
            worker.run_segment(row, 0, 0, 16)
        monkeypatch.undo()
        assert not (out / layout.segment_key(row, 0, "json")).exists()  # no marker: not the segment's fault
        assert worker.run_segment(row, 0, 0, 16)["error"] == ""  # with max_retries=0 it is still tried
    finally:
        worker.close()


def test_a_shard_with_photos_long_and_bad_videos(folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in (folder / "in").iterdir():
        os.link(p, src / p.name)
    bad = bad_videos(tmp_path / "bad", folder / "in" / "long.mp4")
    del bad["too-big"]  # the pixel limit is tested in test_video: a job keeps the 8K default
    for name, (path, _) in bad.items():
        os.link(path, src / f"bad-{name}.mp4")
    manifest = tmp_path / "m.parquet"
    build_manifest(str(src), str(manifest))
    out = tmp_path / "out"
    cfg = config(manifest, out, shard_rows=100)
    make_plan(Storage(str(out)), inspect_manifest(str(manifest)), 100, segment_frames=SEGMENT)  # what `run` records
    info = inspect_manifest(str(manifest))
    row = [r for r, n in info.videos if n == N][0]

    worker = ShardWorker(cfg)
    try:
        # two of the three segments were done before the job was killed
        worker.run_segment(row, 0, 0, 16)
        worker.run_segment(row, 1, 16, 32)
        before = FlickerStylizer.frames
        summary = worker.run(0, 0, info.rows)
        redone = FlickerStylizer.frames - before
    finally:
        worker.close()
    # the shard did the last segment (8 frames + 10 warm-up), the short video and the two photos, nothing else
    assert redone == (N - 32) + 10 + 10 + 2, redone
    got = rows_of(out)
    assert summary["rows"] == len(got) == info.rows == 4 + len(bad)
    for name in ("a.png", "b.png"):
        assert got[name]["status"] == "ok" and got[name]["media_type"] == "image"
    for name, frames in (("long.mp4", N), ("short.mov", 10)):
        r = got[name]
        assert r["status"] == "ok", r["error"]
        assert (r["media_type"], r["frames"], r["frame_rate"]) == ("video", frames, "30000/1001")
        assert r["ewarp"] > 0 and r["fidelity"] < 0.06 and r["seconds_per_frame"] > 0
        video = out / layout.video_key(name)
        assert r["output_uri"] == str(video)
        written, source = probe_video(str(video)), probe_video(str(src / name))
        assert (written.frames, written.rate, written.duration) == (source.frames, source.rate, source.duration)
    assert vh.audio_packets(out / "videos" / "long.mp4.mp4") == vh.audio_packets(src / "long.mp4")
    for name, (_, reason) in bad.items():
        r = got[f"bad-{name}.mp4"]
        assert r["status"] == "failed" and reason in r["error"], (name, r["error"])
        assert r["error_kind"] and r["failed_stage"] in ("read", "decode", "stylize"), (name, r)
    assert not any(p.startswith(("_segments", "_attempts")) for p in files_under(out)), files_under(out)


def test_a_job_on_ray_mixes_photos_and_videos(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import ray

    from pipeline import runner
    from pipeline.raysession import ensure_ray
    from tests.pipeline_fakes import PLUGIN
    from tests.video_fakes import PLUGIN as VIDEO_PLUGIN

    monkeypatch.setenv("STYLIZE_PLUGINS", f"{PLUGIN},{VIDEO_PLUGIN}")
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    manifest = tmp_path / "m.parquet"
    build_manifest(str(folder / "in"), str(manifest))
    out = tmp_path / "out"
    ensure_ray()
    try:
        summary = runner.run(config(manifest, out, shard_rows=2, actors=2))
    finally:
        ray.shutdown()
    got = rows_of(out)
    assert summary["rows"] == summary["ok"] == len(got) == 4
    assert probe_video(str(out / layout.video_key("long.mp4"))).frames == N
    assert vh.audio_packets(out / layout.video_key("long.mp4")) == vh.audio_packets(folder / "in" / "long.mp4")
    assert {p for p in files_under(out) if p.startswith("videos/")} == {"videos/long.mp4.mp4", "videos/short.mov.mp4"}
    assert not any(p.startswith(("_segments", "_attempts")) for p in files_under(out)), files_under(out)


def test_the_report_shows_a_frame_strip_and_ewarp_per_video(folder: Path, tmp_path: Path) -> None:
    import base64
    import io
    import re

    from PIL import Image

    from pipeline.report import render

    manifest = tmp_path / "m.parquet"
    build_manifest(str(folder / "in"), str(manifest))
    out = tmp_path / "out"
    worker = ShardWorker(config(manifest, out, shard_rows=100, segment_frames=900))
    try:
        worker.run(0, 0, 4)
    finally:
        worker.close()
    page = render(Storage(str(out)))
    assert "Videos (2)" in page and page.count("E_warp 0.") == 2
    strips = re.findall(r'class="strip" src="data:image/png;base64,([^"]+)"', page)
    assert len(strips) == 2
    strip = Image.open(io.BytesIO(base64.b64decode(strips[0])))
    assert strip.height == 2 * 90 + 2  # input row above output row
    assert "\n2 ok images" in page  # the contact sheet is of the photos
