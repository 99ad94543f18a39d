"""The report's plots as small inline SVG (no plotting library): line, stacked columns, bars, histogram,
and the throughput pair. Each takes aggregated points (bins, kinds), never one mark per image."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

HIST_BINS = 40
TIME_BINS = 60
PLOT_W, PLOT_H = 370, 210
HIST_W, HIST_H = 276, 180
_LEFT, _BOTTOM, _TOP, _RIGHT = 44, 34, 26, 14


def _tick(v: float) -> str:
    """A short axis label: 0.0123, 4.5, 870, 12k, 3.4M."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}" if a >= 100 else f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, w: int, h: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" class="plot">',
        f'<text x="{w / 2}" y="15" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{_LEFT}" y1="{h - _BOTTOM}" x2="{w - _RIGHT}" y2="{h - _BOTTOM}" stroke="#444"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{h - _BOTTOM}" stroke="#444"/>',
        f'<text x="{w / 2}" y="{h - 3}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>',
        f'<text x="11" y="{h / 2}" font-size="11" transform="rotate(-90 11 {h / 2})" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>",
    ]


def _axis_ticks(x0: float, x1: float, y0: float, y1: float, w: int, h: int) -> list[str]:
    parts = []
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        py = h - _BOTTOM - (y - y0) / (y1 - y0) * (h - _BOTTOM - _TOP)
        parts.append(f'<text x="{_LEFT - 4}" y="{py + 4:.1f}" text-anchor="end" font-size="10">{_tick(y)}</text>')
    steps = 4 if w >= 320 else 2  # narrow plots get fewer x labels, so they never overlap
    for i in range(steps + 1):
        x = x0 + (x1 - x0) * i / steps
        px = _LEFT + (x - x0) / (x1 - x0) * (w - _LEFT - _RIGHT)
        anchor = "start" if i == 0 else "end" if i == steps else "middle"
        parts.append(
            f'<text x="{px:.1f}" y="{h - _BOTTOM + 13}" text-anchor="{anchor}" font-size="10">{_tick(x)}</text>'
        )
    return parts


def svg_line(
    xs: Sequence[float], ys: Sequence[float], *, title: str, xlabel: str, ylabel: str, w: int = PLOT_W, h: int = PLOT_H
) -> str:
    """A small line chart as an inline ``<svg>`` (pass aggregated points, not one per image)."""
    if not len(xs):
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = float(min(xs)), float(max(xs))
    y0, y1 = 0.0, float(max(ys)) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * (w - _LEFT - _RIGHT)

    def py(y: float) -> float:
        return h - _BOTTOM - (y - y0) / (y1 - y0) * (h - _BOTTOM - _TOP)

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    parts = _frame(title, xlabel, ylabel, w, h) + _axis_ticks(x0, x1, y0, y1, w, h)
    parts += [f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>', "</svg>"]
    return "".join(parts)


def svg_columns(
    edges: Sequence[float],
    stacks: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    marks: Sequence[tuple[str, float]] = (),
    w: int = PLOT_W,
    h: int = PLOT_H,
) -> str:
    """Stacked vertical bars over bins ``edges`` (len = bins + 1); ``stacks`` are (colour, heights); ``marks``
    are labelled vertical lines (percentiles)."""
    bins = len(edges) - 1
    if bins <= 0 or not stacks:
        return f"<p>{html.escape(title)}: no data</p>"
    totals = np.sum([np.asarray(v, dtype=np.float64) for _, v in stacks], axis=0)
    x0, x1 = float(edges[0]), float(edges[-1])
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = float(totals.max()) or 1.0
    inner_w, inner_h = w - _LEFT - _RIGHT, h - _BOTTOM - _TOP

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * inner_w

    parts = _frame(title, xlabel, ylabel, w, h) + _axis_ticks(x0, x1, 0.0, y1, w, h)
    base = np.zeros(bins)
    for colour, heights in stacks:
        for i, v in enumerate(heights):
            if v <= 0:
                continue
            bh = v / y1 * inner_h
            y = h - _BOTTOM - (base[i] / y1 * inner_h) - bh
            bx, bw = px(edges[i]), max(px(edges[i + 1]) - px(edges[i]) - 0.5, 0.5)
            parts.append(f'<rect x="{bx:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{colour}"/>')
            base[i] += v
    for k, (label, x) in enumerate(marks):
        if x0 <= x <= x1:
            mx = px(x)
            parts.append(
                f'<line x1="{mx:.1f}" y1="{_TOP}" x2="{mx:.1f}" y2="{h - _BOTTOM}" stroke="#d62728" '
                'stroke-dasharray="3,2"/>'
            )
            right = mx > _LEFT + 0.6 * inner_w  # labels near the right edge go on the line's left
            parts.append(
                f'<text x="{mx - 2 if right else mx + 2:.1f}" y="{_TOP + 10 + 11 * k}" font-size="10" fill="#d62728"'
                f' text-anchor="{"end" if right else "start"}">{html.escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(labels: Sequence[str], values: Sequence[float], *, title: str, w: int = 480) -> str:
    """A horizontal bar chart (one bar per label: a handful of categories, not one per image)."""
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    row, left = 16, w * 9 // 20
    h = 28 + row * len(values)
    top = max(values) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" class="plot">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = 24 + i * row
        bw = (w - left - 60) * v / top
        chars = left // 6
        short = label if len(label) <= chars else label[: chars - 1] + "…"
        parts.append(f'<text x="{left - 4}" y="{y + 11}" text-anchor="end" font-size="10">{html.escape(short)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{row - 4}" fill="#ff7f0e"/>')
        parts.append(f'<text x="{left + bw + 4:.1f}" y="{y + 11}" font-size="10">{v:.6g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(values: np.ndarray, *, title: str, bins: int = HIST_BINS) -> str:
    """A histogram with p50/p90/p99 marks (values under the x axis); the range stops at p99.9 and the last
    bin holds the tail above it."""
    if not len(values):
        return f"<p>{html.escape(title)}: no data</p>"
    lo, hi = float(values.min()), float(np.percentile(values, 99.9))
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.01
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    p = np.percentile(values, [50, 90, 99])
    marks = [(f"p{q}", float(v)) for q, v in zip((50, 90, 99), p, strict=True)]
    xlabel = " · ".join(f"{label} {v:.2g}" for label, v in marks)  # the unit is in the title
    return svg_columns(
        edges, [("#1f77b4", counts)], title=title, xlabel=xlabel, ylabel="images", marks=marks, w=HIST_W, h=HIST_H
    )


def throughput_plots(finished: np.ndarray, ok_mask: np.ndarray, bins: int = TIME_BINS) -> list[str]:
    """Images finished per second in time bins (ok and failed stacked), and the cumulative count."""
    if not len(finished):
        return ["<p>throughput: no finished_at times</p>"]
    t0 = float(finished.min())
    rel = finished - t0
    span = float(rel.max()) or 1.0
    edges = np.linspace(0.0, span, bins + 1)
    width = span / bins
    ok_counts, _ = np.histogram(rel[ok_mask], bins=edges)
    bad_counts, _ = np.histogram(rel[~ok_mask], bins=edges)
    rate = svg_columns(
        edges,
        [("#1f77b4", ok_counts / width), ("#d62728", bad_counts / width)],
        title="throughput (blue ok, red failed)",
        xlabel="seconds since the first image",
        ylabel="images/s",
    )
    cumulative = np.cumsum(ok_counts + bad_counts)
    line = svg_line(
        [0.0, *edges[1:].tolist()],
        [0.0, *cumulative.tolist()],
        title="images finished over time",
        xlabel="seconds since the first image",
        ylabel="images",
    )
    return [rate, line]
