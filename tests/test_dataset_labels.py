"""Stylized training sets, part 1: labels kept from the source tree or a table, K distinct styles per photo
(stable, disjoint style splits), (photo, k) pairs through shards, incremental runs and a killed run, and
torchvision's Resize + CenterCrop sizes. No Ray: shards run in this process (plan -> ShardWorker -> finish)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import imaging, runner
from pipeline.cli import app
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import build_manifest, class_names, from_table, read_labels, read_manifest
from pipeline.shard import ShardWorker
from pipeline.styles import assign_style_sets, assign_styles, hash_split, style_pool
from tests.pipeline_helpers import encode, job_config, photo

CLASSES = {"zebra": 3, "Ant": 2, "bird": 3}  # "Ant" < "bird" < "zebra": sorted by code point, as ImageFolder


def image_tree(root: Path, classes: dict[str, int] = CLASSES, size: tuple[int, int] = (20, 14)) -> list[Path]:
    """root/<class>/<class>_<i>.png, the ImageFolder layout."""
    paths = []
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            path = root / name / f"{name}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(photo(size, seed=10 * c + i)))
            paths.append(path)
    return paths


def style_list(path: Path, n: int) -> Path:
    """A style manifest of ``n`` built-in style indices (test-invert takes indices)."""
    path.write_text("".join(f"{i}\n" for i in range(n)))
    return path


def run_local(config, *, fail_commit_of: set[int] | None = None) -> dict | None:
    """Plan, run the pending shards in this process, finish (what runner.run does, without Ray or the lease).
    ``fail_commit_of``: shards that die after writing their outputs, before their commit (a kill)."""
    storage, plan = runner.plan_job(config)
    worker = ShardWorker(config)
    fresh = []
    try:
        for shard in plan.pending:
            if fail_commit_of and shard in fail_commit_of:

                def die(*_args, **_kwargs):
                    raise RuntimeError("killed")

                worker._commit = die  # type: ignore[method-assign]
                with pytest.raises(RuntimeError):
                    worker.run(shard, *plan.shard_range(shard))
                del worker._commit
                continue
            fresh.append(worker.run(shard, *plan.shard_range(shard)))
    finally:
        worker.close()
    if fail_commit_of:
        return None
    processed = sum(int(s["processed"]) for s in fresh)
    return runner.finish(config, storage, plan, fresh, wall=1.0, processed=processed)


def metrics_rows(out: Path) -> list[dict]:
    return ds.dataset(str(out / "metrics"), format="parquet").to_table().to_pylist()


# --- labels ---------------------------------------------------------------------------------------


def test_label_from_parent_numbers_classes_as_imagefolder(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = tmp_path / "tree"
    image_tree(root)
    out = tmp_path / "m.parquet"
    result = CliRunner().invoke(app, ["manifest", "build", str(root), "--out", str(out), "--label-from", "parent"])
    assert result.exit_code == 0, result.output
    assert "labels: 3 classes" in result.output

    folder = ImageFolder(str(root))
    assert class_names(str(out)) == folder.classes == sorted(CLASSES)
    table = read_manifest(str(out))
    labels = dict(zip(table.column("image_id").to_pylist(), table.column("label").to_pylist(), strict=True))
    assert labels == {f"{c}/{c}_{i}.png": c for c, n in CLASSES.items() for i in range(n)}
    expected = {str(Path(p).relative_to(root)): idx for p, idx in folder.samples}
    index = {name: i for i, name in enumerate(class_names(str(out)))}
    assert {k: index[v] for k, v in labels.items()} == expected  # label_index is ImageFolder's target

    top = tmp_path / "top.parquet"  # a deeper tree: `top` is ImageFolder's rule, `parent` the photo's own folder
    (root / "bird" / "nested").mkdir()
    (root / "bird" / "nested" / "deep.png").write_bytes(encode(photo((20, 14), seed=99)))
    build_manifest(str(root), str(top), label_from="top")
    build_manifest(str(root), str(out), label_from="parent")
    nested = read_manifest(str(top)).select(["image_id", "label"]).to_pylist()
    assert {r["image_id"]: r["label"] for r in nested}["bird/nested/deep.png"] == "bird"
    assert class_names(str(top)) == ImageFolder(str(root)).classes
    assert "nested" in class_names(str(out))


def test_labels_from_a_csv_or_parquet_table_and_from_table_keeps_a_label_column(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image_tree(root)
    ids = sorted(f"{c}/{c}_{i}.png" for c, n in CLASSES.items() for i in range(n))
    given = {i: ("odd" if n % 2 else "even") for n, i in enumerate(ids[:-1])}  # the last id is not in the table
    csv = tmp_path / "labels.csv"
    csv.write_text("image_id,label\n" + "".join(f"{i},{lab}\n" for i, lab in given.items()))
    parquet = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"image_id": list(given), "label": list(given.values())}), parquet)
    assert read_labels(str(csv)) == read_labels(str(parquet)) == given

    for table in (csv, parquet):
        out = tmp_path / f"m-{table.suffix[1:]}.parquet"
        stats = build_manifest(str(root), str(out), labels=read_labels(str(table)))
        assert (stats.classes, stats.unlabeled) == (2, 1)  # an id the table lacks: a null label, counted
        got = read_manifest(str(out)).select(["image_id", "label"]).to_pylist()
        assert {r["image_id"]: r["label"] for r in got} == {**given, ids[-1]: None}
        assert class_names(str(out)) == ["even", "odd"]

    result = CliRunner().invoke(app, ["manifest", "build", str(root), "--out", str(out), "--labels", str(csv)])
    assert result.exit_code == 0 and "labels: 2 classes, 1 rows without a label" in result.output, result.output

    listed = tmp_path / "list.parquet"  # another tool's table with a label column: kept, names in the footer
    uris = [str(root / i) for i in ids]
    pq.write_table(pa.table({"uri": uris, "image_id": ids, "label": [i.split("/")[0] for i in ids]}), listed)
    from_table(str(listed), str(tmp_path / "ft.parquet"))
    assert read_manifest(str(tmp_path / "ft.parquet")).column("label").to_pylist() == [i.split("/")[0] for i in ids]
    assert class_names(str(tmp_path / "ft.parquet")) == sorted(CLASSES)
    pq.write_table(pa.table({"uri": uris, "image_id": ids}), listed)  # made from the ids' folders
    from_table(str(listed), str(tmp_path / "ft2.parquet"), label_from="parent")
    assert class_names(str(tmp_path / "ft2.parquet")) == sorted(CLASSES)

    csv.write_text("image_id,label\na,x\na,y\n")
    with pytest.raises(ManifestError, match="'a' has 2 rows"):
        read_labels(str(csv))
    with pytest.raises(ManifestError, match="lacks column"):
        read_labels(str(listed))


# --- K styles per photo, splits ---------------------------------------------------------------------


def test_k_distinct_styles_per_photo_from_the_seed_and_id_alone(tmp_path: Path) -> None:
    styles = style_list(tmp_path / "styles.txt", 10)
    ids = [f"p{i:03d}" for i in range(60)]
    cfg = job_config("m", "o", style_manifest=str(styles), style_seed=7, styles_per_image=3)
    sets = assign_style_sets(ids, cfg)
    assert all(len(s) == len(set(s)) == 3 for s in sets)  # distinct within a photo
    assert len({tuple(s) for s in sets}) > 30  # and spread over photos
    # the same whatever the order or the company of the other ids (shards, actors, reruns)
    assert assign_style_sets(list(reversed(ids)), cfg) == list(reversed(sets))
    assert [assign_style_sets([i], cfg)[0] for i in ids[::7]] == sets[::7]
    # K = 1 keeps the assignment every earlier output was made with, and k = 0 of K = 3 is that same style
    one = job_config("m", "o", style_manifest=str(styles), style_seed=7)
    pool = [str(i) for i in range(10)]
    before = [pool[random.Random(hashlib.sha256(f"7:{i}".encode()).digest()).randrange(10)] for i in ids]
    assert assign_styles(ids, one) == before == [s[0] for s in sets]
    assert (
        assign_style_sets(ids, job_config("m", "o", style_manifest=str(styles), style_seed=8, styles_per_image=3))
        != sets
    )


def test_style_checks_and_splits(tmp_path: Path) -> None:
    styles = style_list(tmp_path / "styles.txt", 3)
    with pytest.raises(ConfigError, match="styles_per_image > 1 .* style_manifest"):
        job_config("m", "o", styles_per_image=2)
    with pytest.raises(ConfigError, match="style_split .* style_manifest"):
        job_config("m", "o", style_split="val")
    with pytest.raises(ConfigError, match="center_crop \\(300\\) is larger than resize_shorter \\(256\\)"):
        job_config("m", "o", resize_shorter=256, center_crop=300)
    with pytest.raises(ConfigError, match="lists 3 styles, fewer than styles_per_image=4"):
        style_pool(str(styles), job_config("m", "o", style_manifest=str(styles), styles_per_image=4))

    many = tmp_path / "many.txt"
    many.write_text("".join(f"s3://paintings/{i:05d}.jpg\n" for i in range(2000)))
    parts = {}
    for split in ("train", "val"):
        cfg = job_config("m", "o", style_manifest=str(many), style_split=split, allowed_schemes=["", "s3"])
        parts[split] = style_pool(str(many), cfg)
    assert not set(parts["train"]) & set(parts["val"])  # disjoint
    assert sorted(parts["train"] + parts["val"]) == sorted(many.read_text().split())  # and covering
    assert 150 <= len(parts["val"]) <= 250  # about 10 %
    assert all(hash_split(u) == "val" for u in parts["val"])
    with pytest.raises(ConfigError, match="split by hash into train and val only"):
        style_pool(str(many), job_config("m", "o", style_manifest=str(many), style_split="test"))

    table = tmp_path / "styles.parquet"  # a split column decides where there is one
    pq.write_table(
        pa.table({"image_id": list("abcd"), "uri": ["1", "2", "3", "4"], "split": ["a", "b", "a", None]}), table
    )
    assert style_pool(str(table), job_config("m", "o", style_manifest=str(table), style_split="a")) == ["1", "3"]
    with pytest.raises(ConfigError, match="no styles of split 'c' \\(splits: \\['a', 'b'\\]\\)"):
        style_pool(str(table), job_config("m", "o", style_manifest=str(table), style_split="c"))


# --- (photo, k) through the shard worker, incremental runs, a kill ------------------------------------


def labelled_job(tmp_path: Path, **overrides):
    root = tmp_path / "tree"
    image_tree(root)
    manifest = tmp_path / "m.parquet"
    build_manifest(str(root), str(manifest), label_from="parent")
    styles = style_list(tmp_path / "styles.txt", 6)
    fields = {"style_manifest": str(styles), "style_seed": 3, "styles_per_image": 2, "shard_rows": 3}
    return root, manifest, job_config(manifest, tmp_path / "out", **{**fields, **overrides})


def test_a_shard_with_k_2_writes_two_rows_and_outputs_per_photo_decoded_once(tmp_path: Path) -> None:
    root, manifest, config = labelled_job(tmp_path)
    worker = ShardWorker(config)
    reads: list[str] = []
    read = worker._read
    worker._read = lambda uri: reads.append(uri) or read(uri)  # type: ignore[method-assign]
    try:
        summary = worker.run(0, 0, 8)
    finally:
        worker.close()
    rows = pq.read_table(worker.storage.open("metrics/shard-00000.parquet")).to_pylist()
    assert len(reads) == 8  # one read and decode per photo, not per (photo, k)
    assert (summary["rows"], summary["photos"], summary["ok"]) == (16, 8, 16)
    by_photo: dict[str, list[dict]] = {}
    for r in rows:
        by_photo.setdefault(r["image_id"], []).append(r)
    index = {name: i for i, name in enumerate(sorted(CLASSES))}
    for image_id, pair in by_photo.items():
        assert [r["k"] for r in pair] == [0, 1]
        assert pair[0]["style"] != pair[1]["style"]  # distinct styles
        assert pair[0]["output_uri"] != pair[1]["output_uri"]  # distinct outputs
        assert all(Path(r["output_uri"]).is_file() and r["status"] == "ok" for r in pair)
        label = image_id.split("/")[0]
        assert all(r["label"] == label and r["label_index"] == index[label] for r in pair)
    assert Path(by_photo["Ant/Ant_0.png"][1]["output_uri"]).name == "Ant_0-1.png"
    assert [r["style"] for r in by_photo["Ant/Ant_0.png"]] == assign_style_sets(["Ant/Ant_0.png"], config)[0]


def test_incremental_runs_keep_every_pair_and_stylize_only_a_new_photos_pairs(tmp_path: Path) -> None:
    root, manifest, config = labelled_job(tmp_path)
    first = run_local(config)
    assert first is not None and (first["rows"], first["photos"], first["ok"]) == (16, 8, 16)
    out = tmp_path / "out"
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert len(stamps) == 16

    again = run_local(config)  # the same manifest: nothing to do
    assert again is not None and again["processed_this_run"] == 0 and again["rows"] == 16
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == stamps

    (root / "bird" / "bird_9.png").write_bytes(encode(photo((20, 14), seed=77)))
    build_manifest(str(root), str(manifest), label_from="parent")
    other_cut = config.model_copy(update={"shard_rows": 2})  # a new generation is cut anew; pairs do not move
    second = run_local(other_cut)
    assert second is not None and second["generation"] == 1
    assert (second["rows"], second["photos"], second["processed_this_run"]) == (18, 9, 2)
    assert (second["new"], second["unchanged"], second["deleted"]) == (2, 16, 0)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert {k: after[k] for k in stamps} == stamps  # nothing re-stylized
    assert set(after) - set(stamps) == {"bird_9-0.png", "bird_9-1.png"}
    rows = metrics_rows(out)
    pairs = sorted((r["image_id"], r["k"]) for r in rows)
    assert len(pairs) == len(set(pairs)) == 18
    styles = {(r["image_id"], r["k"]): r["style"] for r in rows}  # the same pairs under another shard cut
    ids = sorted({r["image_id"] for r in rows})
    assert styles == {
        (i, k): s for i, ss in zip(ids, assign_style_sets(ids, config), strict=True) for k, s in enumerate(ss)
    }

    # rerun=failed redoes the failed pairs only: mark one pair failed as if it had failed
    key = sorted((out / "metrics").iterdir())[0]
    table = pq.read_table(key)
    status = table.column("status").to_pylist()
    status[1] = "failed"
    failed_pair = (table.column("image_id")[1].as_py(), table.column("k")[1].as_py())
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(status))
    pq.write_table(table, key)
    success = json.loads((out / "_SUCCESS").read_text())
    (out / "_SUCCESS").write_text(json.dumps({**success, "failed": 1}))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    third = run_local(other_cut.model_copy(update={"rerun": "failed"}))
    assert third is not None and third["processed_this_run"] == 1 and third["rows"] == 18 and third["ok"] == 18
    changed = {
        k for k, v in {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}.items() if before[k] != v
    }
    assert changed == {f"{Path(failed_pair[0]).stem}-{failed_pair[1]}.png"}


def test_a_killed_run_reruns_to_exactly_one_row_per_photo_and_k(tmp_path: Path) -> None:
    _, _, config = labelled_job(tmp_path)
    assert run_local(config, fail_commit_of={1}) is None  # shard 1 wrote its outputs, then died uncommitted
    out = tmp_path / "out"
    assert (out / "_attempts" / "shard-00001.json").exists() and not (out / "metrics" / "shard-00001.parquet").exists()
    summary = run_local(config)  # the rerun redoes shard 1 (carefully: one pair at a time)
    assert summary is not None and (summary["rows"], summary["photos"], summary["ok"]) == (16, 8, 16)
    pairs = [(r["image_id"], r["k"]) for r in metrics_rows(out)]
    assert len(pairs) == len(set(pairs)) == 16  # no duplicate, none missing
    assert {(i, k) for i, _ in pairs for k in (0, 1)} == set(pairs)
    assert len(list((out / "images").rglob("*.png"))) == 16 and not (out / "_attempts").exists()


# --- training crops -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 53), (53, 37), (301, 300), (257, 1000), (224, 224), (999, 256), (997, 256)])
def test_resize_shorter_and_center_crop_match_torchvision(size: tuple[int, int]) -> None:
    from torchvision import transforms

    array = photo(size, seed=1)  # size is (W, H)
    ours = imaging.training_crop(array, 256, None)
    theirs = transforms.Resize(256)(Image.fromarray(array))
    assert ours.shape[1::-1] == theirs.size
    if min(size) >= 224:  # a pure crop: the same pixels as torchvision's, so the same offsets
        crop = imaging.training_crop(array, None, 224)
        np.testing.assert_array_equal(crop, np.asarray(transforms.CenterCrop(224)(Image.fromarray(array))))
    both = imaging.training_crop(array, 256, 224)
    assert both.shape == (224, 224, 3)
    composed = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])(Image.fromarray(array))
    assert composed.size == (224, 224)
    # the crop box of the resized photo is torchvision's too (odd margins round half to even)
    resized = np.asarray(theirs)
    np.testing.assert_array_equal(
        imaging.training_crop(resized, None, 224), np.asarray(transforms.CenterCrop(224)(theirs))
    )


def test_a_photo_smaller_than_the_crop_fails_its_row(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smaller than center_crop=64"):
        imaging.training_crop(photo((80, 40)), None, 64)
    _, _, config = labelled_job(tmp_path, styles_per_image=1, center_crop=16)  # the photos are 20 x 14
    worker = ShardWorker(config)
    try:
        summary = worker.run(0, 0, 8)
    finally:
        worker.close()
    assert summary["failed"] == 8
    row = pq.read_table(worker.storage.open("metrics/shard-00000.parquet")).to_pylist()[0]
    assert row["error_kind"] == "InputError" and "20x14 px, smaller than center_crop=16" in row["error"]
    big = job_config("m", tmp_path / "o2", resize_shorter=32, center_crop=24)
    assert (big.resize_shorter, big.center_crop) == (32, 24)


def test_class_names_from_a_path_a_file_or_a_manifest_made_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    image_tree(root)
    out = tmp_path / "m.parquet"
    build_manifest(str(root), str(out), label_from="parent")
    with open(out, "rb") as f:
        assert class_names(out) == class_names(f) == sorted(CLASSES)
    plain = tmp_path / "plain.parquet"  # no footer key: computed from the column
    pq.write_table(pa.table({"image_id": ["a", "b", "c"], "uri": ["x", "y", "z"], "label": ["q", None, "p"]}), plain)
    assert class_names(str(plain)) == ["p", "q"]
    build_manifest(str(root), str(plain))
    assert class_names(str(plain)) is None
