"""How long videos are cut into segments, and which segments an output already holds. Pure Python:
the driver plans with it (no Ray, torch or PyAV), the actors cut with it, and both get the same answer.

A video of ``frames`` frames (as its manifest row's header says) longer than ``segment_frames`` becomes
``ceil(frames / segment_frames)`` segments of ``segment_frames`` slots, the last one open-ended (it runs to
the video's real end, whatever the decoder finds). Segments are keyed by manifest row
(``layout.segment_key``), so planning needs no row of the manifest, only its footer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline import layout

_MARKER = re.compile(r"row-(\d+)/seg-(\d+)\.json$")


@dataclass(frozen=True)
class Segment:
    """Slots ``start .. stop-1`` (``stop`` None: to the end) of the video in manifest row ``row``."""

    row: int
    index: int
    start: int
    stop: int | None


def cut(row: int, frames: int, segment_frames: int) -> list[Segment]:
    """The segments of a video, or ``[]`` when it is short enough to be done whole."""
    if segment_frames < 1 or frames <= segment_frames:
        return []
    n = -(-frames // segment_frames)
    return [Segment(row, k, k * segment_frames, (k + 1) * segment_frames if k < n - 1 else None) for k in range(n)]


def committed(keys: list[str]) -> set[tuple[int, int]]:
    """``(row, index)`` of the segments whose commit marker is among ``keys`` (a listing of ``_segments/``)."""
    done = set()
    for key in keys:
        m = _MARKER.search(key)
        if m:
            done.add((int(m.group(1)), int(m.group(2))))
    return done


def listing(storage) -> list[str]:  # noqa: ANN001 - a pipeline.storage.Storage
    return storage.list(layout.SEGMENTS_PREFIX + "/")
