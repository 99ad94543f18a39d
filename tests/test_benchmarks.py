"""The quality benchmark pairs outputs with references by name and scores them with the job's metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.bench.models import quality_rows, random_init, reference_for
from pipeline.metrics import QualityScorer
from pipeline.models.vgg import VGGEncoder


def _save(path: Path, seed: int) -> str:
    """A 64x48 picture: seed 0 a smooth gradient, others stripes that get finer with the seed."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:48, 0:64] / 48
    f = 3.0 * seed
    img = np.stack([np.sin(xs * f + ys), np.cos(ys * f * 1.5), np.sin((xs - ys) * f) + xs], -1) * 0.4 + 0.5
    img = (np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return str(path)


def test_reference_for_matches_the_published_naming(tmp_path: Path) -> None:
    (tmp_path / "Content_stylized_candy.jpg").write_bytes(b"x")
    assert reference_for(tmp_path, "/a/Content.jpg", "/b/candy.png") == tmp_path / "Content_stylized_candy.jpg"
    assert reference_for(tmp_path, "/a/Content.jpg", "/b/wave.jpg") is None


def test_quality_rows_score_ours_the_photo_and_the_reference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    content = _save(tmp_path / "photo.png", 0)
    style_a, style_b = _save(tmp_path / "a.png", 1), _save(tmp_path / "b.png", 2)
    refs = tmp_path / "refs"
    refs.mkdir()
    # a reference that *is* the painting must score style distance 0 (and a large content distance)
    Image.open(style_a).save(refs / "photo_stylized_a.png")
    scorer = QualityScorer(VGGEncoder("vgg16", last="relu4_1").eval())
    rows = list(quality_rows(random_init("adain").eval(), [content], [style_a, style_b], scorer, reference=refs))

    assert [(r.style, r.source) for r in rows] == [
        ("a", "photo"),
        ("a", "ours"),
        ("a", "reference"),
        ("b", "photo"),
        ("b", "ours"),
    ]
    by = {(r.style, r.source): r for r in rows}
    assert by["a", "photo"].content_distance == pytest.approx(0.0, abs=1e-6)
    assert by["a", "reference"].style_distance == pytest.approx(0.0, abs=1e-4)
    assert by["a", "reference"].content_distance > 0.02
    assert by["a", "photo"].style_distance > 0.05


def test_the_gpu_benchmark_runs_as_a_cpu_smoke_run(capsys: pytest.CaptureFixture[str]) -> None:
    """`stylize bench gpu` keeps working where CI has no GPU: every stylizer and mode is tried at 64 px on
    the CPU and marked smoke, the GPU-only rows say why they were skipped."""
    import json

    from pipeline.bench.gpu import MODES, STYLIZERS, main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run the real benchmark instead")
    main(["--budget", "300"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "env" and lines[0]["gpu"].startswith("none")
    models = [line for line in lines if line["kind"] == "model"]
    assert {m["stylizer"] for m in models} == set(STYLIZERS)
    for m in models:
        if m["mode"].startswith("compile"):
            assert "GPU" in m["skipped"]
        else:
            assert m.get("smoke") is True and m["images_per_s"] > 0, m  # each mode really ran
    assert {m["mode"] for m in models} == set(MODES)
    decode = [line for line in lines if line["kind"] == "decode"]
    assert decode[0]["images_per_s"] > 0 and decode[1]["skipped"] == "no GPU"
    jobs = [line for line in lines if line["kind"] == "job"]
    assert jobs == [{"kind": "job", "gpu": lines[0]["gpu"], "skipped": "no GPU"}]
