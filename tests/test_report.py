"""The HTML report: self-contained, escaped, aggregated, and bounded in time and size at 100k rows."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pipeline.report_images
from pipeline import metrics, report_data, report_svg
from pipeline.bench.report import ERRORS, SCHEMA, bench_report, make_output
from pipeline.cli import app
from pipeline.report import render
from pipeline.report_data import message_kind
from pipeline.report_svg import svg_bars, svg_line
from pipeline.storage import Storage
from tests.pipeline_helpers import encode, photo, write_inputs

ROWS = 100_000


def small_output(tmp_path: Path) -> Storage:
    """Three ok rows with real originals and outputs, two failed rows (one with hostile text), _SUCCESS."""
    files = {f"p{i}": encode(photo((40, 30), seed=i)) for i in range(3)}
    paths = write_inputs(tmp_path / "in", files)
    storage = Storage(str(tmp_path / "out"))
    rows = []
    for n, (image_id, uri) in enumerate(paths.items()):
        out = storage.put(f"images/{image_id}.png", encode(photo((40, 30), seed=10 + n)))
        rows.append(
            {
                "image_id": image_id,
                "source_uri": uri,
                "shard": 0,
                "row": n,
                "status": "ok",
                "output_uri": out,
                "width": 40,
                "height": 30,
                "out_width": 40,
                "out_height": 30,
                "stylizer": "test-invert",
                "style": "1",
                "seconds_decode": 0.01,
                "seconds_stylize": 0.1 * (n + 1),
                "seconds_metrics": 0.03,
                "seconds_encode": 0.02,
                "content_distance": 0.5 + n / 10,
                "finished_at": 1000.0 + n,
            }
        )
    rows.append(
        {
            "image_id": "broken",
            "source_uri": str(tmp_path / "in" / "broken"),
            "shard": 0,
            "row": 3,
            "status": "failed",
            "error": "not an image: <script>alert(1)</script>",
            "error_kind": "DecodeError",
            "failed_stage": "decode",
            "finished_at": 1003.0,
        }
    )
    rows.append(
        {
            "image_id": "<b>evil</b>",
            "source_uri": "memory://x",
            "shard": 0,
            "row": 4,
            "status": "failed",
            "error": "scheme 'memory' not allowed (allowed: file, gs, s3)",
            "error_kind": "<i>InputError</i>",
            "failed_stage": "read",
            "finished_at": 1004.0,
        }
    )
    table = metrics.to_table(rows)
    storage.put("metrics/shard-00000.parquet", metrics.table_bytes(table))
    summary = {
        "rows": 5,
        "ok": 3,
        "failed": 2,
        "wall_seconds": 2.0,
        "images_per_second": 2.5,
        "batch_fill": 0.875,
        "config": {"stylizer": "test-invert"},
        "versions": {},
    }
    storage.put("_SUCCESS", json.dumps(summary).encode())
    return storage


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """100k rows over 10 shards, 5% failed in five kinds, rows pointing at 16 real image pairs."""
    return make_output(tmp_path_factory.mktemp("big") / "out", ROWS, shards=10, images=16, missing_fraction=0.1)


def sheet_ids(page: str) -> list[str]:
    sheet = page.split("<h2>Contact sheet</h2>")[1].split("<h2>")[0]
    return re.findall(r'<figure id="r(\d+)">', sheet)


def test_synthetic_outputs_keep_the_metrics_contract() -> None:
    contract = {f.name: f.type for f in metrics.METRICS_SCHEMA}
    assert all(contract.get(f.name) == f.type for f in SCHEMA)  # the synthetic shards are real metrics files
    assert set(report_data.TIMING_COLUMNS + report_data.QUALITY_COLUMNS) <= set(contract)


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    storage = small_output(tmp_path)
    page = render(storage)
    assert page.count('<img src="data:image/jpeg;base64,') == 6  # 3 originals + 3 outputs, each shown once
    assert "<svg" in page and "images finished over time" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched from outside
    assert "<script>" not in page and "<b>evil</b>" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page
    failures = page.split("<h2>Failures (2)</h2>")[1].split("<h2>")[0]
    assert "not allowed" in failures and "broken" in failures and "DecodeError in decode" in failures
    assert "&lt;i&gt;InputError&lt;/i&gt; in read" in failures  # the kind is data too: escaped
    assert "batch fill" in page and "0.875" in page  # a _SUCCESS key the report does not know is still shown
    assert "worst #1 by content_distance: 0.7" in page  # p2 has the highest content distance


def test_report_cli_writes_report_html(tmp_path: Path) -> None:
    storage = small_output(tmp_path)
    result = CliRunner().invoke(app, ["report", storage.root_uri, "--sample", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == tmp_path / "out" / "report.html" and path.read_text().startswith("<!doctype html>")
    assert len(sheet_ids(path.read_text())) == 2
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["rows"] == 5


def test_report_cli_refuses_a_folder_without_metrics(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0


def test_report_of_an_unfinished_job_with_no_ok_rows(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "out"))
    table = metrics.to_table([{"image_id": "a", "row": 0, "status": "failed", "error": "boom"}])
    storage.put("metrics/shard-00003.parquet", metrics.table_bytes(table))
    page = render(storage)
    assert "no (_SUCCESS missing)" in page and "<h2>Failures (1)</h2>" in page and sheet_ids(page) == []


def test_note_kinds_strip_particulars() -> None:
    a = message_kind("file not found: /data/x/img-001.jpg")
    assert a == message_kind("file not found: /other/img-7.jpg") == "file not found: <path>"
    assert message_kind("cannot read s3://b/k/1.jpg: TimeoutError: read timed out after 3.5 s") == (
        "cannot read <uri>: TimeoutError: read timed out after N s"
    )
    assert message_kind("image too large: 9000x8000 = 72000000 pixels") == "image too large: NxN = N pixels"
    assert message_kind(None) == "(no reason given)"


def test_svg_plots_scale_points_into_the_box() -> None:
    svg = svg_line([0, 1, 2], [0, 5, 10], title="t", xlabel="x", ylabel="y")
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    xs = [float(p.split(",")[0]) for p in points]
    ys = [float(p.split(",")[1]) for p in points]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # up and to the right
    assert all(0 <= x <= report_svg.PLOT_W for x in xs) and all(0 <= y <= report_svg.PLOT_H for y in ys)
    bars = svg_bars(["a", "b"], [1.0, 2.0], title="b")
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="\d+" width="([\d.]+)"', bars)]
    assert widths[1] == 2 * widths[0]


def test_report_at_100k_rows_is_fast_small_and_counts_failures_by_kind(big: Storage) -> None:
    start = time.perf_counter()
    page = render(big)
    seconds = time.perf_counter() - start
    size = len(page.encode())
    print(f"\nreport at {ROWS:,} rows: {seconds:.2f} s, {size:,} bytes of HTML")
    assert seconds < 15  # a guard only: the limit is 5 s on an idle machine (see pipeline.bench.report)
    assert size < 5_000_000
    assert page.count("<svg") >= 8 and page.count("<rect") < 2_000  # aggregates, not one mark per image

    table = pq.read_table(Path(big.root) / "metrics")
    failed = table.filter(pc.not_equal(table.column("status"), "ok"))
    recorded = list(
        zip(failed.column("error_kind").to_pylist(), failed.column("failed_stage").to_pylist(), strict=True)
    )
    failures = page.split(f"<h2>Failures ({failed.num_rows})</h2>")[1].split("<h2>")[0]
    rows = re.findall(r"<tr><td>([\d,]+)</td><td>([^<]+)</td>", failures)
    assert len(rows) == len(ERRORS)  # grouped by the recorded kind and stage, whatever the messages say
    counts = {kind: int(n.replace(",", "")) for n, kind in rows}
    for _, _, kind, stage in ERRORS:
        assert counts[f"{kind} in {stage}"] == recorded.count((kind, stage)) > 0, kind
    assert sum(counts.values()) == failed.num_rows


def test_sample_is_seeded_and_reads_only_the_shown_images(big: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    get, read_source = Storage.get, pipeline.report_images.read_source

    def counting_get(self: Storage, key: str) -> bytes:
        if not key.startswith("metrics/") and key != "_SUCCESS":
            reads.append(key)
        return get(self, key)

    def counting_read_source(uri: str, *args: object, **kwargs: object) -> bytes:
        reads.append(uri)
        return read_source(uri, *args, **kwargs)

    monkeypatch.setattr(Storage, "get", counting_get)
    monkeypatch.setattr(pipeline.report_images, "read_source", counting_read_source)
    first = render(big, sample=24, seed=7, worst=8)
    shown = len(set(re.findall(r'<figure id="r(\d+)">', first)))
    assert len(sheet_ids(first)) == 24 and 24 <= shown <= 24 + 8
    assert len(reads) == 2 * shown  # one original and one output per shown row, never the other 99,968
    assert "output missing" in first  # rows whose output is gone get a placeholder, not a crash

    reads.clear()
    again = render(big, sample=24, seed=7, worst=8)
    other = render(big, sample=24, seed=8, worst=8)
    assert sheet_ids(again) == sheet_ids(first) and sheet_ids(other) != sheet_ids(first)


def test_bench_report_measures_time_and_size() -> None:
    result = bench_report(2_000, shards=3, sample=4, cli=False)
    assert result["rows"] == 2_000 and 0 < result["seconds"] < 15 and 0 < result["html_bytes"] < 5_000_000
