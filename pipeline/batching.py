"""Batches that fill: group a window of decoded images into model calls of up to ``batch_size``.

A real archive has many sizes, and dataset generation gives every image its own style, so
stacking only identical (height, width, style) leaves most calls with one image. Here:

1. images of exactly the same size go together first;
2. the rest are snapped to a 64 px, then a 128 px grid (each side rounded to the nearest
   multiple, only where that changes it by at most 1/8), stylized at the snapped size and resized
   back to their exact size afterwards; nothing is padded, so instance-norm statistics are those
   of the picture itself;
3. styles mix within a call when the family conditions each sample exactly
   (``Stylizer.per_sample_styles``); otherwise the style spec is part of the grouping key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

GRIDS = (64, 128)  # snapping steps, finer first


@dataclass(frozen=True)
class Call:
    """One model call: the indices of its images and the size they run at."""

    items: tuple[int, ...]
    height: int
    width: int


def snap(side: int, grid: int) -> int | None:
    """``side`` rounded to a multiple of ``grid``, or None where that would change it by more than 1/8."""
    if grid * 4 > side:
        return None
    return round(side / grid) * grid


def plan_calls(
    sizes: Sequence[tuple[int, int]],
    keys: Sequence[Hashable],
    batch_size: int,
    *,
    grids: Sequence[int] = GRIDS,
) -> list[Call]:
    """Model calls covering every index once. ``sizes`` are (H, W); ``keys`` must match within a call
    (the style spec, or one constant when styles can mix). Exact sizes first, then each grid in turn
    for what is left; the last partial calls run at their images' own size where they share one."""
    calls: list[Call] = []
    left = list(range(len(sizes)))
    levels: list[int | None] = [None, *grids]
    for level, grid in enumerate(levels):
        buckets: dict[tuple[Hashable, int, int], list[int]] = defaultdict(list)
        unsnapped = []
        for i in left:
            h, w = sizes[i]
            sh, sw = (h, w) if grid is None else (snap(h, grid), snap(w, grid))
            if sh is None or sw is None:
                unsnapped.append(i)
            else:
                buckets[(keys[i], sh, sw)].append(i)
        last = level == len(levels) - 1
        left = unsnapped
        for (_, h, w), idx in buckets.items():
            full = len(idx) if last else len(idx) - len(idx) % batch_size
            for j in range(0, full, batch_size):
                calls.append(_call(idx[j : j + batch_size], h, w, sizes))
            left.extend(idx[full:])
    for i in left:  # too small to snap, or alone: as it is
        calls.append(Call((i,), *sizes[i]))
    return calls


def _call(idx: list[int], h: int, w: int, sizes: Sequence[tuple[int, int]]) -> Call:
    if len({sizes[i] for i in idx}) == 1:  # one exact size: no resize needed
        h, w = sizes[idx[0]]
    return Call(tuple(idx), h, w)
