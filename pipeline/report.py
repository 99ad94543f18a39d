"""A self-contained HTML report of a finished (or partly finished) job's OUTPUT, at any scale.

One file, no external assets, and a size that does not grow with the job: summary numbers,
inline SVG histograms and percentiles of the timings and quality metrics, throughput over time,
failures counted by kind (one example each), a contact sheet of a seeded random sample of ok
images (original beside output, small inline JPEG thumbnails) and the worst images by a metric.
Only the shown rows' images are ever read. Every string from the data is HTML-escaped.

It reads the job's output contract only: ``metrics/shard-NNNNN.parquet``, ``images/...`` and
``_SUCCESS``; it does not import the runner, the worker or torch.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.layout import METRICS_PREFIX, SHARD_FILE

REPORT_KEY = "report.html"
SUCCESS_KEY = "_SUCCESS"
TIMING_COLUMNS = ("seconds_decode", "seconds_stylize", "seconds_encode")  # and any other seconds_* column found
QUALITY_COLUMNS = ("style_distance", "content_distance", "colour_distance")
WORST_FALLBACKS = ("content_distance", "style_distance", "colour_distance", "seconds_stylize")

THUMB_SIDE = 160
SAMPLE = 24
WORST = 8
MAX_KINDS = 30
TIME_BINS = 60
HIST_BINS = 40
THUMB_MAX_PIXELS = 64_000_000  # above this a thumbnail is not worth the decode; a placeholder is shown


# --- reading --------------------------------------------------------------------------------------


def load(storage: Any) -> tuple[pa.Table, dict[str, Any]]:
    """All metrics rows (shards concatenated, unsorted) and the ``_SUCCESS`` summary ({} if unfinished)."""
    keys = [k for k in storage.list(METRICS_PREFIX + "/") if SHARD_FILE.search(k)]
    tables = [pq.read_table(io.BytesIO(storage.get(k))) for k in keys]
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    for name, typ in _EXPECTED.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, typ))
    summary = json.loads(storage.get(SUCCESS_KEY)) if storage.exists(SUCCESS_KEY) else {}
    return table, summary


_EXPECTED: dict[str, pa.DataType] = {
    **{
        c: pa.string()
        for c in ("image_id", "source_uri", "status", "error", "output_uri", "stylizer", "style", "note", "media_type")
    },
    **{c: pa.int64() for c in ("shard", "row", "width", "height", "out_width", "out_height")},
    **{c: pa.float64() for c in (*TIMING_COLUMNS, *QUALITY_COLUMNS, "finished_at")},
}


def timing_columns(table: pa.Table) -> list[str]:
    """The known stage timings first, then any other ``seconds_*`` column the runner has added."""
    extra = sorted(c for c in table.column_names if c.startswith("seconds_") and c not in TIMING_COLUMNS)
    return [*TIMING_COLUMNS, *extra]


def storage_key(storage: Any, uri: str) -> str:
    """The key of ``uri`` under ``storage``'s root (outputs are recorded as full URIs)."""
    root = storage.root_uri.rstrip("/")
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> str:
    """Encoded image bytes -> a ``data:`` URI of a small JPEG thumbnail ("" if undecodable or huge)."""
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > THUMB_MAX_PIXELS:
                return ""
            img.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a fraction of the size
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            img.thumbnail((side, side))
    except Exception:  # noqa: BLE001 - a missing or bad image gets a placeholder, never a crash
        return ""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- numbers --------------------------------------------------------------------------------------


def _floats(table: pa.Table, column: str, *, keep_nan: bool = False) -> np.ndarray:
    """The column's finite values as float64 (nulls dropped, or NaN with ``keep_nan``)."""
    values = pc.cast(table.column(column), pa.float64()).to_numpy(zero_copy_only=False)
    return values if keep_nan else values[np.isfinite(values)]


def percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "n": float(len(values)),
        "mean": float(values.mean()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": float(values.max()),
    }


_URI = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s'\"]*[^\s'\",;:.)]")
_PATH = re.compile(r"(?<![\w<>])(?:~|\.{1,2})?/[^\s'\",;:()]+")
_QUOTED = re.compile(r"'[^']{17,}'|\"[^\"]{17,}\"")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def error_kind(message: str | None) -> str:
    """An error message with its particulars (URIs, paths, long quotes, hex, numbers) stripped: its kind."""
    text = message or "(no reason given)"
    text = _URI.sub("<uri>", text)
    text = _PATH.sub("<path>", text)
    text = _QUOTED.sub("'…'", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("N", text)
    text = " ".join(text.split())
    return text[:160] + ("…" if len(text) > 160 else "")


@dataclass
class Kind:
    kind: str
    count: int
    example_id: str
    example: str


def count_kinds(rows: pa.Table, column: str = "error") -> list[Kind]:
    """Rows grouped by the ``error_kind`` of ``column``, most frequent first, with the first example of each."""
    kinds: dict[str, Kind] = {}
    cache: dict[str | None, str] = {}
    ids = rows.column("image_id").to_pylist()
    for image_id, error in zip(ids, rows.column(column).to_pylist(), strict=True):
        kind = cache.get(error)
        if kind is None:
            kind = cache[error] = error_kind(error)
        entry = kinds.get(kind)
        if entry is None:
            kinds[kind] = Kind(kind, 1, image_id or "", error or "")
        else:
            entry.count += 1
    return sorted(kinds.values(), key=lambda k: (-k.count, k.kind))


def sample_rows(ok: pa.Table, n: int, seed: int) -> list[int]:
    """Indices into ``ok`` of a seeded random sample of ``n`` rows; the same seed gives the same manifest rows."""
    if not ok.num_rows or n <= 0:
        return []
    order = np.argsort(ok.column("row").to_numpy(zero_copy_only=False), kind="stable")  # shard order must not matter
    picked = np.random.default_rng(seed).choice(len(order), size=min(n, len(order)), replace=False)
    return [int(i) for i in order[np.sort(picked)]]


def worst_rows(ok: pa.Table, n: int, by: str | None) -> tuple[str | None, list[int]]:
    """``(column, indices)``: the ``n`` ok rows with the highest ``by`` (else the first fallback column with values)."""
    for column in [by, *WORST_FALLBACKS] if by else WORST_FALLBACKS:
        if column not in ok.column_names or n <= 0:
            continue
        values = _floats(ok, column, keep_nan=True)
        values = np.where(np.isfinite(values), values, -np.inf)
        if np.isfinite(values).any():
            top = np.argsort(-values, kind="stable")[: min(n, int(np.isfinite(values).sum()))]
            return column, [int(i) for i in top]
    return None, []


# --- SVG ------------------------------------------------------------------------------------------

PLOT_W, PLOT_H = 370, 210
HIST_W, HIST_H = 276, 180
_LEFT, _BOTTOM, _TOP, _RIGHT = 44, 34, 26, 14


def _fmt(v: float) -> str:
    return f"{v:.3g}"


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


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Shown:
    """One ok row on the contact sheet (or among the worst), with its thumbnails."""

    index: int
    row: dict[str, Any]
    original: str = ""
    output: str = ""


def _read_thumbs(storage: Any, shown: list[Shown], config: dict[str, Any]) -> None:
    """Fill in thumbnails, reading exactly one source and one output per shown row (in a few threads)."""
    from pipeline.storage import ALLOWED_SCHEMES, read_source

    allowed = config.get("allowed_schemes") or sorted(ALLOWED_SCHEMES)
    options = config.get("storage_options") or None

    def original(s: Shown) -> str:
        try:
            return thumbnail(read_source(s.row["source_uri"] or "", allowed, options))
        except Exception:  # noqa: BLE001 - the source may be gone or unreadable now: a placeholder
            return ""

    def output(s: Shown) -> str:
        try:
            return thumbnail(storage.get(storage_key(storage, s.row["output_uri"] or "")))
        except Exception:  # noqa: BLE001
            return ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        originals = list(pool.map(original, shown))
        outputs = list(pool.map(output, shown))
    for s, a, b in zip(shown, originals, outputs, strict=True):
        s.original, s.output = a, b


def _img(src: str, alt: str) -> str:
    if not src:
        return f'<div class="missing">{html.escape(alt)} missing</div>'
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _figure(s: Shown, label: str = "", anchor: bool = True) -> str:
    r = s.row
    attr = f' id="r{int(r["row"])}"' if anchor and r.get("row") is not None else ""
    size = f"{r.get('out_width')}x{r.get('out_height')}" if r.get("out_width") else ""
    extra = f"<br><b>{html.escape(label)}</b>" if label else ""
    return (
        f"<figure{attr}>{_img(s.original, 'original')}{_img(s.output, 'output')}"
        f"<figcaption>{html.escape(r.get('image_id') or '')}<br><small>style {html.escape(r.get('style') or '-')}"
        f" · {html.escape(size)}</small>{extra}</figcaption></figure>"
    )


def _stats_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    head = "<tr><th>column</th><th>n</th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>"
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{int(s['n'])}</td>"
        + "".join(f"<td>{_fmt(s[k])}</td>" for k in ("mean", "p50", "p90", "p99", "max"))
        + "</tr>"
        for name, s in rows
        if s
    )
    return f'<table class="stats">{head}{body}</table>'


_SUMMARY_SKIP = {"config", "versions", "rows", "ok", "failed", "images_per_second", "wall_seconds", "finished_at"}


def _facts(table: pa.Table, ok_n: int, summary: dict[str, Any], finished: np.ndarray) -> dict[str, Any]:
    config = summary.get("config") or {}
    stylizers = pc.unique(table.column("stylizer").drop_null()).to_pylist() if table.num_rows else []
    span = float(finished.max() - finished.min()) if len(finished) > 1 else 0.0
    n = table.num_rows
    facts: dict[str, Any] = {
        "rows": f"{n:,}",
        "ok": f"{ok_n:,}",
        "failed": f"{n - ok_n:,}" + (f" ({(n - ok_n) / n:.1%})" if n else ""),
        "images/s (last run)": summary.get("images_per_second", "n/a"),
        "wall seconds (last run)": summary.get("wall_seconds", "n/a"),
        "images/s over the finished_at span": f"{n / span:.4g} ({span:.4g} s)" if span > 0 else "n/a",
        "stylizer": config.get("stylizer") or ", ".join(str(s) for s in stylizers[:5]),
        "complete": "yes" if summary else "no (_SUCCESS missing)",
    }
    for key, value in sorted(summary.items()):  # whatever else the runner records (batch_fill, ...)
        if key not in _SUMMARY_SKIP and not key.startswith("mean_") and isinstance(value, (int, float, str, bool)):
            facts[key.replace("_", " ")] = f"{value:.4g}" if isinstance(value, float) else value
    return facts


def render(
    storage: Any, *, sample: int = SAMPLE, seed: int = 0, worst: int = WORST, worst_by: str | None = "content_distance"
) -> str:
    """The report's HTML text. Reads the metrics shards and only the images of the shown rows."""
    table, summary = load(storage)
    config = summary.get("config") or {}
    is_ok = pc.fill_null(pc.equal(table.column("status"), "ok"), False)
    ok = table.filter(is_ok)
    failed = table.filter(pc.invert(is_ok))
    ok_mask = is_ok.to_numpy(zero_copy_only=False).astype(bool) if table.num_rows else np.zeros(0, bool)
    finished_all = _floats(table, "finished_at", keep_nan=True)
    has_time = np.isfinite(finished_all)
    finished = finished_all[has_time]

    # videos get their own section (pipeline.report_video); the contact sheet is of photos
    is_video = pc.fill_null(pc.equal(ok.column("media_type"), "video"), False)
    videos, ok_all, ok = ok.filter(is_video), ok, ok.filter(pc.invert(is_video))
    from pipeline.report_video import MAX_VIDEOS, section

    video_html = section(storage, videos.slice(0, MAX_VIDEOS).to_pylist(), config, videos.num_rows)

    # the images: a seeded sample plus the worst by a metric, each row read once
    picked = sample_rows(ok, sample, seed)
    worst_col, worst_idx = worst_rows(ok, worst, worst_by)
    wanted = list(dict.fromkeys([*picked, *worst_idx]))
    shown = {i: Shown(i, r) for i, r in zip(wanted, ok.take(wanted).to_pylist(), strict=True)} if wanted else {}
    _read_thumbs(storage, list(shown.values()), config)
    rank = {i: k for k, i in enumerate(worst_idx, 1)}

    def worst_label(i: int) -> str:
        if i not in rank:
            return ""
        return f"worst #{rank[i]} by {worst_col}: {_fmt(shown[i].row[worst_col])}"

    sampled = set(picked)
    sheet = "".join(_figure(shown[i], worst_label(i)) for i in picked)
    worst_cells = "".join(_figure(shown[i], worst_label(i)) for i in worst_idx if i not in sampled)
    in_sample = [i for i in worst_idx if i in sampled]
    worst_note = (
        f"<p>Also in the sample above, and labelled there: {len(in_sample)} of {len(worst_idx)}.</p>"
        if in_sample
        else ""
    )

    # numbers and plots, over every ok row: photos and videos
    ok = ok_all
    timings = timing_columns(ok)
    timing_stats = [(c, percentiles(_floats(ok, c))) for c in timings]
    quality_stats = [(c, percentiles(_floats(ok, c))) for c in QUALITY_COLUMNS]
    pixels = _floats(ok, "width", keep_nan=True) * _floats(ok, "height", keep_nan=True) / 1e6
    size_stats = [("input megapixels", percentiles(pixels[np.isfinite(pixels)]))]
    timing_plots = [svg_histogram(_floats(ok, c), title=c.replace("_", " ")) for c in timings]
    quality_plots = [
        svg_histogram(_floats(ok, c), title=c.replace("_", " ")) for c in QUALITY_COLUMNS if len(_floats(ok, c))
    ]
    plots = throughput_plots(finished, ok_mask[has_time])

    kinds = count_kinds(failed)
    kind_rows = "".join(
        f"<tr><td>{k.count:,}</td><td>{html.escape(k.kind)}</td><td>{html.escape(k.example_id)}</td>"
        f"<td>{html.escape(k.example[:300])}</td></tr>"
        for k in kinds[:MAX_KINDS]
    )
    more_kinds = (
        f"<p>… and {len(kinds) - MAX_KINDS} more kinds ({sum(k.count for k in kinds[MAX_KINDS:]):,} rows).</p>"
        if len(kinds) > MAX_KINDS
        else ""
    )
    top_kinds = kinds[:12]
    kind_chart = svg_bars([k.kind for k in top_kinds], [k.count for k in top_kinds], title="failures by kind", w=380)
    kind_chart = kind_chart if kinds else "<p>no failures</p>"
    notes = count_kinds(ok.filter(pc.is_valid(ok.column("note"))), "note")
    note_rows = "".join(
        f"<tr><td>{k.count:,}</td><td>{html.escape(k.kind)}</td><td>{html.escape(k.example_id)}</td></tr>"
        for k in notes[:MAX_KINDS]
    )

    facts = _facts(table, ok.num_rows, summary, finished)
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    worst_title = f"Worst {len(worst_idx)} by {html.escape(worst_col)}" if worst_col else "Worst images"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stylize report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1200px; }}
h1 {{ margin-bottom: 0; }} h2 {{ margin: 1.2em 0 0.4em; border-bottom: 1px solid #ddd; }}
figure {{ display: inline-block; margin: 4px; text-align: center; vertical-align: top; font-size: 11px;
  max-width: 272px; overflow-wrap: anywhere; }}
figure img, .missing {{ height: 100px; max-width: 134px; margin: 1px; vertical-align: top; object-fit: contain; }}
.missing {{ display: inline-block; width: 100px; background: #eee; color: #888; line-height: 100px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 7px; text-align: left; vertical-align: top; }}
.stats td {{ text-align: right; font-variant-numeric: tabular-nums; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 4px; }} .facts th {{ background: #f6f6f6; }}
.cols {{ display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }}
</style></head><body>
<h1>stylize report</h1>
<p>{html.escape(storage.root_uri)}</p>
<div class="cols"><table class="facts">{fact_rows}</table>
<div>{_stats_table(timing_stats + quality_stats + size_stats)}<p><small>over ok rows; p50/p90/p99 are
percentiles</small></p></div></div>
<h2>Throughput and failures</h2>
<div class="plots">{"".join(plots)}{kind_chart}</div>
<h2>Timings and quality</h2>
<div class="plots">{"".join(timing_plots + quality_plots)}</div>
<h2>Failures ({len(failed)})</h2>
<table class="failures">
<tr><th>count</th><th>kind</th><th>example image_id</th><th>example reason</th></tr>{kind_rows}
</table>{more_kinds}
{video_html}
<h2>Contact sheet</h2><p>original | output: a random sample of {len(picked)} of
{ok.num_rows - videos.num_rows:,} ok images (seed {seed})</p>
<div class="sheet">{sheet}</div>
<h2>{worst_title}</h2>{worst_note}
<div class="sheet">{worst_cells}</div>
<h2>Notes ({sum(k.count for k in notes):,})</h2>
<table class="notes"><tr><th>count</th><th>kind</th><th>example image_id</th></tr>{note_rows}</table>
</body></html>
"""


def write_report(
    storage: Any, *, sample: int = SAMPLE, seed: int = 0, worst: int = WORST, worst_by: str | None = "content_distance"
) -> str:
    """Render and store ``OUTPUT/report.html``; returns its URI."""
    page = render(storage, sample=sample, seed=seed, worst=worst, worst_by=worst_by)
    return storage.put(REPORT_KEY, page.encode())
