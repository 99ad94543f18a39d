"""A self-contained HTML report of a finished (or partly finished) job's OUTPUT, at any scale.

One file, no external assets, and a size that does not grow with the job: summary numbers,
inline SVG histograms and percentiles of the timings and quality metrics, throughput over time,
failures counted by kind and stage (one example each), a contact sheet of a seeded random sample of
ok images (original beside output, small inline JPEG thumbnails) and the worst images by a metric.
Only the shown rows' images are ever read. Every string from the data is HTML-escaped.

This module writes the HTML; ``report_data`` reads and counts, ``report_svg`` plots, ``report_images``
makes thumbnails and ``report_video`` the video section. It reads the job's output contract only
(``pipeline.layout``); it does not import the runner, the worker or torch.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report_data import (
    QUALITY_COLUMNS,
    count_failures,
    count_notes,
    floats,
    load,
    percentiles,
    sample_rows,
    timing_columns,
    worst_rows,
)
from pipeline.report_images import Shown, Unread, read_thumbs, source_options
from pipeline.report_svg import svg_bars, svg_histogram, throughput_plots
from pipeline.report_video import MAX_VIDEOS, section

REPORT_KEY = "report.html"
SAMPLE = 24
WORST = 8
MAX_KINDS = 30


def _fmt(v: float) -> str:
    return f"{v:.3g}"


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


def _unread_note(unread: Unread, shown: int) -> str:
    """The line that says why originals are missing: the job's credentials are not kept in ``_SUCCESS``."""
    if not unread.count:
        return ""
    return (
        f'<p class="unread">{unread.count} of {shown} originals could not be read ({html.escape(unread.first[:300])}).'
        " The job's credentials are not stored with its output: give yours with <code>stylize report "
        "--storage-option key=value</code> or the environment (AWS_ACCESS_KEY_ID, ...).</p>"
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
    storage: Any,
    *,
    sample: int = SAMPLE,
    seed: int = 0,
    worst: int = WORST,
    worst_by: str | None = "content_distance",
    storage_options: dict[str, Any] | None = None,
) -> str:
    """The report's HTML text. Reads the metrics shards and only the images of the shown rows; sources with
    the caller's ``storage_options`` (and environment), never the masked ones ``_SUCCESS`` records."""
    table, summary = load(storage)
    config = summary.get("config") or {}
    options = source_options(config.get("storage_options"), storage_options)
    is_ok = pc.fill_null(pc.equal(table.column("status"), "ok"), False)
    ok = table.filter(is_ok)
    failed = table.filter(pc.invert(is_ok))
    ok_mask = is_ok.to_numpy(zero_copy_only=False).astype(bool) if table.num_rows else np.zeros(0, bool)
    finished_all = floats(table, "finished_at", keep_nan=True)
    has_time = np.isfinite(finished_all)
    finished = finished_all[has_time]

    # videos get their own section (pipeline.report_video); the contact sheet is of photos
    is_video = pc.fill_null(pc.equal(ok.column("media_type"), "video"), False)
    videos, ok_all, ok = ok.filter(is_video), ok, ok.filter(pc.invert(is_video))
    video_html = section(storage, videos.slice(0, MAX_VIDEOS).to_pylist(), options, videos.num_rows)

    # the images: a seeded sample plus the worst by a metric, each row read once
    picked = sample_rows(ok, sample, seed)
    worst_col, worst_idx = worst_rows(ok, worst, worst_by)
    wanted = list(dict.fromkeys([*picked, *worst_idx]))
    shown = {i: Shown(i, r) for i, r in zip(wanted, ok.take(wanted).to_pylist(), strict=True)} if wanted else {}
    unread = read_thumbs(storage, list(shown.values()), config.get("allowed_schemes"), options)
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
    timing_stats = [(c, percentiles(floats(ok, c))) for c in timings]
    quality_stats = [(c, percentiles(floats(ok, c))) for c in QUALITY_COLUMNS]
    pixels = floats(ok, "width", keep_nan=True) * floats(ok, "height", keep_nan=True) / 1e6
    size_stats = [("input megapixels", percentiles(pixels[np.isfinite(pixels)]))]
    timing_plots = [svg_histogram(floats(ok, c), title=c.replace("_", " ")) for c in timings]
    quality_plots = [
        svg_histogram(floats(ok, c), title=c.replace("_", " ")) for c in QUALITY_COLUMNS if len(floats(ok, c))
    ]
    plots = throughput_plots(finished, ok_mask[has_time])

    kinds = count_failures(failed)
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
    notes = count_notes(ok.filter(pc.is_valid(ok.column("note"))))
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
<tr><th>count</th><th>kind in stage</th><th>example image_id</th><th>example reason</th></tr>{kind_rows}
</table>{more_kinds}
{video_html}
<h2>Contact sheet</h2><p>original | output: a random sample of {len(picked)} of
{ok.num_rows - videos.num_rows:,} ok images (seed {seed})</p>{_unread_note(unread, len(shown))}
<div class="sheet">{sheet}</div>
<h2>{worst_title}</h2>{worst_note}
<div class="sheet">{worst_cells}</div>
<h2>Notes ({sum(k.count for k in notes):,})</h2>
<table class="notes"><tr><th>count</th><th>kind</th><th>example image_id</th></tr>{note_rows}</table>
</body></html>
"""


def write_report(
    storage: Any,
    *,
    sample: int = SAMPLE,
    seed: int = 0,
    worst: int = WORST,
    worst_by: str | None = "content_distance",
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Render and store ``OUTPUT/report.html``; returns its URI."""
    page = render(storage, sample=sample, seed=seed, worst=worst, worst_by=worst_by, storage_options=storage_options)
    return storage.put(REPORT_KEY, page.encode())
