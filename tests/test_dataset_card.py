"""The dataset card (dataset.json, README.md) next to _SUCCESS: counts, provenance, and loading snippets that run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import layout
from pipeline.card import pool_fingerprint
from pipeline.generations import PIXEL_SETTINGS
from pipeline.metrics import COLUMNS
from tests.test_writers import CLASSES, run_job, tree


def card_of(out: Path) -> dict[str, Any]:
    return json.loads((out / layout.CARD_KEY).read_text())


def run_snippet(code: str) -> Any:
    """Run a card's loading snippet; returns what it binds as ``image``."""
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the card's own three lines
    return scope["image"]


@pytest.mark.parametrize("output_format", ["files", "webdataset", "parquet"])
def test_the_card_counts_classes_and_styles_and_says_how_it_was_made(tmp_path: Path, output_format: str) -> None:
    styles = tmp_path / "styles.txt"
    styles.write_text("1\n2\n3\n")
    out = tmp_path / "out"
    rows = run_job(
        tmp_path,
        tree(tmp_path / "tree", per_class=4),
        out,
        output_format=output_format,
        style_manifest=str(styles),
        style_seed=7,
        seed=3,
        alpha=0.5,
        shard_rows=5,
    )
    card = card_of(out)
    assert (out / layout.SUCCESS_KEY).is_file() and (out / layout.CARD_README_KEY).is_file()
    assert card["output_format"] == output_format and card["samples"] == 12 and card["failed"] == 0
    if "label" in COLUMNS:  # metrics rows keep labels once helper A's branch is in
        assert card["classes"] == list(CLASSES) and card["samples_per_class"] == dict.fromkeys(CLASSES, 4)
    used: dict[str, int] = {}
    for r in rows:
        used[r["style"]] = used.get(r["style"], 0) + 1
    assert card["samples_per_style"] == used and sum(used.values()) == 12
    assert card["style_pool"] == {
        "source": str(styles),
        "split": None,
        "size": 3,
        "fingerprint": hashlib.sha256(b"1\n2\n3").hexdigest(),
    }
    assert pool_fingerprint(["3", "1", "2"]) == card["style_pool"]["fingerprint"]  # order does not matter
    assert card["stylizer"] == "test-invert" and card["weights"] == {"files": {}, "sha256": None}
    assert (card["alpha"], card["seeds"]) == (0.5, {"seed": 3, "style_seed": 7})
    assert (
        set(card["pixel_settings"]) == set(PIXEL_SETTINGS) and card["pixel_settings"]["output_format"] == output_format
    )
    assert card["styles_per_image"] == 1
    success = json.loads((out / layout.SUCCESS_KEY).read_text())
    assert success["output_format"] == output_format
    assert success["shard_files"] == (0 if output_format == "files" else 3)

    readme = (out / layout.CARD_README_KEY).read_text()
    assert card["load"] in readme and card["style_pool"]["fingerprint"] in readme
    if output_format == "parquet":
        pytest.importorskip("datasets")  # not a test dependency (heavy)
    image = run_snippet(card["load"])  # the three lines load the dataset
    assert image.size == (20, 16)


def test_the_card_of_an_unlabelled_job_has_no_classes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_job(tmp_path, tree(tmp_path / "tree", per_class=1), out, labels=False, output_format="webdataset")
    card = card_of(out)
    assert card["classes"] is None and card["samples_per_class"] is None
    assert card["style_pool"]["size"] == 1 and card["samples_per_style"] == {"1": 3}
    assert '"json"' in card["load"]  # no .cls members: the snippet reads the fields
    assert run_snippet(card["load"]).size == (20, 16)


@pytest.mark.skipif("k" not in COLUMNS, reason="needs styles_per_image (helper A's branch)")
def test_three_classes_of_eight_photos_with_two_styles_each_give_48_samples(tmp_path: Path) -> None:
    import webdataset as wds

    styles = tmp_path / "styles.txt"
    styles.write_text("1\n2\n3\n4\n5\n")
    out = tmp_path / "out"
    kwargs = {"output_format": "webdataset", "style_manifest": str(styles), "styles_per_image": 2, "shard_rows": 8}
    run_job(tmp_path, tree(tmp_path / "tree", per_class=8), out, **kwargs)
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").iterdir()), shardshuffle=False).decode())
    assert len(samples) == 48 and len({s["__key__"] for s in samples}) == 48
    per_photo: dict[str, set[str]] = {}
    for s in samples:
        per_photo.setdefault(s["json"]["image_id"], set()).add(s["json"]["style"])
        assert s["cls"] == CLASSES.index(s["json"]["image_id"].split("/")[0])
    assert len(per_photo) == 24 and all(len(v) == 2 for v in per_photo.values())  # two distinct styles each
    card = card_of(out)
    assert card["samples"] == 48 and card["styles_per_image"] == 2
    assert card["samples_per_class"] == dict.fromkeys(CLASSES, 16)
