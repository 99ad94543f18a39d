"""Synthetic videos made in the tests: a seeded texture moving a known number of px per frame, a moving
square, a sine-wave AAC track, at 30000/1001 fps; and their true flows."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

RATE = Fraction(30000, 1001)
SIZE = (64, 48)  # W, H
SHIFT = 2  # px per frame, to the right
SQUARE = 12  # side, px
SQUARE_STEP = (-1, 1)  # px per frame (dx, dy)
SAMPLE_RATE = 48_000


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A seeded smooth colour texture (H,W,3) uint8 with detail at a few scales (DIS needs texture)."""
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(3):
        noise = rng.random((height, width)).astype(np.float32)
        layer = cv2.GaussianBlur(noise, (0, 0), 1.5) * 0.6 + cv2.GaussianBlur(noise, (0, 0), 4.0) * 0.4
        layer = (layer - layer.min()) / (np.ptp(layer) + 1e-6)
        layers.append(layer)
    return (np.stack(layers, -1) * 235 + 10).astype(np.uint8)


def square_at(t: int) -> tuple[int, int]:
    return 40 + SQUARE_STEP[0] * t, 8 + SQUARE_STEP[1] * t


def frames(n: int, size: tuple[int, int] = SIZE, seed: int = 0, shift: int = SHIFT) -> list[np.ndarray]:
    """Frame t: the texture moved ``shift * t`` px to the right, with a bright square moving ``SQUARE_STEP``."""
    w, h = size
    tex = texture(w + shift * n + 1, h, seed)
    out = []
    for t in range(n):
        x0 = shift * (n - t)  # frame t shows tex[:, x0 : x0 + w], so content moves right by `shift`
        frame = tex[:, x0 : x0 + w].copy()
        sx, sy = square_at(t)
        frame[max(sy, 0) : max(sy + SQUARE, 0), max(sx, 0) : max(sx + SQUARE, 0)] = (250, 40, 200)
        out.append(frame)
    return out


def true_flows(t: int, size: tuple[int, int] = SIZE, shift: int = SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """(forward t->t+1 on frame t's grid, backward t+1->t on frame t+1's grid) of ``frames``."""
    w, h = size
    fw = np.zeros((h, w, 2), np.float32)
    fw[..., 0] = shift
    sx, sy = square_at(t)
    fw[max(sy, 0) : max(sy + SQUARE, 0), max(sx, 0) : max(sx + SQUARE, 0)] = SQUARE_STEP
    bw = np.zeros((h, w, 2), np.float32)
    bw[..., 0] = -shift
    sx, sy = square_at(t + 1)
    bw[max(sy, 0) : max(sy + SQUARE, 0), max(sx, 0) : max(sx + SQUARE, 0)] = (-SQUARE_STEP[0], -SQUARE_STEP[1])
    return fw, bw


def write_video(
    path: Path,
    images: list[np.ndarray],
    *,
    rate: Fraction = RATE,
    audio: bool = True,
    rotation: int = 0,
    pts: list[int] | None = None,
    crf: int = 8,
    codec: str = "libx264",
) -> Path:
    """Encode ``images`` (RGB uint8) at ``rate`` with a 440 Hz AAC track; ``pts`` (in 1/rate units) makes
    a variable-rate file; ``rotation`` sets the display matrix (degrees counter-clockwise)."""
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": str(crf)}
        s.time_base = 1 / rate
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream("aac", rate=SAMPLE_RATE)
            a.layout = "mono"
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts[i] if pts else i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            seconds = float((pts[-1] + 1 if pts else len(images)) / rate)
            n = int(seconds * SAMPLE_RATE)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SAMPLE_RATE)).astype(np.float32)[None]
            for k in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, k : k + 1024]), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, k
                for p in a.encode(chunk):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
