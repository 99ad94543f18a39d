"""A stylized training set end to end, as a user makes one: `stylize manifest build --label-from parent` over an
ImageFolder tree, then `stylize run` on the embedded Ray with the offline dumoulin network, K=2 styles a photo,
WebDataset shards; read back with the `webdataset` package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline_helpers import encode, photo

CLASSES = ["bird", "cat", "dog"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    import ray

    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    yield
    ray.shutdown()
    mp.undo()


def test_an_imagefolder_tree_of_3_classes_x_8_photos_with_k2_gives_48_webdataset_samples(tmp_path: Path) -> None:
    import webdataset as wds

    tree = tmp_path / "train"
    for c, name in enumerate(CLASSES):
        for i in range(8):  # portrait and landscape, odd sizes
            size = (40 + 3 * i, 56 - 2 * i) if i % 2 else (56 - 2 * i, 40 + 3 * i)
            (tree / name).mkdir(parents=True, exist_ok=True)
            (tree / name / f"img{i}.png").write_bytes(encode(photo(size, seed=10 * c + i)))
    styles = tmp_path / "styles.txt"
    styles.write_text("".join(f"{i}\n" for i in range(0, 26, 3)))  # dumoulin's built-in styles as a pool
    manifest, out = tmp_path / "train.parquet", tmp_path / "out"
    runner = CliRunner()
    built = runner.invoke(app, ["manifest", "build", str(tree), "--out", str(manifest), "--label-from", "parent"])
    assert built.exit_code == 0, built.output
    args = ["run", "--manifest", str(manifest), "--output", str(out), "--stylizer", "dumoulin"]
    for key, value in {
        "style_manifest": styles,
        "styles_per_image": 2,
        "output_format": "webdataset",
        "format": "png",
        "style_seed": 49809,
        "shard_rows": 8,
        "metrics": "false",
    }.items():
        args += ["--set", f"{key}={value}"]
    ran = runner.invoke(app, args)
    assert ran.exit_code == 0, ran.output

    shards = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("rgb8"))
    assert len(samples) == 48 and len({s["__key__"] for s in samples}) == 48
    styles_of: dict[str, set[str]] = {}
    for s in samples:
        meta = s["json"]
        label = meta["image_id"].split("/")[0]
        assert s["cls"] == CLASSES.index(label) and meta["label"] == label  # ImageFolder's numbering
        source = photo_size(tree / meta["image_id"])
        assert s["png"].shape[:2] == source  # the photo's own size, stylized
        styles_of.setdefault(meta["image_id"], set()).add(meta["style"])
    assert len(styles_of) == 24 and all(len(v) == 2 for v in styles_of.values())  # K distinct styles a photo
    card = json.loads((out / "dataset.json").read_text())
    assert card["samples"] == 48 and card["samples_per_class"] == dict.fromkeys(CLASSES, 16)


def photo_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width
