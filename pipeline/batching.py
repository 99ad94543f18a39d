"""Batches that fill: group decoded images into model calls of up to ``batch_size``.

A real archive has many sizes (landscape and portrait, 4:3 and 3:2, thumbnails), and dataset
generation gives every image its own style, so stacking only identical (height, width, style)
leaves most calls with one image. Here:

1. images of exactly the same size go together first;
2. the rest go together at a shared size that changes each side of every image in the call by at
   most ``TOLERANCE`` (1/8) of that side; they are stylized at it and resized back to their exact size
   afterwards. Nothing is padded, so instance-norm statistics are those of the picture itself;
3. styles mix within a call when the family conditions each sample exactly
   (``Stylizer.per_sample_styles``); otherwise the style spec is part of the grouping key;
4. a shard's images arrive in windows (``pipeline.shard``): a window issues only full calls and
   hands what is left to the next one, so the leftovers of every window meet; the last window
   issues partial calls, each as large as the sizes allow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

TOLERANCE = 1 / 8  # the most any side of an image is stretched or shrunk to share a call


@dataclass(frozen=True)
class Call:
    """One model call: the indices of its images and the size they run at."""

    items: tuple[int, ...]
    height: int
    width: int


def fits(size: tuple[int, int], target: tuple[int, int], tolerance: float = TOLERANCE) -> bool:
    """Whether an image of ``size`` (H, W) may run at ``target``: each side changes by at most ``tolerance``."""
    return all(abs(t - s) <= tolerance * s for s, t in zip(size, target, strict=True))


def plan_calls(
    sizes: Sequence[tuple[int, int]],
    keys: Sequence[Hashable],
    batch_size: int,
    *,
    final: bool = True,
    tolerance: float = TOLERANCE,
) -> tuple[list[Call], list[int]]:
    """``(calls, left)``: model calls over the indices of ``sizes`` ((H, W) each) and the indices left for
    a later window. ``keys`` must match within a call (the style spec, or one constant when styles can
    mix). Without ``final`` only full calls are made; with it every index is in exactly one call."""
    calls: list[Call] = []
    left: list[int] = []
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_key[key].append(i)
    for idx in by_key.values():
        new, rest = _plan_one_key(idx, sizes, batch_size, final, tolerance)
        calls += new
        left += rest
    return calls, sorted(left)


def _plan_one_key(
    idx: list[int], sizes: Sequence[tuple[int, int]], batch_size: int, final: bool, tolerance: float
) -> tuple[list[Call], list[int]]:
    calls: list[Call] = []
    exact: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in idx:
        exact[sizes[i]].append(i)
    rest: list[int] = []
    for size, members in exact.items():  # whole calls of one exact size: nothing is resized
        full = len(members) - len(members) % batch_size
        calls += [Call(tuple(members[j : j + batch_size]), *size) for j in range(0, full, batch_size)]
        rest += members[full:]
    # the rest share a size: greedily the target that takes the most images, largest images first
    # (so a big photo is never scaled up to meet a small one); a target is one of the images' own sizes
    rest.sort(key=lambda i: (-sizes[i][0] * sizes[i][1], sizes[i]))
    targets = {t: [i for i in rest if fits(sizes[i], t, tolerance)] for t in dict.fromkeys(sizes[i] for i in rest)}
    alive = set(rest)
    while alive:
        best: list[int] = []
        best_target = (0, 0)
        for target, compatible in targets.items():
            members = [i for i in compatible if i in alive][:batch_size]
            if len(members) > len(best):
                best, best_target = members, target
        if len(best) < batch_size and not final:
            break
        calls.append(_call(best, best_target, sizes))
        alive.difference_update(best)
    rest = [i for i in rest if i in alive]
    return calls, rest


def _call(idx: list[int], target: tuple[int, int], sizes: Sequence[tuple[int, int]]) -> Call:
    if len({sizes[i] for i in idx}) == 1:  # one exact size: no resize needed
        target = sizes[idx[0]]
    return Call(tuple(idx), *target)
