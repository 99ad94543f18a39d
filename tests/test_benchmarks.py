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
