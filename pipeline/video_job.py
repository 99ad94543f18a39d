"""One video (or one segment of it) end to end, without Ray: decode -> stylize -> consistency -> encode.

``render`` is what ``stylize video`` and the batch actors both run. A segment ``[start, stop)`` is
decoded from ``start - warmup`` (the warm-up frames are stylized and go through the consistency state,
so it is right at the cut, but are not written), and written video-only; ``video.join`` then copies the
segments' packets into one file and the audio in beside them. A whole video is written in one pass with
its audio copied as it goes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.codec import fit
from pipeline.config import DEFAULT_STYLE_SCALE
from pipeline.media.video import DEFAULT_MAX_PIXELS, EncodeOptions, VideoInfo, VideoReader, VideoWriter, even_size
from pipeline.temporal import BLEND, WARMUP, FrameStylizer, Stats, Temporal

Progress = Callable[[int], None]


@dataclass(frozen=True)
class VideoSettings:
    """How a video is stylized and written; the CLI and ``JobConfig`` fill it."""

    consistency: str = "flow"
    blend: float = BLEND
    warmup: int = WARMUP
    batch_size: int = 4
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    encode: EncodeOptions = EncodeOptions()
    measure: bool = True


@dataclass
class Rendered:
    """What one pass wrote: the source's header facts, the output size, stats and notes."""

    info: VideoInfo
    width: int
    height: int
    stats: Stats
    seconds: float
    notes: list[str] = field(default_factory=list)


def frame_stylizer(
    model: Any,
    styles: list,
    *,
    alpha: float = 1.0,
    preserve_color: str = "none",
    tile_pixels: int | None = None,
    style_scale: int | str = DEFAULT_STYLE_SCALE,
) -> FrameStylizer:
    """Frames -> per-frame stylizations through ``controls.stylize`` in one call per batch.

    ``styles`` is parsed (and its images decoded) once by the caller and the same ``Style`` objects go
    into every call, so families that encode a style image (adain, sanet, wct, ghiasi) encode it once
    per video (``Stylizer.style_features`` is keyed on the image tensor). ``style_scale`` applies to each
    frame as to a photo, so a 4K video keeps the painted look of a small one.
    """
    import torch

    from pipeline.models import controls

    def stylize(arrays: list[np.ndarray]) -> list[np.ndarray]:
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
        with torch.inference_mode():
            out = controls.stylize(
                model,
                batch,
                styles,
                alpha=alpha,
                preserve_color=preserve_color,  # type: ignore[arg-type]
                tile_pixels=tile_pixels,
                style_scale=style_scale,
            )
        return list(out.float().permute(0, 2, 3, 1).cpu().numpy())

    return stylize


def _prepared(reader: VideoReader, start: int, stop: int | None, settings: VideoSettings) -> Iterator[tuple[int, Any]]:
    """Slots ``start .. stop-1`` fitted to ``max_side`` (the one resize) and cropped to even sides."""
    for frame in reader.frames(start, stop):
        array = fit(frame.array, settings.max_side)
        w, h = even_size(array.shape[1], array.shape[0], settings.encode.pix_fmt)
        yield frame.index, array[:h, :w]


def render(
    source: str,
    out: str,
    stylize: FrameStylizer,
    settings: VideoSettings,
    *,
    start: int = 0,
    stop: int | None = None,
    audio: bool = True,
    progress: Progress | None = None,
) -> Rendered:
    """Stylize slots ``start .. stop-1`` of ``source`` into ``out`` (video only unless ``audio`` and a
    whole video); raises ``DecodeError`` on bad input, ``InputError`` from the model."""
    t0 = time.perf_counter()
    temporal = Temporal(settings.consistency, blend=settings.blend, measure=settings.measure)
    writer: VideoWriter | None = None
    try:
        with VideoReader(source, max_pixels=settings.max_pixels) as reader:
            info = reader.info
            first = max(0, start - settings.warmup)
            whole = start == 0 and stop is None
            frames = _prepared(reader, first, stop, settings)
            for index, array in _run(frames, stylize, temporal, settings, start):
                if writer is None:
                    writer = VideoWriter(
                        out,
                        array.shape[1],
                        array.shape[0],
                        info.rate,
                        options=settings.encode,
                        audio_from=source if audio and whole else None,
                        audio_offset=_video_origin(reader),
                    )
                writer.write(array)
                if progress:
                    progress(index - start + 1)
            notes = list(reader.notes)
        if writer is None:
            from pipeline.errors import DecodeError

            raise DecodeError(f"no frames in slots {start}..{stop if stop is not None else 'end'}")
        writer.close()
        notes += writer.notes
        return Rendered(info, writer.size[0], writer.size[1], temporal.stats, time.perf_counter() - t0, notes)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):  # the first error is the one worth reporting
                writer.close()
        raise
    finally:
        temporal.close()


def _run(frames: Iterator, stylize: FrameStylizer, temporal: Temporal, settings: VideoSettings, start: int) -> Iterator:
    from pipeline.temporal import run

    return run(frames, stylize, temporal, batch_size=settings.batch_size, write_from=start)


def _video_origin(reader: VideoReader) -> Fraction:
    stream = reader.stream
    return Fraction(int(stream.start_time or 0)) * Fraction(stream.time_base.numerator, stream.time_base.denominator)


# -- batch jobs: one video row of a shard, or one segment of a long video ------------------------------

CLAIM_STALE_SECONDS = 120.0  # a segment claim not refreshed for this long belongs to a dead worker
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 1.0


def settings_for(config: Any) -> VideoSettings:
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
def local_source(worker: Any, uri: str) -> Iterator[str]:
    """``uri`` as a local path: itself when local, else a temp copy streamed through fsspec (PyAV seeks)."""
    import os
    import tempfile

    from pipeline.storage import check_scheme, is_local, open_fs

    check_scheme(uri, worker.config.allowed_schemes)
    fs, path = open_fs(uri, worker.config.storage_options or None)
    if is_local(fs):
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1] or ".video")
    os.close(fd)
    try:
        try:
            fs.get_file(path, tmp)
        except FileNotFoundError:
            from pipeline.errors import DecodeError

            raise DecodeError(f"file not found: {uri}") from None
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _temp_mp4() -> str:
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="stylize-video-")
    os.close(fd)
    return path


def segment_plan(worker: Any) -> dict[int, list]:
    """``{row: segments}`` of this job's long videos, from the manifest footer and ``_plan.json``."""
    cached = getattr(worker, "_video_segments", None)
    if cached is not None:
        return cached
    import json

    from pipeline import layout
    from pipeline.manifest import VIDEOS_KEY, open_manifest
    from pipeline.segments import cut

    plan: dict[int, list] = {}
    recorded = worker.storage.read_if_exists(layout.PLAN_KEY)
    seg_frames = int(json.loads(recorded).get("segment_frames", 0)) if recorded else 0
    if seg_frames:
        pf = worker._manifest or open_manifest(worker.config.manifest, worker.config.storage_options or None)
        meta = pf.metadata.metadata or {}
        for row, frames in json.loads(meta.get(VIDEOS_KEY, b"[]")):
            segs = cut(int(row), int(frames), seg_frames)
            if segs:
                plan[int(row)] = segs
    worker._video_segments = plan
    return plan


def _stylizer(worker: Any, spec: str) -> FrameStylizer:
    config = worker.config
    return frame_stylizer(
        worker.model,
        worker.styles(spec),
        alpha=config.alpha,
        preserve_color=config.preserve_color,
        tile_pixels=config.tile_pixels,
        style_scale=config.style_scale,
    )


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


def process_row(worker: Any, item: Any) -> None:
    """Stylize the video of one shard row into ``videos/<id>.mp4`` and fill its metrics row; a bad
    input or a failed segment fails the row (never raises)."""
    from pipeline import layout
    from pipeline.errors import InputError
    from pipeline.manifest import row_problem
    from pipeline.shard import describe

    row = item.row
    row["media_type"] = "video"
    out = _temp_mp4()
    try:
        problem = row_problem(row["image_id"], row["source_uri"], worker.config.allowed_schemes)
        if problem:
            raise InputError(problem)
        if row.get("mask_uri"):
            raise InputError("masks are for photos; a video row cannot take one")
        segs = segment_plan(worker).get(int(row["row"]))
        with local_source(worker, row["source_uri"]) as source:
            if segs:
                rendered, stats, seconds, notes = _joined(worker, item, segs, source, out)
            else:
                rendered = render(source, out, _stylizer(worker, row["style"]), settings_for(worker.config))
                stats, seconds, notes = rendered.stats, rendered.seconds, rendered.notes
        uri = worker.storage.put_file(layout.video_key(row["image_id"]), out)
        _fill(row, rendered, stats, seconds, uri, notes)
        if segs:
            _drop_segments(worker, segs)
    except Exception as exc:  # noqa: BLE001 - a bad video is a failed row, never a failed job
        item.fail(describe(exc))
    finally:
        with contextlib.suppress(OSError):
            import os

            os.unlink(out)
    row["seconds_decode"] = None
    row.setdefault("finished_at", time.time())


def _marker(worker: Any, seg: Any) -> dict | None:
    import json

    from pipeline import layout

    data = worker.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "json"))
    return json.loads(data) if data is not None else None


def _joined(worker: Any, item: Any, segs: list, source: str, out: str) -> tuple[Rendered, Stats, float, list[str]]:
    """Wait for (or do) every segment of this video, then join them and copy the audio."""
    import json
    import os
    import tempfile

    from pipeline import layout
    from pipeline.errors import DecodeError
    from pipeline.media.video import join

    markers = []
    for seg in segs:
        marker = _marker(worker, seg)
        while marker is None:
            claim = worker.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "claim"))
            if claim is None or time.time() - float(json.loads(claim).get("at", 0)) > CLAIM_STALE_SECONDS:
                run_segment(worker, seg, item.row["image_id"], item.row["source_uri"], item.row["style"], source)
            else:
                time.sleep(POLL_SECONDS)
            marker = _marker(worker, seg)
        if marker.get("error"):
            raise DecodeError(f"segment {seg.index} (slots {seg.start}..): {marker['error']}")
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
            worker.storage.get_file(layout.segment_key(seg.row, seg.index, "mp4"), parts[-1])
        with VideoReader(source, max_pixels=settings_for(worker.config).max_pixels) as reader:
            origin = _video_origin(reader)
            info = reader.info
        notes += join(parts, out, audio_from=source, audio_offset=origin)
    first = markers[0]
    rendered = Rendered(info, int(first["width"]), int(first["height"]), stats, seconds, notes)
    return rendered, stats, seconds, notes


def _drop_segments(worker: Any, segs: list) -> None:
    from pipeline import layout

    for seg in segs:
        for ext in ("mp4", "json", "claim"):
            with contextlib.suppress(Exception):
                worker.storage.delete(layout.segment_key(seg.row, seg.index, ext))
    worker.storage.prune(layout.segment_prefix(segs[0].row).rstrip("/"))
    worker.storage.prune(layout.SEGMENTS_PREFIX)


def run_segment(worker: Any, seg: Any, image_id: str, uri: str, spec: str, source: str | None = None) -> dict[str, Any]:
    """Stylize one segment (after its warm-up) to ``_segments/row-N/seg-K.mp4`` and commit its marker:
    its stats, or the reason it failed. Crashes are bounded like shards': the attempt count is kept
    in ``_attempts/`` and a segment that crashed the worker ``max_retries`` times is given up."""
    import json

    from pipeline import layout
    from pipeline.shard import describe

    storage, config = worker.storage, worker.config
    if _marker(worker, seg) is not None:
        return {"segment": True, "row": seg.row, "index": seg.index, "skipped": True}
    attempt_key = f"{layout.ATTEMPTS_PREFIX}/seg-{seg.row:09d}-{seg.index:05d}.json"
    attempts = int(json.loads(storage.read_if_exists(attempt_key) or b'{"attempt": 0}').get("attempt", 0)) + 1
    storage.put(attempt_key, json.dumps({"attempt": attempts}).encode())
    claim_key = layout.segment_key(seg.row, seg.index, "claim")
    beat = [0.0]

    def heartbeat(_: int) -> None:
        if time.time() - beat[0] > HEARTBEAT_SECONDS:
            beat[0] = time.time()
            storage.put(claim_key, json.dumps({"at": beat[0]}).encode())

    heartbeat(0)
    out = _temp_mp4()
    try:
        if attempts > config.max_retries + 1:
            raise RuntimeError(f"crashed the worker {attempts - 1} times; gave up (max_retries={config.max_retries})")
        with contextlib.ExitStack() as stack:
            local = source or stack.enter_context(local_source(worker, uri))
            rendered = render(
                local, out, _stylizer(worker, spec), settings_for(config), start=seg.start, stop=seg.stop,
                audio=False, progress=heartbeat,
            )  # fmt: skip
        storage.put_file(layout.segment_key(seg.row, seg.index, "mp4"), out)
        marker = {
            "image_id": image_id,
            "stats": rendered.stats.as_dict(),
            "seconds": rendered.seconds,
            "width": rendered.width,
            "height": rendered.height,
            "notes": rendered.notes,
        }
    except Exception as exc:  # noqa: BLE001 - the joining shard fails the video's row with this reason
        marker = {"image_id": image_id, "error": describe(exc)}
    finally:
        import os

        with contextlib.suppress(OSError):
            os.unlink(out)
    storage.put(layout.segment_key(seg.row, seg.index, "json"), json.dumps(marker).encode())
    for key in (claim_key, attempt_key):
        with contextlib.suppress(Exception):
            storage.delete(key)
    return {"segment": True, "row": seg.row, "index": seg.index, "error": marker.get("error", "")}


def segment_task(worker: Any, row: int, index: int, start: int, stop: int | None) -> dict[str, Any]:
    """What an actor runs for one segment unit of the plan: reads its manifest row itself (the driver
    only knows row numbers), then ``run_segment``."""
    from pipeline.manifest import row_problem
    from pipeline.segments import Segment

    seg = Segment(row, index, start, stop)
    if _marker(worker, seg) is not None:
        return {"segment": True, "row": row, "index": index, "skipped": True}
    item = worker._items(row // max(1, worker.config.shard_rows), row, 1)[0]
    problem = row_problem(item.row["image_id"], item.row["source_uri"], worker.config.allowed_schemes)
    if problem:  # the shard fails the row itself; nothing to cut
        return {"segment": True, "row": row, "index": index, "skipped": True}
    if _claimed(worker, seg):  # the joining shard is doing it itself; a second copy would land after the join
        return {"segment": True, "row": row, "index": index, "skipped": True}
    return run_segment(worker, seg, item.row["image_id"], item.row["source_uri"], item.row["style"])


def _claimed(worker: Any, seg: Any) -> bool:
    """Whether someone is working on ``seg`` now (its claim heartbeat is fresh)."""
    import json

    from pipeline import layout

    claim = worker.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "claim"))
    return claim is not None and time.time() - float(json.loads(claim).get("at", 0)) <= CLAIM_STALE_SECONDS
