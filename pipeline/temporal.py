"""Temporal consistency for video: blend each stylized frame with the flow-warped previous output.

Per-frame stylization flickers: a feed-forward network answers small changes of the input (noise,
compression, light) with large changes of texture. Following Ruder et al. 2016/2018 (the short-term
consistency of artistic-videos / fast-artistic-videos), but without retraining the network, each output is

    O_t = S_t + BLEND * M_t * (warp(O_t-1, b_t) - S_t)

where ``S_t`` is the per-frame stylization, ``b_t`` the DIS flow from input frame t to t-1 (backward
warping brings the previous output onto frame t's grid) and ``M_t`` the non-occlusion mask of the
forward-backward and motion-boundary checks (``pipeline.media.flow.visible``). ``BLEND`` is the weight
of the past where a pixel is visible: 0.5 cuts the variance of uncorrelated flicker in frame-to-frame
differences by (1 - B)^2 / (1 + B) = 1/6, while each output stays within a few frames' memory of its
own stylization (the influence of frame t-k decays as B^k), so moving regions follow the motion instead
of smearing and a segment's warm-up of ``WARMUP`` frames makes its state that of an unsegmented pass
(0.5^10 < 0.1%). Occluded pixels take ``S_t`` as is.

Scene cuts reset the state: when fewer than ``CUT_VISIBLE`` of the pixels pass the occlusion test, or
the motion-compensated input difference ``mean |I_t - warp(I_t-1, b_t)|`` over visible pixels exceeds
``CUT_RESIDUAL``, the frame is treated as the first of a new shot (and its pair is left out of E_warp).

Measured per video (``Stats``): E_warp (Lai et al. 2018, on the outputs as written, before the codec,
with flow and occlusion from the input frames) and the fidelity term ``mean |O_t - S_t|`` (RGB in [0,1]):
a frozen or blurred video also scores a low E_warp, so the two are reported together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.errors import ConfigError
from pipeline.media.flow import FlowEstimator, grey, visible, warp, warp_error

Consistency = Literal["flow", "none"]
CONSISTENCY_MODES: tuple[str, ...] = ("flow", "none")
BLEND = 0.5
WARMUP = 10  # frames stylized before a segment's first written frame
CUT_VISIBLE = 0.3
CUT_RESIDUAL = 0.12

# stylizes a list of same-size RGB uint8 frames; returns (H,W,3) float32 in [0,1] each
FrameStylizer = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class Stats:
    """Sums over the written frames of one video or segment (so segments add up)."""

    frames: int = 0
    ewarp_sum: float = 0.0
    ewarp_pairs: int = 0
    fidelity_sum: float = 0.0
    cuts: int = 0
    seconds_flow: float = 0.0
    seconds_stylize: float = 0.0
    pair_errors: list[tuple[int, float]] = field(default_factory=list)  # (t+1, E_warp of pair t, t+1)

    @property
    def ewarp(self) -> float | None:
        return self.ewarp_sum / self.ewarp_pairs if self.ewarp_pairs else None

    @property
    def fidelity(self) -> float | None:
        return self.fidelity_sum / self.frames if self.frames else None

    def add(self, other: Stats) -> None:
        for name in ("frames", "ewarp_sum", "ewarp_pairs", "fidelity_sum", "cuts", "seconds_flow", "seconds_stylize"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.pair_errors.extend(other.pair_errors)

    def as_dict(self) -> dict[str, float | int | None]:
        keys = ("frames", "ewarp_sum", "ewarp_pairs", "fidelity_sum", "cuts", "seconds_flow", "seconds_stylize")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_dict(cls, data: dict) -> Stats:
        return cls(**{k: data[k] for k in cls().as_dict()})


def check_consistency(mode: str) -> str:
    if mode not in CONSISTENCY_MODES:
        raise ConfigError(f"consistency must be one of {', '.join(CONSISTENCY_MODES)}, got {mode!r}")
    return mode


def quantize(x: np.ndarray) -> np.ndarray:
    """[0,1] float -> uint8, rounded as ``codec.to_array`` does."""
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


class Temporal:
    """The state of one pass over consecutive frames: previous input and output, and the running stats."""

    def __init__(self, consistency: str = "flow", *, blend: float = BLEND, measure: bool = True) -> None:
        self.consistency = check_consistency(consistency)
        if not 0.0 <= blend < 1.0:
            raise ConfigError(f"blend must be in [0, 1), got {blend}")
        self.blend = blend
        self.measure = measure
        self.stats = Stats()
        self.prev_grey: np.ndarray | None = None
        self.prev_out: np.ndarray | None = None  # float32 [0,1], as quantized for writing
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stylize-flow")

    @property
    def needs_flow(self) -> bool:
        return self.consistency == "flow" or self.measure

    def _flow(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
        est = getattr(self._local, "est", None)
        if est is None:
            est = self._local.est = FlowEstimator()
        t0 = time.perf_counter()
        return est(a, b), time.perf_counter() - t0

    def flows(self, a: np.ndarray, b: np.ndarray) -> tuple[Future, Future]:
        """Forward (a->b) and backward (b->a) flow of two grey frames, computed in the flow threads."""
        return self.pool.submit(self._flow, a, b), self.pool.submit(self._flow, b, a)

    def step(
        self, index: int, grey_frame: np.ndarray, stylized: np.ndarray, flows: tuple[Future, Future] | None, count: bool
    ) -> np.ndarray:
        """Frame ``index``: its grey input, its per-frame stylization and the flows from the previous frame
        (None for the first); returns the output as uint8. ``count``: the frame is written (in the stats)."""
        out = stylized
        fw = bw = None
        cut = False
        if flows is not None and self.prev_out is not None:
            (fw, s1), (bw, s2) = flows[0].result(), flows[1].result()
            t0 = time.perf_counter()
            mask = visible(bw, fw)
            share = float(mask.mean())
            residual = 1.0
            if share > 0:
                prev = warp(self.prev_grey.astype(np.float32), bw)
                residual = float(np.abs(grey_frame.astype(np.float32) - prev)[mask].mean()) / 255.0
            cut = share < CUT_VISIBLE or residual > CUT_RESIDUAL
            if self.consistency == "flow" and not cut:
                past = warp(self.prev_out, bw)
                out = stylized + self.blend * mask[..., None] * (past - stylized)
            self.stats.seconds_flow += (s1 + s2 if count else 0.0) + (time.perf_counter() - t0)
        written = quantize(out)
        out_f = written.astype(np.float32) / 255.0
        if count:
            self.stats.frames += 1
            self.stats.fidelity_sum += float(np.abs(out_f - stylized).mean())
            self.stats.cuts += int(cut)
            if self.measure and fw is not None and not cut:
                t0 = time.perf_counter()
                err = warp_error(self.prev_out, out_f, fw, visible(fw, bw))
                self.stats.seconds_flow += time.perf_counter() - t0
                if err is not None:
                    self.stats.ewarp_sum += err
                    self.stats.ewarp_pairs += 1
                    self.stats.pair_errors.append((index, err))
        self.prev_grey, self.prev_out = grey_frame, out_f
        return written

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def run(
    frames: Iterable[tuple[int, np.ndarray]],
    stylize: FrameStylizer,
    temporal: Temporal,
    *,
    batch_size: int = 4,
    write_from: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, RGB uint8)`` frames in order -> ``(index, output uint8)`` for ``index >= write_from``.

    Frames are stylized ``batch_size`` at a time (the per-frame stylization does not depend on the past),
    while the flow threads compute the batch's flows; the blend then runs frame by frame.
    """
    batch: list[tuple[int, np.ndarray]] = []
    it = iter(frames)
    while True:
        batch.clear()
        for item in it:
            batch.append(item)
            if len(batch) >= batch_size:
                break
        if not batch:
            return
        greys = [grey(a) for _, a in batch]
        flows: list[tuple[Future, Future] | None] = []
        prev = temporal.prev_grey
        for g in greys:
            flows.append(temporal.flows(prev, g) if temporal.needs_flow and prev is not None else None)
            prev = g
        t0 = time.perf_counter()
        stylized = stylize([a for _, a in batch])
        if batch[-1][0] >= write_from:
            share = sum(i >= write_from for i, _ in batch) / len(batch)
            temporal.stats.seconds_stylize += (time.perf_counter() - t0) * share
        for (index, _), g, s, f in zip(batch, greys, stylized, flows, strict=True):
            out = temporal.step(index, g, s, f, index >= write_from)
            if index >= write_from:
                yield index, out


def pair_errors(frames: Iterable[np.ndarray], sources: Iterable[np.ndarray] | None = None) -> list[float]:
    """Per-pair E_warp of a sequence of RGB uint8 frames, with DIS flow on ``sources`` (the input frames;
    default the frames themselves): what ``Temporal`` measures, for videos already written."""
    est = FlowEstimator()
    out: list[float] = []
    prev = prev_src = None
    pairs = zip(frames, sources, strict=True) if sources is not None else ((f, f) for f in frames)
    for frame, src in pairs:
        cur, g = frame.astype(np.float32) / 255.0, grey(src)
        if prev is not None:
            fw, bw = est(prev_src, g), est(g, prev_src)
            err = warp_error(prev, cur, fw, visible(fw, bw))
            out.append(float("nan") if err is None else err)
        prev, prev_src = cur, g
    return out
