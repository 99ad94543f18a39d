"""Video files <-> RGB frames with PyAV (FFmpeg bundled in its wheels); no torch, no storage.

What ``VideoReader`` guarantees, in order:

* the header is checked before any frame is decoded: a video stream, a decoder for its codec, at least
  one frame declared (or a duration), and ``width * height <= max_pixels``; each failure is a
  ``DecodeError`` with a reason;
* frames come out as upright RGB ``(H, W, 3)`` uint8: the decoder works in threads, and the container's
  display rotation (phones record portrait video as rotated landscape) is applied;
* the output is on a constant-rate grid at the stream's exact rate (a ``Fraction``: 30000/1001 stays
  30000/1001). Slot ``k`` shows the frame on screen at time ``k / rate``, chosen by timestamps, so a
  variable-frame-rate file is resampled (frames repeated or dropped, noted) instead of sped up; a
  constant-rate file passes through frame for frame;
* frames are streamed: memory does not grow with the video's length. ``frames(start, stop)`` seeks
  to the key frame before ``start``, so a segment costs only its own frames.

``VideoWriter`` encodes H.264 MP4 by default (codec, crf and pixel format configurable) and copies the
source's audio stream packet by packet (a remux: no re-encode), interleaved with the video as it is
written. ``join`` concatenates segment files encoded with the same settings, again without re-encoding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, DecodeError

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_MAX_PIXELS = 8192 * 4320  # per frame: 8K with room; decoded frames are held a batch at a time
DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18  # x264's "visually lossless" end; the stylized texture is what is being kept
DEFAULT_PIX_FMT = "yuv420p"  # what every player decodes
MAX_RATE = Fraction(1000)
# audio codecs the MP4 muxer takes as they are; anything else is dropped with a note (no re-encode)
MP4_AUDIO = {"aac", "mp3", "mp2", "ac3", "eac3", "alac", "flac", "opus"}


def is_video(uri: str) -> bool:
    """True when ``uri``'s extension is a video container this package reads."""
    path = str(uri).split("?")[0].lower()
    return path.endswith(VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says, with ``width``/``height`` as displayed (rotation applied)."""

    width: int
    height: int
    rate: Fraction
    frames: int  # declared by the header, else estimated from the duration
    duration: float  # seconds
    codec: str
    rotation: int  # degrees counter-clockwise applied to the stored frames (0, 90, 180, 270)
    has_audio: bool
    audio_codec: str | None = None

    @property
    def frame_rate(self) -> str:
        return f"{self.rate.numerator}/{self.rate.denominator}"


@dataclass(frozen=True)
class Frame:
    """One frame of the constant-rate grid: slot ``index`` (time ``index / rate``), upright RGB uint8."""

    index: int
    array: np.ndarray


def _open(path: str | Any) -> Any:
    import av

    if not isinstance(path, str):  # a binary file object (fsspec: range reads from an object store)
        try:
            return av.open(path, "r")
        except av.error.FFmpegError as exc:
            raise DecodeError(f"truncated or corrupt video container: {exc.strerror or exc}") from None
    if not os.path.exists(path):
        raise DecodeError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        return av.open(path, "r")
    except av.error.FFmpegError as exc:
        raise DecodeError(f"truncated or corrupt video container: {exc.strerror or exc}") from None


def _rate(stream: Any) -> Fraction:
    """The stream's frame rate: FFmpeg's guess (the base rate, unless the average is more plausible)."""
    for value in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if value and 0 < value <= MAX_RATE:
            return Fraction(value.numerator, value.denominator)
    raise DecodeError("the video stream declares no usable frame rate")


def _rotation(frame: Any) -> int:
    degrees = int(round(float(getattr(frame, "rotation", 0) or 0)))
    return degrees % 360 if degrees % 90 == 0 else 0


class VideoReader:
    """An open video file; use as a context manager. Raises ``DecodeError`` on bad input."""

    def __init__(self, path: str | Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, threads: int = 0) -> None:
        self.path = path if isinstance(path, str) else getattr(path, "path", "<file>")
        self.max_pixels = max_pixels
        self.threads = threads  # 0: FFmpeg picks
        self.container = _open(path if not isinstance(path, os.PathLike) else str(path))
        self.notes: list[str] = []
        try:
            self.info = self._probe()
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    @property
    def stream(self) -> Any:
        return self.container.streams.video[0]

    def _probe(self) -> VideoInfo:
        if not self.container.streams:  # an MP4 whose only track had no samples is written without it
            raise DecodeError("the container holds no streams: zero frames")
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            raise DecodeError(f"no video stream in the container (streams: {', '.join(kinds)})")
        stream = self.stream
        ctx = stream.codec_context
        if ctx is None or not ctx.name or ctx.name == "none":
            raise DecodeError(f"unsupported video codec {getattr(ctx, 'name', None) or 'unknown'!r}: no decoder")
        w, h = int(ctx.width or 0), int(ctx.height or 0)
        if w <= 0 or h <= 0:
            raise DecodeError(f"the video stream declares an empty size {w}x{h}")
        if w * h > self.max_pixels:
            raise DecodeError(f"video too large: {w}x{h} = {w * h} pixels per frame > max_pixels {self.max_pixels}")
        rate = _rate(stream)
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1_000_000
        frames = int(stream.frames or 0) or int(round(duration * rate))
        if frames <= 0:
            raise DecodeError("the video stream has no frames")
        stream.thread_type = "AUTO"  # frame + slice threads; set before the decoder opens
        if self.threads:
            stream.thread_count = self.threads
        rotation = self._first_rotation()
        if rotation in (90, 270):
            w, h = h, w
        audio = self.container.streams.audio
        audio_codec = audio[0].codec_context.name if audio and audio[0].codec_context else None
        return VideoInfo(w, h, rate, frames, duration, ctx.name, rotation, bool(audio), audio_codec)

    def _first_rotation(self) -> int:
        """The display rotation, read from the first decoded frame (where PyAV exposes the display matrix)."""
        for frame in self._decode():
            rotation = _rotation(frame)
            self.container.seek(int(self.stream.start_time or 0), stream=self.stream, backward=True)
            return rotation
        raise DecodeError("the video stream has no decodable frames (zero frames or corrupt data)")

    def _decode(self) -> Iterator[Any]:
        import av

        try:
            yield from self.container.decode(self.stream)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"corrupt video data: {exc.strerror or exc}") from None

    def _upright(self, frame: Any) -> np.ndarray:
        array = frame.to_ndarray(format="rgb24")
        k = (self.info.rotation // 90) % 4
        return np.ascontiguousarray(np.rot90(array, k)) if k else array

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Slots ``start .. stop-1`` (``stop`` None: to the end) of the constant-rate grid; see the module doc."""
        stream = self.stream
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        origin = int(stream.start_time or 0)
        rate = self.info.rate
        half = Fraction(1, 2) / rate
        if start > 0:
            target = origin + int(Fraction(start) / rate / tb)
            self.container.seek(max(origin, target - int(1 / (rate * tb)) - 1), stream=stream, backward=True)
        else:
            self.container.seek(origin, stream=stream, backward=True)
        k, prev, prev_time, decoded, irregular = start, None, None, 0, 0
        for n, frame in enumerate(self._decode(), 1):
            decoded = n
            t = (Fraction(frame.pts - origin) * tb) if frame.pts is not None else (prev_time or 0) + 1 / rate
            if prev_time is not None and abs((t - prev_time) * rate - 1) > Fraction(1, 4):
                irregular += 1
            while (stop is None or k < stop) and Fraction(k) / rate + half < t:
                if prev is None:  # the seek landed after slot k: start again from the first frame
                    yield from self._from_origin(k, stop)
                    return
                yield Frame(k, self._upright(prev))
                k += 1
            if stop is not None and k >= stop:
                break
            prev, prev_time = frame, t
        else:
            # the last frame stays on screen for one frame time
            while prev is not None and (stop is None or k < stop) and Fraction(k) / rate < prev_time + half:
                yield Frame(k, self._upright(prev))
                k += 1
            if start == 0 and decoded == 0:
                raise DecodeError("the video stream has no decodable frames")
            if start == 0 and stop is None and decoded < self.info.frames * 0.9 - 1 and self.info.frames:
                raise DecodeError(f"truncated video: decoded {decoded} of the {self.info.frames} frames declared")
        if irregular:
            self.notes.append(f"variable frame rate: resampled to {self.info.frame_rate} fps by timestamps")

    def _from_origin(self, start: int, stop: int | None) -> Iterator[Frame]:
        self.container.seek(int(self.stream.start_time or 0), stream=self.stream, backward=True)
        for frame in self.frames(0, stop):
            if frame.index >= start:
                yield frame


def probe_video(path: str | Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """The header facts of a video file (one frame is decoded for its rotation); raises ``DecodeError``."""
    with VideoReader(path, max_pixels=max_pixels) as reader:
        return reader.info


# -- writing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    """How outputs are encoded: codec (an FFmpeg encoder name), quality (crf) and pixel format."""

    codec: str = DEFAULT_CODEC
    crf: int = DEFAULT_CRF
    pix_fmt: str = DEFAULT_PIX_FMT

    def check(self) -> EncodeOptions:
        import av

        if self.codec not in av.codecs_available:
            raise ConfigError(f"unknown video codec {self.codec!r} (try libx264, libx265, libvpx-vp9)")
        if not 0 <= int(self.crf) <= 63:
            raise ConfigError(f"crf must be in 0..63, got {self.crf}")
        return self


def even_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Chroma-subsampled formats (4:2:0, 4:2:2) need even sides: the odd last row/column is cropped."""
    sub = "420" in pix_fmt or "422" in pix_fmt or pix_fmt in ("nv12", "nv21")
    return (width - width % 2, height - height % 2) if sub else (width, height)


class AudioCopy:
    """The source's first audio stream, muxed into ``out`` packet by packet as the video advances."""

    def __init__(self, source: str, out: Any, notes: list[str], offset: Fraction = Fraction(0)) -> None:
        import av

        self.input = av.open(source, "r")
        self.stream = None
        audio = self.input.streams.audio
        if not audio:
            self.input.close()
            self.input = None
            return
        name = audio[0].codec_context.name if audio[0].codec_context else "unknown"
        if name not in MP4_AUDIO and out.format.name.startswith("mov"):
            notes.append(f"audio dropped: {name} cannot go into MP4 without re-encoding")
            self.input.close()
            self.input = None
            return
        self.source = audio[0]
        self.stream = out.add_stream_from_template(self.source)
        self.out = out
        self.offset = offset  # the video's own start time: audio keeps its sync with the first frame
        self.packets = self.input.demux(self.source)
        self.pending: Any = None

    def until(self, seconds: Fraction | None) -> None:
        """Mux the audio packets that start before ``seconds`` (None: all that are left)."""
        if self.stream is None:
            return
        while True:
            packet = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.dts is None:  # the demuxer's flush packet
                continue
            start = Fraction(packet.pts if packet.pts is not None else packet.dts) * packet.time_base - self.offset
            if seconds is not None and start > seconds:
                self.pending = packet
                return
            if self.offset:
                shift = int(self.offset / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts - shift
                packet.dts -= shift
            packet.stream = self.stream
            self.out.mux(packet)

    def close(self) -> None:
        if self.input is not None:
            self.input.close()


class VideoWriter:
    """Encode RGB frames at a constant ``rate`` to ``path``; copy ``audio_from``'s audio (optional)."""

    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        rate: Fraction,
        *,
        options: EncodeOptions = EncodeOptions(),
        audio_from: str | None = None,
        audio_offset: Fraction = Fraction(0),
    ) -> None:
        import av

        self.notes: list[str] = []
        self.rate = Fraction(rate)
        self.size = even_size(width, height, options.pix_fmt)
        if min(self.size) < 2:
            raise DecodeError(f"cannot encode a {width}x{height} video")
        if (width, height) != self.size:
            self.notes.append(f"cropped to {self.size[0]}x{self.size[1]} for {options.pix_fmt}")
        self.container = av.open(path, "w")
        try:
            self.stream = self.container.add_stream(options.codec, rate=self.rate)
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = options.pix_fmt
            self.stream.time_base = 1 / self.rate
            if options.codec.startswith(("libx26", "libvpx", "libaom", "libsvtav1")):
                self.stream.options = {"crf": str(int(options.crf))}
            self.audio = AudioCopy(audio_from, self.container, self.notes, audio_offset) if audio_from else None
        except BaseException:
            self.container.close()
            raise
        self.count = 0

    def write(self, array: np.ndarray) -> None:
        import av

        w, h = self.size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array[:h, :w]), format="rgb24")
        frame.pts = self.count
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1
        if self.audio is not None:
            self.audio.until(Fraction(self.count) / self.rate)

    def close(self) -> None:
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            if self.audio is not None:
                self.audio.until(None)
        finally:
            if self.audio is not None:
                self.audio.close()
            self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close()


def join(
    parts: list[str], path: str, *, audio_from: str | None = None, audio_offset: Fraction = Fraction(0)
) -> list[str]:
    """Concatenate video-only segment files (same encoder settings, each starting at 0) into ``path``,
    copying the packets (no re-encode), and copy ``audio_from``'s audio; returns notes."""
    import av

    if not parts:
        raise DecodeError("no segments to join")
    notes: list[str] = []
    with av.open(parts[0], "r") as first:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        out = av.open(path, "w")
        try:
            stream = out.add_stream_from_template(template)
            audio = AudioCopy(audio_from, out, notes, audio_offset) if audio_from else None
            offset = Fraction(0)  # seconds of video before this part
            for part in parts:
                with av.open(part, "r") as src:
                    video = src.streams.video[0]
                    if video.codec_context.extradata != extradata:
                        raise DecodeError(f"segment {os.path.basename(part)} was encoded with other settings")
                    tb = Fraction(video.time_base.numerator, video.time_base.denominator)
                    shift = int(offset / tb)
                    end = offset
                    for packet in src.demux(video):
                        if packet.dts is None:
                            continue
                        packet.pts = None if packet.pts is None else packet.pts + shift
                        packet.dts += shift
                        if packet.pts is not None:
                            end = max(end, Fraction(packet.pts + (packet.duration or 0)) * tb)
                        packet.stream = stream
                        out.mux(packet)
                        if audio is not None:
                            audio.until(end)
                    offset = end
            if audio is not None:
                audio.until(None)
                audio.close()
        finally:
            out.close()
    return notes
