"""A self-contained HTML report of a finished (or partly finished) job's OUTPUT.

One file, no external assets: a contact sheet of originals beside outputs (inline base64 JPEG
thumbnails), inline SVG plots of throughput and quality metrics, and a table of failures with
their reasons. Every string from the data is HTML-escaped (ids and errors come from users).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipeline import metrics

THUMB_SIDE = 192
REPORT_KEY = "report.html"


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> str:
    """Encoded image bytes -> a ``data:`` URI of a JPEG thumbnail ("" if undecodable)."""
    from PIL import Image

    from pipeline.codec import decode_image

    try:
        array = decode_image(data).array
    except Exception:  # noqa: BLE001 - a failed input has no thumbnail; the table says why
        return ""
    img = Image.fromarray(array)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- SVG ------------------------------------------------------------------------------------------


def _ticks(lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * i / 4 for i in range(5)]


def svg_line(xs: Sequence[float], ys: Sequence[float], *, title: str, xlabel: str, ylabel: str) -> str:
    """A small line chart as an inline ``<svg>`` element."""
    w, h, left, bottom, top, right = 480, 240, 56, 36, 28, 12
    if not xs:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top)

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" class="plot">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#444"/>',
    ]
    for t in _ticks(y0, y1):
        parts.append(f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{px(t):.1f}" y="{h - bottom + 14}" text-anchor="middle" font-size="10">{t:.3g}</text>')
    parts += [
        f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>',
        f'<text x="12" y="{h / 2}" font-size="11" transform="rotate(-90 12 {h / 2})" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>",
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>',
        "</svg>",
    ]
    return "".join(parts)


def svg_bars(labels: Sequence[str], values: Sequence[float], *, title: str) -> str:
    """A horizontal bar chart (one bar per image) as an inline ``<svg>``."""
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    row, left, w = 16, 160, 480
    h = 28 + row * len(values)
    top = max(values) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" class="plot">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = 24 + i * row
        bw = (w - left - 60) * v / top
        parts.append(
            f'<text x="{left - 4}" y="{y + 11}" text-anchor="end" font-size="10">{html.escape(label[:28])}</text>'
        )
        parts.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{row - 4}" fill="#ff7f0e"/>')
        parts.append(f'<text x="{left + bw + 4:.1f}" y="{y + 11}" font-size="10">{v:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- the report -----------------------------------------------------------------------------------


def load(storage: Any) -> tuple[pa.Table, dict[str, Any]]:
    """All metrics rows (sorted by manifest row) and the ``_SUCCESS`` summary ({} if unfinished)."""
    from pipeline.runner import SUCCESS_KEY, collect_metrics

    table = collect_metrics(storage)
    if table.num_rows:
        table = table.sort_by("row")
    summary = json.loads(storage.get(SUCCESS_KEY)) if storage.exists(SUCCESS_KEY) else {}
    return table, summary


def _original(uri: str, config: dict[str, Any]) -> str:
    from types import SimpleNamespace

    from pipeline.worker import read_input

    try:
        return thumbnail(read_input(uri, SimpleNamespace(**config)))
    except Exception:  # noqa: BLE001 - the source may be gone or unreadable now; show a blank
        return ""


def _img(src: str, alt: str) -> str:
    if not src:
        return f'<div class="missing">{html.escape(alt)}</div>'
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def render(storage: Any, *, max_thumbs: int = 48) -> str:
    """The report's HTML text."""
    table, summary = load(storage)
    rows = table.to_pylist()
    config = summary.get("config", {})
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]

    cells = []
    for r in ok[:max_thumbs]:
        key = r.get("output_uri") or ""
        try:
            out = thumbnail(storage.get(storage_key(storage, key)))
        except Exception:  # noqa: BLE001
            out = ""
        cells.append(
            f"<figure>{_img(_original(r['source_uri'], config), 'original')}{_img(out, 'output')}"
            f"<figcaption>{html.escape(r['image_id'])}<br><small>{html.escape(r.get('style') or '')}</small>"
            "</figcaption></figure>"
        )

    finished = sorted(r["finished_at"] for r in rows if r.get("finished_at"))
    t0 = finished[0] if finished else 0.0
    plots = [
        svg_line(
            [t - t0 for t in finished],
            list(range(1, len(finished) + 1)),
            title="images finished over time",
            xlabel="seconds since the first image",
            ylabel="images",
        )
    ]
    stylize_s = [(r["image_id"], r["seconds_stylize"]) for r in ok if r.get("seconds_stylize") is not None]
    if stylize_s:
        plots.append(svg_bars([a for a, _ in stylize_s], [b for _, b in stylize_s], title="seconds to stylize"))
    for col in metrics.QUALITY_COLUMNS:
        vals = [(r["image_id"], r[col]) for r in ok if r.get(col) is not None]
        if vals:
            plots.append(svg_bars([a for a, _ in vals], [b for _, b in vals], title=col.replace("_", " ")))

    failure_rows = "".join(
        f"<tr><td>{html.escape(r['image_id'])}</td><td>{html.escape(r['source_uri'])}</td>"
        f"<td>{html.escape(r.get('error') or '')}</td></tr>"
        for r in failed
    )
    facts = {
        "rows": len(rows),
        "ok": len(ok),
        "failed": len(failed),
        "images/s (last run)": summary.get("images_per_second", "n/a"),
        "wall seconds (last run)": summary.get("wall_seconds", "n/a"),
        "stylizer": config.get("stylizer", ""),
        "complete": "yes" if summary else "no (_SUCCESS missing)",
    }
    fact_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stylize report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
figure {{ display: inline-block; margin: 6px; text-align: center; vertical-align: top; }}
figure img, .missing {{ width: {THUMB_SIDE // 1.5:.0f}px; margin: 1px; vertical-align: top; }}
.missing {{ display: inline-block; height: 80px; background: #eee; font-size: 11px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
.plot {{ margin: 8px; }}
</style></head><body>
<h1>stylize report</h1>
<p>{html.escape(storage.root_uri)}</p>
<table class="facts">{fact_rows}</table>
<h2>Contact sheet</h2><p>original | output ({min(len(ok), max_thumbs)} of {len(ok)})</p>
<div class="sheet">{"".join(cells)}</div>
<h2>Throughput and quality</h2>
<div class="plots">{"".join(plots)}</div>
<h2>Failures ({len(failed)})</h2>
<table class="failures"><tr><th>image_id</th><th>source</th><th>reason</th></tr>{failure_rows}</table>
</body></html>
"""


def storage_key(storage: Any, uri: str) -> str:
    """The key of ``uri`` under ``storage``'s root (outputs are recorded as full URIs)."""
    root = storage.root_uri.rstrip("/")
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri


def write_report(storage: Any, *, max_thumbs: int = 48) -> str:
    """Render and store ``OUTPUT/report.html``; returns its URI."""
    return storage.put(REPORT_KEY, render(storage, max_thumbs=max_thumbs).encode())
