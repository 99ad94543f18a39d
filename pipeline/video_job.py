"""Videos in batch jobs: one video row of a shard, or one segment of a long video (``pipeline.video_render``
does the stylizing).

The shard worker hands this module a ``VideoShard``: the job's config and output storage, and three
callables for what only the worker has (its model with a style, the open manifest, one manifest row).
A video row ends like a photo's: ``ok`` or failed with a reason, kind and stage; a storage error while
storing its output or a segment's marker is not the video's fault and escapes (see ``pipeline.shard``).
Segment crashes follow the shards' rule (``pipeline.crashes``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline import layout
from pipeline.config import JobConfig
from pipeline.crashes import crash_limit
from pipeline.errors import DecodeError, InputError, MachineError, StorageError, describe
from pipeline.manifest import VIDEOS_KEY, row_problem
from pipeline.media.video import EncodeOptions, VideoReader, join
from pipeline.metrics import Stage
from pipeline.segments import Segment, cut
from pipeline.storage import Storage, check_scheme, local_copy, open_fs
from pipeline.temporal import FrameStylizer, Stats
from pipeline.video_render import Rendered, VideoSettings, render, video_origin

CLAIM_STALE_SECONDS = 120.0  # a segment claim not refreshed for this long belongs to a dead worker
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 1.0


@dataclass
class VideoShard:
    """What video rows and segments need from the shard worker that runs them."""

    config: JobConfig
    storage: Storage
    stylizer: Callable[[str], FrameStylizer]  # a style spec -> frames stylized with the worker's model
    manifest: Callable[[], Any]  # the job's open manifest (a ParquetFile; its footer read once per actor)
    source: Callable[[int], tuple[str, str, str]]  # a manifest row -> (image_id, uri, style spec)
    segments: dict[int, list[Segment]] | None = None  # this job's long videos, read once


class VideoItem(Protocol):
    """A shard row on its way (``pipeline.shard.Item``): its metrics row, and how it fails."""

    row: dict[str, Any]

    def fail(self, exc: BaseException, stage: Stage) -> None: ...


class _Failed(Exception):
    """A video's fault met in ``stage`` (its segment's marker carries the same)."""

    def __init__(self, message: str, kind: str, stage: Stage) -> None:
        super().__init__(message)
        self.kind, self.stage = kind, stage


def settings_for(config: JobConfig) -> VideoSettings:
    """The ``VideoSettings`` of a ``JobConfig``."""
    return VideoSettings(
        consistency=config.consistency,
        blend=config.blend,
        warmup=config.warmup_frames,
        batch_size=config.batch_size,
        max_side=config.max_side,
        encode=EncodeOptions(config.video_codec, config.video_crf, config.video_pix_fmt),
        measure=True,  # E_warp is the video's own metric: always on (`metrics` is about the VGG ones)
    )


@contextlib.contextmanager
def local_source(config: JobConfig, uri: str) -> Iterator[str]:
    """``uri`` as a local path: itself when local, else a temp copy streamed through fsspec (PyAV seeks)."""
    check_scheme(uri, config.allowed_schemes)
    fs, path = open_fs(uri, config.storage_options or None)
    with contextlib.ExitStack() as stack:
        try:  # only the fetch: a FileNotFoundError from the caller's block is not a missing source
            local = stack.enter_context(local_copy(fs, path, ".video"))
        except FileNotFoundError:
            raise StorageError(f"not found: {uri}") from None
        yield local


def _temp_mp4() -> str:
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="stylize-video-")
    os.close(fd)
    return path


def segment_plan(shard: VideoShard) -> dict[int, list[Segment]]:
    """``{row: segments}`` of this job's long videos, from the manifest footer and ``_plan.json``."""
    if shard.segments is not None:
        return shard.segments
    plan: dict[int, list[Segment]] = {}
    recorded = shard.storage.read_if_exists(layout.PLAN_KEY)
    seg_frames = int(json.loads(recorded).get("segment_frames", 0)) if recorded else 0
    if seg_frames:
        meta = shard.manifest().metadata.metadata or {}
        for row, frames in json.loads(meta.get(VIDEOS_KEY, b"[]")):
            segs = cut(int(row), int(frames), seg_frames)
            if segs:
                plan[int(row)] = segs
    shard.segments = plan
    return plan


def _fill(row: dict, rendered: Rendered, stats: Stats, seconds: float, uri: str, notes: list[str]) -> None:
    info = rendered.info
    row.update(
        media_type="video",
        width=info.width,
        height=info.height,
        out_width=rendered.width,
        out_height=rendered.height,
        frames=stats.frames,
        fps=float(info.rate),
        frame_rate=info.frame_rate,
        duration=float(stats.frames / info.rate),
        ewarp=stats.ewarp,
        fidelity=stats.fidelity,
        seconds_stylize=stats.seconds_stylize,
        seconds_per_frame=seconds / stats.frames if stats.frames else None,
        output_uri=uri,
        note="; ".join(dict.fromkeys(n for n in notes if n)),
        finished_at=time.time(),
    )


def _stage_of(exc: BaseException) -> Stage:
    """Where a render failed: bad input is the decoder's, anything else the model's."""
    return "decode" if isinstance(exc, DecodeError) else "stylize"


def process_row(shard: VideoShard, item: VideoItem) -> None:
    """Stylize the video of one shard row into ``videos/<id>.mp4`` and fill its metrics row; a bad input or a
    failed segment fails the row. Storage errors while storing the output are not the video's: they raise."""
    row = item.row
    row["media_type"] = "video"
    out = _temp_mp4()
    stage: Stage = "read"
    try:
        problem = row_problem(row["image_id"], row["source_uri"], shard.config.allowed_schemes)
        if problem:
            raise InputError(problem)
        if row.get("mask_uri"):
            raise InputError("masks are for photos; a video row cannot take one")
        segs = segment_plan(shard).get(int(row["row"]))
        with local_source(shard.config, row["source_uri"]) as source:
            stage = "decode"
            if segs:
                rendered, stats, seconds, notes = _joined(shard, row, segs, source, out)
            else:
                try:
                    rendered = render(source, out, shard.stylizer(row["style"]), settings_for(shard.config))
                except Exception as exc:  # noqa: BLE001
                    stage = _stage_of(exc)
                    raise
                stats, seconds, notes = rendered.stats, rendered.seconds, rendered.notes
        stage = "write"
        uri = shard.storage.put_file(layout.video_key(row["image_id"]), out)
        _fill(row, rendered, stats, seconds, uri, notes)
        if segs:
            _drop_segments(shard, segs)
    except _Failed as exc:
        item.fail(exc, exc.stage)
        row["error_kind"] = exc.kind  # the segment's own error's class, not the messenger's
    except StorageError as exc:
        if stage != "read" or isinstance(exc, MachineError):
            raise  # the output store's, not the video's (pipeline.shard gives the shard up)
        item.fail(exc, stage)
    except Exception as exc:  # noqa: BLE001 - a bad video is a failed row, never a failed job
        item.fail(exc, stage)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)
    row["seconds_decode"] = None
    row.setdefault("finished_at", time.time())


def _marker(shard: VideoShard, seg: Segment) -> dict | None:
    data = shard.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "json"))
    return json.loads(data) if data is not None else None


def _joined(
    shard: VideoShard, row: dict[str, Any], segs: list[Segment], source: str, out: str
) -> tuple[Rendered, Stats, float, list[str]]:
    """Wait for (or do) every segment of this video, then join them and copy the audio."""
    markers = []
    for seg in segs:
        marker = _marker(shard, seg)
        while marker is None:
            claim = shard.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "claim"))
            if claim is None or time.time() - float(json.loads(claim).get("at", 0)) > CLAIM_STALE_SECONDS:
                run_segment(shard, seg, row["image_id"], row["source_uri"], row["style"], source)
            else:
                time.sleep(POLL_SECONDS)
            marker = _marker(shard, seg)
        if marker.get("error"):
            raise _Failed(
                f"segment {seg.index} (slots {seg.start}..): {marker['error']}",
                marker.get("error_kind") or "DecodeError",
                marker.get("failed_stage") or "decode",
            )
        markers.append(marker)
    stats, seconds, notes = Stats(), 0.0, []
    for marker in markers:
        stats.add(Stats.from_dict(marker["stats"]))
        seconds += float(marker["seconds"])
        notes += marker.get("notes", [])
    with tempfile.TemporaryDirectory(prefix="stylize-segments-") as folder:
        parts = []
        for seg in segs:
            parts.append(os.path.join(folder, f"seg-{seg.index:05d}.mp4"))
            shard.storage.get_file(layout.segment_key(seg.row, seg.index, "mp4"), parts[-1])
        with VideoReader(source, max_pixels=settings_for(shard.config).max_pixels) as reader:
            origin = video_origin(reader)
            info = reader.info
        notes += join(parts, out, audio_from=source, audio_offset=origin)
    first = markers[0]
    rendered = Rendered(info, int(first["width"]), int(first["height"]), stats, seconds, notes)
    return rendered, stats, seconds, notes


def _drop_segments(shard: VideoShard, segs: list[Segment]) -> None:
    for seg in segs:
        for ext in ("mp4", "json", "claim"):
            with contextlib.suppress(Exception):
                shard.storage.delete(layout.segment_key(seg.row, seg.index, ext))
    shard.storage.prune(layout.segment_prefix(segs[0].row).rstrip("/"))
    shard.storage.prune(layout.SEGMENTS_PREFIX)


def run_segment(
    shard: VideoShard, seg: Segment, image_id: str, uri: str, spec: str, source: str | None = None
) -> dict[str, Any]:
    """Stylize one segment (after its warm-up) to ``_segments/row-N/seg-K.mp4`` and commit its marker:
    its stats, or the reason (kind, stage) it failed. Crashes are bounded like shards': the attempts are
    counted in ``_attempts/`` and a segment that crashed the worker more than ``max_retries`` times is given
    up. Storage errors of the output store raise (the segment is tried again, not failed)."""
    storage, config = shard.storage, shard.config
    if _marker(shard, seg) is not None:
        return {"segment": True, "row": seg.row, "index": seg.index, "skipped": True}
    attempt_key = f"{layout.ATTEMPTS_PREFIX}/seg-{seg.row:09d}-{seg.index:05d}.json"
    # every attempt before this one that left its count behind ended in a crash
    crashes = int(json.loads(storage.read_if_exists(attempt_key) or b'{"attempt": 0}').get("attempt", 0))
    storage.put(attempt_key, json.dumps({"attempt": crashes + 1}).encode())
    claim_key = layout.segment_key(seg.row, seg.index, "claim")
    beat = [0.0]

    def heartbeat(_: int) -> None:
        if time.time() - beat[0] > HEARTBEAT_SECONDS:
            beat[0] = time.time()
            storage.put(claim_key, json.dumps({"at": beat[0]}).encode())

    heartbeat(0)
    out = _temp_mp4()
    stage: Stage = "stylize"
    try:
        gave_up = crash_limit(crashes, config.max_retries)
        if gave_up is not None:
            raise gave_up
        with contextlib.ExitStack() as stack:
            stage = "read"
            local = source or stack.enter_context(local_source(config, uri))
            stage = "stylize"
            try:
                rendered = render(
                    local, out, shard.stylizer(spec), settings_for(config), start=seg.start, stop=seg.stop,
                    audio=False, progress=heartbeat,
                )  # fmt: skip
            except StorageError:
                raise  # the heartbeat's claim: the store's, not the segment's
            except Exception as exc:  # noqa: BLE001
                stage = _stage_of(exc)
                raise
        storage.put_file(layout.segment_key(seg.row, seg.index, "mp4"), out)
        marker = {
            "image_id": image_id,
            "stats": rendered.stats.as_dict(),
            "seconds": rendered.seconds,
            "width": rendered.width,
            "height": rendered.height,
            "notes": rendered.notes,
        }
    except StorageError as exc:
        if stage != "read" or isinstance(exc, MachineError):
            # not the segment's fault: no marker, and this attempt is not counted as a crash; the claim goes,
            # so the retry (segment_task skips a freshly claimed segment) runs it at once
            with contextlib.suppress(StorageError):
                storage.put(attempt_key, json.dumps({"attempt": crashes}).encode())
                storage.delete(claim_key)
            raise
        marker = {"image_id": image_id, "error": describe(exc), "error_kind": type(exc).__name__, "failed_stage": stage}
    except Exception as exc:  # noqa: BLE001 - the joining shard fails the video's row with this reason
        marker = {"image_id": image_id, "error": describe(exc), "error_kind": type(exc).__name__, "failed_stage": stage}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(out)
    storage.put(layout.segment_key(seg.row, seg.index, "json"), json.dumps(marker).encode())
    for key in (claim_key, attempt_key):
        with contextlib.suppress(Exception):
            storage.delete(key)
    return {"segment": True, "row": seg.row, "index": seg.index, "error": marker.get("error", "")}


def segment_task(shard: VideoShard, row: int, index: int, start: int, stop: int | None) -> dict[str, Any]:
    """What an actor runs for one segment unit of the plan: reads its manifest row itself (the driver
    only knows row numbers), then ``run_segment``."""
    seg = Segment(row, index, start, stop)
    if _marker(shard, seg) is not None:
        return {"segment": True, "row": row, "index": index, "skipped": True}
    image_id, uri, spec = shard.source(row)
    if row_problem(image_id, uri, shard.config.allowed_schemes):  # the shard fails the row itself; nothing to cut
        return {"segment": True, "row": row, "index": index, "skipped": True}
    if _claimed(shard, seg):  # the joining shard is doing it itself; a second copy would land after the join
        return {"segment": True, "row": row, "index": index, "skipped": True}
    return run_segment(shard, seg, image_id, uri, spec)


def _claimed(shard: VideoShard, seg: Segment) -> bool:
    """Whether someone is working on ``seg`` now (its claim heartbeat is fresh)."""
    claim = shard.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "claim"))
    return claim is not None and time.time() - float(json.loads(claim).get("at", 0)) <= CLAIM_STALE_SECONDS
