"""One video (or one segment of it) end to end, without Ray: decode -> stylize -> consistency -> encode.

``render`` is what ``stylize video`` and the batch actors (``pipeline.video_job``) both run. A
segment ``[start, stop)`` is decoded from ``start - warmup`` (the warm-up frames are stylized and go
through the consistency state, so it is right at the cut, but are not written), and written
video-only; ``video.join`` then copies the segments' packets into one file and the audio in beside
them. A whole video is written in one pass with its audio copied as it goes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.errors import DecodeError
from pipeline.imaging import fit
from pipeline.media.video import DEFAULT_MAX_PIXELS, EncodeOptions, VideoInfo, VideoReader, VideoWriter, even_size
from pipeline.scale import DEFAULT_STYLE_SCALE
from pipeline.temporal import BLEND, WARMUP, FrameStylizer, Stats, Temporal
from pipeline.temporal import run as run_temporal

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

    ``styles`` is parsed (and its images decoded) once by the caller; families that encode a style image
    (adain, sanet, wct, ghiasi) encode it once per model, i.e. once per actor (``Stylizer.style_features``
    is keyed on the style's pixels, not the tensor; colour preservation restyles it for each frame, the
    documented exception). ``style_scale`` applies to each
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
                        audio_offset=video_origin(reader),
                    )
                writer.write(array)
                if progress:
                    progress(index - start + 1)
            notes = list(reader.notes)
        if writer is None:
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
    return run_temporal(frames, stylize, temporal, batch_size=settings.batch_size, write_from=start)


def video_origin(reader: VideoReader) -> Fraction:
    stream = reader.stream
    return Fraction(int(stream.start_time or 0)) * Fraction(stream.time_base.numerator, stream.time_base.denominator)
