"""Per-batch work without Ray: decode -> stylize -> encode -> write -> metric rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tests.pipeline_fakes  # noqa: F401 - registers test-invert, test-crashy, test-tint
from pipeline import worker
from pipeline.codec import decode_image
from pipeline.metrics import QualityScorer, to_table
from pipeline.storage import Storage
from tests.pipeline_helpers import bad_corpus, encode, files_under, job_config, photo, write_inputs


def rows_for(paths: dict[str, str], style: str = "1") -> list[dict]:
    return [{"image_id": i, "uri": u, "row": n, "shard": 0, "style": style} for n, (i, u) in enumerate(paths.items())]


def run_batch(tmp_path: Path, rows: list[dict], **overrides) -> list[dict]:
    config = job_config(tmp_path / "m.parquet", tmp_path / "out", **overrides)
    storage = Storage(str(tmp_path / "out"))
    stylist = worker.Stylist(config)
    return worker.metric_rows(worker.process_rows(rows, stylist, storage, worker.Ledger(storage)))


def test_batch_writes_inverted_outputs_and_one_row_each(tmp_path: Path) -> None:
    arrays = {f"img{i}": photo((40, 30) if i < 3 else (24, 36), seed=i) for i in range(5)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    rows = run_batch(tmp_path, rows_for(paths), batch_size=2)

    assert [r["image_id"] for r in rows] == list(arrays)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        out = decode_image(Path(r["output_uri"]).read_bytes()).array
        np.testing.assert_array_equal(out, 255 - arrays[r["image_id"]])  # png: lossless
        assert (r["width"], r["height"]) == (r["out_width"], r["out_height"]) == out.shape[1::-1]
        assert r["seconds_stylize"] >= 0 and r["stylizer"] == "test-invert" and r["style"] == "1"
    assert files_under(tmp_path / "out") == {f"images/img{i}.png" for i in range(5)}  # ledger cleaned up
    table = to_table(rows)
    assert table.num_rows == 5 and table.column("error").null_count == 5


def test_bad_inputs_become_rows_with_reasons(tmp_path: Path) -> None:
    corpus = bad_corpus()
    paths = write_inputs(tmp_path / "in", {k: v[0] for k, v in corpus.items()})
    rows = run_batch(tmp_path, rows_for(paths))
    got = {r["image_id"]: r for r in rows}
    assert len(rows) == len(corpus)
    for name, (_, expected) in corpus.items():
        assert got[name]["status"] == expected, (name, got[name]["error"])
        if expected == "failed":
            assert got[name]["error"] and not got[name]["output_uri"]
        else:
            assert Path(got[name]["output_uri"]).is_file()
    assert "too large" in got["bomb"]["error"]
    assert "animated" in got["animated"]["note"]


def test_id_and_uri_attacks_cannot_write_outside_output(tmp_path: Path) -> None:
    good = write_inputs(tmp_path / "in", {"ok": encode(photo())})["ok"]
    attacks = [
        ("../../escaped", good),
        ("/tmp/absolute", good),
        ("a/../../b", good),
        ("..", good),
        ("sub\\..\\..\\x", good),
        ("nul\x00byte", good),
        ("meta", "http://169.254.169.254/latest/meta-data"),
        ("mem", "memory://secret.png"),
        ("chained", f"simplecache::{good}"),
        ("fine/nested/id", good),
    ]
    rows = [{"image_id": i, "uri": u, "row": n, "shard": 0, "style": "1"} for n, (i, u) in enumerate(attacks)]
    before = files_under(tmp_path)
    out = {r["image_id"]: r for r in run_batch(tmp_path, rows)}
    created = files_under(tmp_path) - before
    assert all(p.startswith("out/") for p in created), created
    assert created == {"out/images/fine/nested/id.png"}
    for image_id, _ in attacks[:-1]:
        assert out[image_id]["status"] == "failed" and out[image_id]["error"], image_id
    assert "not allowed" in out["meta"]["error"]
    assert not (tmp_path.parent / "escaped.png").exists()


def test_a_stack_that_raises_fails_only_its_culprit(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {f"i{k}": encode(photo((32, 32), seed=k)) for k in range(3)})
    rows = rows_for(paths, style="99")  # out of range for nothing: test-invert ignores it; dumoulin would not
    rows[1]["style"] = ""  # an empty spec is a ConfigError at parse time, per row
    out = run_batch(tmp_path, rows)
    assert [r["status"] for r in out] == ["ok", "failed", "ok"]
    assert "style" in out[1]["error"]


def test_crash_ledger_marks_a_repeat_offender_failed(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1)), "b": encode(photo(seed=2))})
    rows = rows_for(paths)
    storage = Storage(str(tmp_path / "out"))
    ledger = worker.Ledger(storage)
    config = job_config(tmp_path / "m.parquet", tmp_path / "out", max_retries=2)
    # as a crashed process would leave them: the batch tried before, "b" crashed twice on its own
    batch = "stylize-batch-" + worker._digest("a|b")
    ledger.mark(batch, 3)
    ledger.mark("stylize-image-" + worker._digest("b"), 2)
    decoded = worker.decode_rows(rows, config, ledger)
    out = worker.Stylist(config)(decoded, ledger)
    assert [r["status"] for r in out] == ["ok", "failed"]
    assert "crashed the worker 2 times" in out[1]["error"]
    assert storage.list("_attempts") == []


def test_style_assignment_modes(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(40)]
    one = worker.assign_styles(ids, job_config("m", "o", style="7"))
    assert set(one) == {"7"}
    column = worker.assign_styles(ids[:3], job_config("m", "o", style="7"), ["1", None, "3:0.5,4:0.5"])
    assert column == ["1", "7", "3:0.5,4:0.5"]
    styles = tmp_path / "styles.txt"
    styles.write_text("# pool\n1\n2\n3\n")
    cfg = job_config("m", "o", style=None, style_manifest=str(styles), style_seed=5)
    sampled = worker.assign_styles(ids, cfg)
    assert set(sampled) == {"1", "2", "3"}
    assert worker.assign_styles(list(reversed(ids)), cfg) == list(reversed(sampled))  # per id, not per position
    other = worker.assign_styles(ids, job_config("m", "o", style=None, style_manifest=str(styles), style_seed=6))
    assert other != sampled


def test_max_side_caps_the_output(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"big": encode(photo((90, 60)))})
    (row,) = run_batch(tmp_path, rows_for(paths), max_side=45)
    assert (row["width"], row["height"]) == (90, 60)
    assert (row["out_width"], row["out_height"]) == (45, 30)


def test_quality_metrics(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pipeline.models.vgg import VGGEncoder, to_state_dict

    torch.manual_seed(0)
    vgg = tmp_path / "vgg.safetensors"
    save_file(to_state_dict(VGGEncoder("vgg16", last="relu4_1")), str(vgg))
    red = write_inputs(tmp_path / "styles", {"red": encode(np.full((32, 32, 3), (220, 30, 30), np.uint8))})["red"]
    paths = write_inputs(tmp_path / "in", {"a": encode(photo((40, 40)))})
    (row,) = run_batch(
        tmp_path, rows_for(paths, style=red), stylizer="test-tint", metrics=True, encoder_weights=str(vgg)
    )
    assert row["status"] == "ok", row["error"]
    for col in ("style_distance", "content_distance", "colour_distance"):
        assert np.isfinite(row[col]) and row[col] > 0, col

    # the scorer itself: an image is at distance 0 from itself, and tinting towards the style helps
    scorer = QualityScorer(VGGEncoder("vgg16", last="relu4_1"))
    content = torch.from_numpy(photo((40, 40))).permute(2, 0, 1)[None].float() / 255
    style_img = torch.tensor([0.86, 0.12, 0.12]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    from pipeline.models.base import Style

    styles = [Style(image=style_img, label="red")]
    same = scorer.score(content, content, "red", styles)
    tinted = scorer.score(0.5 * content + 0.5 * style_img.mean((2, 3), keepdim=True), content, "red", styles)
    assert same["content_distance"] == pytest.approx(0.0, abs=1e-6)
    assert same["colour_distance"] == pytest.approx(0.0, abs=1e-9)
    assert tinted["colour_distance"] > 0.05
    assert tinted["style_distance"] < same["style_distance"]
