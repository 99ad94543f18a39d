"""One shard end to end without Ray: read rows -> decode -> batch -> stylize -> write -> the shard's metrics file."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import layout
from pipeline.codec import decode_image
from pipeline.metrics import QualityScorer
from pipeline.shard import ShardWorker
from pipeline.styles import assign_styles
from tests.pipeline_helpers import (
    bad_corpus,
    encode,
    files_under,
    job_config,
    magenta,
    photo,
    write_inputs,
    write_manifest,
)


def run_shard(tmp_path: Path, rows: list[tuple[str, str]], **overrides) -> tuple[list[dict], dict]:
    """Run rows as shard 0 of a fresh job; returns (metrics rows, the shard summary)."""
    extra = overrides.pop("columns", {})
    manifest = write_manifest(tmp_path / "m.parquet", rows, **extra)
    config = job_config(manifest, overrides.pop("output", tmp_path / "out"), **overrides)
    worker = ShardWorker(config)
    try:
        summary = worker.run(0, 0, len(rows))
    finally:
        worker.close()
    table = pq.read_table(worker.storage.open(layout.shard_key(0)))
    return table.to_pylist(), summary


def test_a_shard_writes_inverted_outputs_and_one_row_each(tmp_path: Path) -> None:
    arrays = {f"img{i}": photo((40, 30) if i < 3 else (24, 36), seed=i) for i in range(5)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    rows, summary = run_shard(tmp_path, list(paths.items()), batch_size=2)

    assert [r["image_id"] for r in rows] == list(arrays)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        out = decode_image(Path(r["output_uri"]).read_bytes()).array
        np.testing.assert_array_equal(out, 255 - arrays[r["image_id"]])  # png: lossless
        assert (r["width"], r["height"]) == (r["out_width"], r["out_height"]) == out.shape[1::-1]
        assert r["seconds_stylize"] >= 0 and r["stylizer"] == "test-invert" and r["style"] == "1"
    # the attempt marker is gone: only outputs and the commit marker remain
    assert files_under(tmp_path / "out") == {f"images/img{i}.png" for i in range(5)} | {"metrics/shard-00000.parquet"}
    assert summary["rows"] == summary["ok"] == 5 and summary["failed"] == 0


def test_bad_inputs_become_rows_with_reasons(tmp_path: Path) -> None:
    corpus = bad_corpus()
    paths = write_inputs(tmp_path / "in", {k: v[0] for k, v in corpus.items()})
    rows, summary = run_shard(tmp_path, list(paths.items()))
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
    assert summary["failed"] == sum(v[1] == "failed" for v in corpus.values())


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
    before = files_under(tmp_path)
    rows, _ = run_shard(tmp_path, attacks)
    out = {r["image_id"]: r for r in rows}
    created = files_under(tmp_path) - before - {"m.parquet"}
    assert created == {"out/images/fine/nested/id.png", "out/metrics/shard-00000.parquet"}
    for image_id, _ in attacks[:-1]:
        assert out[image_id]["status"] == "failed" and out[image_id]["error"], image_id
    assert "not allowed" in out["meta"]["error"]
    assert not (tmp_path.parent / "escaped.png").exists()


def test_a_call_that_raises_fails_only_its_culprit(tmp_path: Path) -> None:
    # the culprit has the same size and style as the good rows, so it is in the same 4-image call
    files = {f"i{k}": encode(photo((32, 32), seed=k)) for k in range(4)}
    files["i2"] = magenta((32, 32))
    paths = write_inputs(tmp_path / "in", files)
    rows, summary = run_shard(tmp_path, list(paths.items()), stylizer="test-picky", batch_size=4)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]
    assert "picky: magenta" in rows[2]["error"]
    assert summary["model_calls"] >= 2  # the full call, then the split


def test_after_a_crash_the_shard_goes_image_by_image_and_gives_up_on_the_culprit(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1)), "b": encode(photo(seed=2))})
    out = tmp_path / "out"
    marker = out / layout.attempt_key(0)
    marker.parent.mkdir(parents=True)
    # as a crashed process leaves it: "b" was being stylized when the worker died, after two earlier crashes
    marker.write_text(json.dumps({"attempt": 4, "suspect": "b", "crashes": {"b": 2}}))
    rows, summary = run_shard(tmp_path, list(paths.items()), max_retries=2, batch_size=4)
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "crashed the worker 3 times" in rows[1]["error"]
    assert (rows[1]["error_kind"], rows[1]["failed_stage"]) == ("WorkerCrashed", "stylize")
    assert summary["model_calls"] == 1  # careful mode: one image per call, and "b" was never run
    assert not marker.exists()


def test_max_retries_counts_crashes_an_image_may_cause_and_still_be_tried(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1)), "b": encode(photo(seed=2))})
    marker = tmp_path / "out" / layout.attempt_key(0)
    marker.parent.mkdir(parents=True)
    # a retried shard whose first attempt crashed while "b" was the suspect: with 0, "a" is still tried once
    marker.write_text(json.dumps({"attempt": 1, "suspect": "b"}))
    rows, summary = run_shard(tmp_path, list(paths.items()), max_retries=0)
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert "crashed the worker 1 times; gave up (max_retries=0)" in rows[1]["error"]
    assert summary["model_calls"] == 1
    # the same crash with one retry allowed: "b" is tried again
    marker.write_text(json.dumps({"attempt": 1, "suspect": "b"}))
    rows, _ = run_shard(tmp_path, list(paths.items()), max_retries=1, output=tmp_path / "out")
    assert [r["status"] for r in rows] == ["ok", "ok"]


def test_after_a_crash_half_written_outputs_are_removed(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"a": encode(photo(seed=1))})
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    leftover = out / "images" / ".a.png.tmp-stylize-x1y2z3"  # what a process killed mid-put leaves
    leftover.write_bytes(b"half")
    (out / layout.attempt_key(0)).parent.mkdir(parents=True)
    (out / layout.attempt_key(0)).write_text(json.dumps({"attempt": 1}))
    rows, _ = run_shard(tmp_path, list(paths.items()))
    assert rows[0]["status"] == "ok" and not leftover.exists()
    assert files_under(out) == {"images/a.png", "metrics/shard-00000.parquet"}


def test_style_assignment_modes(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(40)]
    one = assign_styles(ids, job_config("m", "o", style="7"))
    assert set(one) == {"7"}
    column = assign_styles(ids[:3], job_config("m", "o", style="7"), ["1", None, "3:0.5,4:0.5"])
    assert column == ["1", "7", "3:0.5,4:0.5"]
    styles = tmp_path / "styles.txt"
    styles.write_text("# pool\n1\n2\n3\n")
    cfg = job_config("m", "o", style_manifest=str(styles), style_seed=5)
    sampled = assign_styles(ids, cfg)
    assert set(sampled) == {"1", "2", "3"}
    assert assign_styles(list(reversed(ids)), cfg) == list(reversed(sampled))  # per id, not per position
    other = assign_styles(ids, job_config("m", "o", style_manifest=str(styles), style_seed=6))
    assert other != sampled


def test_max_side_caps_the_output(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path / "in", {"big": encode(photo((90, 60)))})
    ((row,), _) = run_shard(tmp_path, list(paths.items()), max_side=45)
    assert (row["width"], row["height"]) == (90, 60)
    assert (row["out_width"], row["out_height"]) == (45, 30)


# photos from the same few cameras, cropped a little differently: (W, H)
MIXED_SIZES = [(512, 384), (500, 375), (520, 390), (512, 384), (480, 360), (540, 405), (384, 512), (375, 500)]


def test_mixed_sizes_fill_batches_and_keep_exact_sizes(tmp_path: Path) -> None:
    sizes = [MIXED_SIZES[i % len(MIXED_SIZES)] for i in range(32)]
    arrays = {f"m{i:02d}": photo(s, seed=i) for i, s in enumerate(sizes)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    rows, summary = run_shard(tmp_path, list(paths.items()), batch_size=8)
    fill = summary["images_in_calls"] / summary["model_calls"] / 8
    assert fill >= 0.8, summary
    for r in rows:
        w, h = arrays[r["image_id"]].shape[1::-1]
        assert r["status"] == "ok" and (r["out_width"], r["out_height"]) == (w, h)
        assert decode_image(Path(r["output_uri"]).read_bytes()).array.shape[:2] == (h, w)


def test_dataset_generation_mixes_styles_in_one_call(tmp_path: Path) -> None:
    """One sampled dumoulin style per image: the calls still fill, and each image gets its own style."""
    styles = tmp_path / "styles.txt"
    styles.write_text("\n".join(str(i) for i in range(0, 26, 3)) + "\n")
    arrays = {f"d{i:02d}": photo((48, 40), seed=i) for i in range(24)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    rows, summary = run_shard(
        tmp_path, list(paths.items()), stylizer="dumoulin", style_manifest=str(styles), batch_size=8, device="cpu"
    )
    assert summary["model_calls"] == 3 and summary["images_in_calls"] == 24
    assert summary["batch_fill"] == 1.0  # in the shard's footer too (the summary is what it carries)
    assert len({r["style"] for r in rows}) > 3
    # each output equals that image stylized alone with its own style
    from pipeline.models import create
    from pipeline.models.base import Style
    from pipeline.models.controls import stylize

    model = create("dumoulin", device="cpu")
    for r in rows[:4]:
        alone = stylize(
            model,
            torch.from_numpy(arrays[r["image_id"]]).permute(2, 0, 1)[None].float() / 255,
            [Style(index=int(r["style"]))],
        )
        got = decode_image(Path(r["output_uri"]).read_bytes()).array.astype(int)
        want = (alone[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(int)
        assert np.abs(got - want).max() <= 1, r["image_id"]


class CountingFS(LocalFileSystem):
    """The local filesystem under its own protocol, counting every call that reaches storage."""

    protocol = ("counting",)
    calls: list[tuple[str, str]] = []

    def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(auto_mkdir=True, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):  # type: ignore[override]
        return super()._strip_protocol(str(path).removeprefix("counting://"))

    def _count(self, name: str, path: str) -> None:
        type(self).calls.append((name, str(path)))

    def cat_file(self, path, *a, **k):  # type: ignore[override]
        self._count("read", path)
        return super().cat_file(path, *a, **k)

    def pipe_file(self, path, *a, **k):  # type: ignore[override]
        self._count("write", path)
        return super().pipe_file(path, *a, **k)

    def rm_file(self, path, *a, **k):  # type: ignore[override]
        self._count("delete", path)
        return super().rm_file(path, *a, **k)

    def info(self, path, *a, **k):  # type: ignore[override]
        self._count("stat", path)
        return super().info(path, *a, **k)

    def find(self, path, *a, **k):  # type: ignore[override]
        self._count("list", path)
        return super().find(path, *a, **k)


def test_storage_calls_are_one_write_per_image_plus_a_constant_per_shard(tmp_path: Path) -> None:
    fsspec.register_implementation("counting", CountingFS, clobber=True)
    CountingFS.calls = []
    n = 24
    paths = write_inputs(tmp_path / "in", {f"c{i:02d}": encode(photo((32, 24), seed=i)) for i in range(n)})
    out = f"counting://{tmp_path / 'out'}"
    rows, _ = run_shard(tmp_path, list(paths.items()), output=out, batch_size=4, allowed_schemes=["", "counting"])
    assert all(r["status"] == "ok" for r in rows)
    by_kind: dict[str, int] = {}
    for kind, _ in CountingFS.calls:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    # per shard: read the attempt marker (absent), write it, write the metrics file, delete the marker;
    # per actor: read _plan.json once (the generation it runs, pipeline.generations)
    assert by_kind.get("write", 0) == n + 2, CountingFS.calls
    assert by_kind.get("read", 0) == 2 and by_kind.get("delete", 0) == 1
    assert sum(by_kind.values()) <= n + 6, by_kind


def test_quality_metrics(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pipeline.models.vgg import VGGEncoder, to_state_dict

    torch.manual_seed(0)
    vgg = tmp_path / "vgg.safetensors"
    save_file(to_state_dict(VGGEncoder("vgg16", last="relu4_1")), str(vgg))
    red = write_inputs(tmp_path / "styles", {"red": encode(np.full((32, 32, 3), (220, 30, 30), np.uint8))})["red"]
    paths = write_inputs(tmp_path / "in", {"a": encode(photo((40, 40)))})
    ((row,), summary) = run_shard(
        tmp_path, list(paths.items()), style=red, stylizer="test-tint", metrics=True, encoder_weights=str(vgg)
    )
    assert row["status"] == "ok", row["error"]
    for col in ("style_distance", "content_distance", "colour_distance", "seconds_metrics"):
        assert np.isfinite(row[col]) and row[col] > 0, col
    assert summary["n_style_distance"] == 1

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
    # the batch form gives each image its own numbers
    both = scorer.score_batch(
        torch.cat([content, content * 0.5]), torch.cat([content, content]), ["red"] * 2, [styles, styles]
    )
    assert both[0]["content_distance"] == pytest.approx(0.0, abs=1e-6) and both[1]["content_distance"] > 0.01


def test_colour_distance_on_a_sample_of_a_large_photo_matches_the_whole_photo() -> None:
    from skimage import data

    from pipeline.metrics import colour_distance

    def exact(a: torch.Tensor, b: torch.Tensor) -> float:
        def stats(x: torch.Tensor) -> torch.Tensor:
            std, mean = torch.std_mean(x.reshape(3, -1).double(), dim=1, correction=0)
            return torch.cat([mean, std])

        return float((stats(a) - stats(b)).norm())

    photo_ = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    photo_ = torch.nn.functional.interpolate(photo_, size=(800, 1200), mode="bilinear")  # ~1 MP: sampled
    graded = (photo_ * torch.tensor([1.1, 0.9, 0.8]).view(1, 3, 1, 1) + 0.03).clamp(0, 1)
    reference = exact(graded, photo_)
    assert reference > 0.05
    assert colour_distance(graded, photo_) == pytest.approx(reference, rel=2e-3)


def test_a_batch_job_and_stylize_image_give_the_same_pixels(tmp_path: Path) -> None:
    """One max-side fit, one engine choice: the CLI and a job write identical PNGs for the same photo."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    source = write_inputs(tmp_path / "in", {"p": encode(photo((90, 60), seed=4))})["p"]
    png = tmp_path / "cli.png"
    args = ["image", source, "-o", str(png), "--stylizer", "dumoulin", "--style", "7", "--max-side", "45"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ((row,), _) = run_shard(tmp_path, [("p", source)], stylizer="dumoulin", style="7", max_side=45, device="cpu")
    job = decode_image(Path(row["output_uri"]).read_bytes()).array
    np.testing.assert_array_equal(job, decode_image(png.read_bytes()).array)
    assert job.shape == (30, 45, 3)


def test_masks_from_a_manifest_column(tmp_path: Path) -> None:
    """mask_column: white areas get mask_style, the rest the job's style (test-tint pulls towards the style)."""
    red = write_inputs(tmp_path / "s", {"red": encode(np.full((16, 16, 3), (255, 0, 0), np.uint8))})["red"]
    blue = write_inputs(tmp_path / "s", {"blue": encode(np.full((16, 16, 3), (0, 0, 255), np.uint8))})["blue"]
    mask = np.zeros((32, 48, 3), np.uint8)
    mask[:, :24] = 255  # left half
    masks = write_inputs(tmp_path / "m", {"left": encode(mask)})
    grey = write_inputs(tmp_path / "in", {"g": encode(np.full((32, 48, 3), 128, np.uint8))})
    ((row,), _) = run_shard(
        tmp_path,
        [("g", grey["g"])],
        stylizer="test-tint",
        style=blue,
        mask_style=red,
        mask_column="mask",
        columns={"mask": [masks["left"]]},
    )
    assert row["status"] == "ok", row["error"]
    out = decode_image(Path(row["output_uri"]).read_bytes()).array.astype(int)
    left, right = out[:, :20].reshape(-1, 3).mean(0), out[:, 28:].reshape(-1, 3).mean(0)
    assert left[0] > left[2] + 60 and right[2] > right[0] + 60, (left, right)
