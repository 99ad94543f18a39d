"""The HTML report: self-contained, escaped, with thumbnails, plots and the failure table."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

import tests.pipeline_fakes  # noqa: F401 - registers test-invert
from pipeline import metrics, worker
from pipeline.cli import app
from pipeline.report import render, svg_bars, svg_line
from pipeline.runner import SUCCESS_KEY, shard_key
from pipeline.storage import Storage
from tests.pipeline_helpers import encode, job_config, photo, write_inputs


def finished_output(tmp_path: Path) -> Storage:
    """A job output made without Ray: the worker's rows, one committed shard, _SUCCESS."""
    files = {f"p{i}": encode(photo((40, 30), seed=i)) for i in range(3)}
    files["broken"] = b"<script>alert(1)</script>"
    paths = write_inputs(tmp_path / "in", files)
    rows = [{"image_id": k, "uri": u, "row": n, "shard": 0, "style": "1"} for n, (k, u) in enumerate(paths.items())]
    rows.append({"image_id": "<b>evil</b>", "uri": "memory://x", "row": 4, "shard": 0, "style": "1"})
    config = job_config(tmp_path / "m.parquet", tmp_path / "out")
    storage = Storage(str(tmp_path / "out"))
    out = worker.metric_rows(worker.process_rows(rows, worker.Stylist(config), storage))
    table = metrics.to_table(out)
    storage.put(shard_key(0), metrics.table_bytes(table))
    summary = metrics.summarize(table, config=config.model_dump(mode="json"), wall_seconds=2.0, processed=5)
    storage.put(SUCCESS_KEY, metrics.summary_bytes(summary))
    return storage


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    storage = finished_output(tmp_path)
    page = render(storage)
    assert page.count('<img src="data:image/jpeg;base64,') == 6  # 3 originals + 3 outputs
    assert "<svg" in page and "images finished over time" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from outside
    assert "<script>" not in page and "<b>evil</b>" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page
    failures = page.split("<h2>Failures (2)</h2>")[1]
    assert "not allowed" in failures and "broken" in failures


def test_report_cli_writes_report_html(tmp_path: Path) -> None:
    storage = finished_output(tmp_path)
    result = CliRunner().invoke(app, ["report", storage.root_uri])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == tmp_path / "out" / "report.html" and path.read_text().startswith("<!doctype html>")
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["rows"] == 5


def test_report_cli_refuses_a_folder_without_metrics(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0


def test_svg_plots_scale_points_into_the_box() -> None:
    svg = svg_line([0, 1, 2], [0, 5, 10], title="t", xlabel="x", ylabel="y")
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    xs = [float(p.split(",")[0]) for p in points]
    ys = [float(p.split(",")[1]) for p in points]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # up and to the right
    assert all(0 <= x <= 480 for x in xs) and all(0 <= y <= 240 for y in ys)
    bars = svg_bars(["a", "b"], [1.0, 2.0], title="b")
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="([\d.]+)"', bars)]
    assert widths[1] == 2 * widths[0]
