"""Output formats read back with the real readers: ImageFolder on files, webdataset on tars, pyarrow + Pillow on
Parquet (``datasets`` where it is installed); collisions, byte-identical tars, a rerun after a kill."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import layout, runner, writers
from pipeline.errors import StorageError
from pipeline.plan import colliding_stems
from pipeline.shard import ShardWorker
from tests.pipeline_helpers import encode, files_under, job_config, photo, write_manifest

CLASSES = ("bird", "cat", "dog")


def tree(folder: Path, per_class: int = 3) -> list[tuple[str, str]]:
    """An ImageFolder tree of ``CLASSES`` x ``per_class`` photos; manifest rows (id = relative path)."""
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            path = folder / name / f"img{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(photo((20, 16), seed=10 * c + i)))  # PNG bytes: lossless checks
            rows.append((f"{name}/img{i}.jpg", str(path)))
    return rows


def labelled(worker: ShardWorker) -> ShardWorker:
    """Rows carry their parent folder as ``label`` (and its index): what ``manifest build --label-from parent``
    gives the rows (helper A's branch); rows that already have a label are left as they are."""
    items = worker._items

    def with_labels(shard: int, start: int, count: int) -> list[Any]:
        out = items(shard, start, count)
        for item in out:
            if item.row.get("label") is None:
                label = item.row["image_id"].split("/")[0]
                item.row.update(label=label, label_index=CLASSES.index(label))
        return out

    worker._items = with_labels  # type: ignore[method-assign]
    return worker


def run_job(
    tmp_path: Path, rows: list[tuple[str, str]], out: Path, *, labels: bool = True, **overrides: Any
) -> list[dict[str, Any]]:
    """Plan (``_plan.json``, as ``stylize run`` writes it) and run every shard with one ShardWorker, no Ray;
    then ``runner.finish`` (``_SUCCESS``, the dataset card). ``labels``: the rows' parent folders are their
    classes. Returns the metrics rows."""
    columns = {"label": [r[0].split("/")[0] for r in rows]} if labels else {}
    manifest = write_manifest(tmp_path / "m.parquet", rows, **columns)
    config = job_config(manifest, out, **overrides)
    storage, plan = runner.plan_job(config)
    worker = labelled(ShardWorker(config)) if labels else ShardWorker(config)
    try:
        fresh = [worker.run(s, *plan.shard_range(s)) for s in plan.pending]
    finally:
        worker.close()
    runner.finish(config, storage, plan, fresh, wall=1.0, processed=plan.rows)
    return [r for key in sorted((out / "metrics").iterdir()) for r in pq.read_table(key).to_pylist()]


def test_files_mirror_the_source_tree_and_imagefolder_reads_the_classes(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    rows = run_job(tmp_path, tree(tmp_path / "tree"), tmp_path / "out", shard_rows=4)
    images = {p for p in files_under(tmp_path / "out") if p.startswith("images/")}
    assert images == {f"images/{c}/img{i}.png" for c in CLASSES for i in range(3)}  # not img0.jpg.png
    assert {r["output_uri"] for r in rows} == {str(tmp_path / "out" / p) for p in images}

    folder = ImageFolder(str(tmp_path / "out" / "images"))
    assert folder.classes == list(CLASSES) and len(folder) == 9
    for path, index in folder.samples:
        assert CLASSES[index] == Path(path).parent.name
        source = tmp_path / "tree" / Path(path).parent.name / (Path(path).stem + ".jpg")
        expected = 255 - np.asarray(Image.open(source).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), expected)


def test_sources_whose_names_would_collide_are_told_apart(tmp_path: Path) -> None:
    files = {"d/a.jpg": 1, "d/a.png": 2, "d/b.jpg": 3, "d/A.JPEG": 4, "e/a.jpg": 5}
    rows = []
    for image_id, seed in files.items():
        path = tmp_path / "src" / f"{seed}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(photo((12, 10), seed=seed)))
        rows.append((image_id, str(path)))
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    assert colliding_stems(str(manifest)) == ["d/a"]  # d/A.JPEG's stem is d/A: another name
    run_job(tmp_path, rows, tmp_path / "out", labels=False)
    plan = json.loads((tmp_path / "out" / layout.PLAN_KEY).read_text())
    assert plan["collisions"] == ["d/a"]
    images = {p for p in files_under(tmp_path / "out") if p.startswith("images/")}
    assert images == {"images/d/a.jpg.png", "images/d/a.png.png", "images/d/b.png", "images/d/A.png", "images/e/a.png"}
    for image_id, seed in files.items():  # each its own photo's output: none overwritten
        name = image_id + ".png" if image_id.startswith("d/a.") else layout.output_stem(image_id) + ".png"
        got = np.asarray(Image.open(tmp_path / "out" / "images" / name))
        np.testing.assert_array_equal(got, 255 - photo((12, 10), seed=seed))


@pytest.mark.parametrize(
    "ids",
    [
        ["a.jpg", "a.png", "a.jpg.jpg", "b.jpg"],  # a.jpg keeps its extension: a.jpg.jpg's stem is now taken
        ["a.jpg", "a.png", "a.jpg.jpg", "a.jpg.png", "a.jpg.jpg.png", "b", "b.webp", "c.tif"],
    ],
)
def test_no_two_ids_get_one_name_whatever_their_extensions(tmp_path: Path, ids: list[str]) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", [(i, f"/x/{i}") for i in ids])
    collisions = set(colliding_stems(str(manifest)))
    names = [layout.output_key(i, "png", keep_extension=layout.output_stem(i) in collisions) for i in ids]
    assert len(set(names)) == len(ids)
    assert names[-1] == layout.output_key(ids[-1], "png") != f"images/{ids[-1]}.png"  # its stem is its own: mirrored


def test_a_plan_from_before_mirrored_names_keeps_the_old_names(tmp_path: Path) -> None:
    rows = tree(tmp_path / "tree", per_class=1)
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    config = job_config(manifest, tmp_path / "out")
    runner.plan_job(config)
    plan_file = tmp_path / "out" / layout.PLAN_KEY
    plan_file.write_text(json.dumps({k: v for k, v in json.loads(plan_file.read_text()).items() if k != "collisions"}))
    worker = ShardWorker(config)
    try:
        worker.run(0, 0, len(rows))
    finally:
        worker.close()
    images = {p for p in files_under(tmp_path / "out") if p.startswith("images/")}
    assert images == {f"images/{c}/img0.jpg.png" for c in CLASSES}  # as the plan's earlier shards named theirs


def read_webdataset(path: Path) -> list[dict[str, Any]]:
    import webdataset as wds

    return list(wds.WebDataset(str(path), shardshuffle=False).decode("pil"))


def test_webdataset_tars_hold_images_classes_and_fields(tmp_path: Path) -> None:
    rows = run_job(tmp_path, tree(tmp_path / "tree"), tmp_path / "out", output_format="webdataset", shard_rows=4)
    out = tmp_path / "out"
    assert sorted(p for p in files_under(out) if p.startswith("shards/")) == [
        f"shards/shard-{s:05d}.tar" for s in range(3)
    ]
    assert not (out / "images").exists()
    samples = [s for shard in range(3) for s in read_webdataset(out / layout.container_key(shard, 0, "webdataset"))]
    assert len(samples) == 9 and len({s["__key__"] for s in samples}) == 9
    by_id = {r["image_id"]: r for r in rows}
    for sample in samples:
        fields = sample["json"]
        image_id = fields["image_id"]
        assert sample["__key__"] == layout.sample_key(image_id) and "." not in sample["__key__"]
        assert sample["cls"] == CLASSES.index(image_id.split("/")[0]) == fields["label_index"]
        assert fields["label"] == image_id.split("/")[0]
        assert (fields["stylizer"], fields["alpha"], fields["seed"], fields["style"], fields["k"]) == (
            "test-invert",
            1.0,
            0,
            "1",
            0,
        )
        assert "weights_sha256" in fields and fields["weights_sha256"] is None  # a test double has no file
        source = Image.open(tmp_path / "tree" / image_id).convert("RGB")
        assert (fields["width"], fields["height"]) == source.size
        np.testing.assert_array_equal(np.asarray(sample["png"].convert("RGB")), 255 - np.asarray(source))
        # the metrics row names the tar and the member
        base, member = layout.split_member(by_id[image_id]["output_uri"])
        assert base.endswith(".tar") and member == f"{sample['__key__']}.png"
        assert writers.read_output(runner.open_storage(job_config("m", out)), by_id[image_id]["output_uri"])
    with tarfile.open(out / "shards" / "shard-00000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(writers.MTIME, 0, 0, "", 0o644)}


def test_two_runs_give_byte_identical_tars(tmp_path: Path) -> None:
    rows = tree(tmp_path / "tree")
    run_job(tmp_path, rows, tmp_path / "one", output_format="webdataset", shard_rows=5)
    run_job(tmp_path, rows, tmp_path / "two", output_format="webdataset", shard_rows=5)
    for shard in range(2):
        key = layout.container_key(shard, 0, "webdataset")
        assert (tmp_path / "one" / key).read_bytes() == (tmp_path / "two" / key).read_bytes()


def test_parquet_shards_hold_image_bytes_and_fields(tmp_path: Path) -> None:
    rows = run_job(tmp_path, tree(tmp_path / "tree"), tmp_path / "out", output_format="parquet", shard_rows=4)
    files = sorted((tmp_path / "out" / "shards").iterdir())
    assert [f.name for f in files] == [f"shard-{s:05d}.parquet" for s in range(3)]
    table = pq.read_table(files)  # the shard files read as one table
    assert table.num_rows == 9 and len(set(table.column("key").to_pylist())) == 9
    for name in ("key", "image", "label", "label_index", "image_id", "style", "k", "weights_sha256", "alpha"):
        assert name in table.column_names
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"} and set(features) == set(table.column_names)
    by_id = {r["image_id"]: r for r in rows}
    for record in table.to_pylist():
        image_id = record["image_id"]
        assert record["label_index"] == CLASSES.index(record["label"]) and record["k"] == 0
        assert record["image"]["path"] == record["key"] + ".png"
        decoded = np.asarray(Image.open(io.BytesIO(record["image"]["bytes"])).convert("RGB"))
        source = np.asarray(Image.open(tmp_path / "tree" / image_id).convert("RGB"))
        np.testing.assert_array_equal(decoded, 255 - source)
        assert layout.split_member(by_id[image_id]["output_uri"])[1] == record["key"]


def test_parquet_shards_load_with_hugging_face_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")  # not a test dependency (heavy): run where it is installed
    run_job(tmp_path, tree(tmp_path / "tree"), tmp_path / "out", output_format="parquet", shard_rows=4)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "shards" / "*.parquet"), split="train")
    assert len(ds) == 9 and ds[0]["image"].size == Image.open(tmp_path / "tree" / ds[0]["image_id"]).size


class KilledCommit(StorageError):
    pass


def test_a_rerun_after_a_kill_rewrites_the_shard_file_whole(tmp_path: Path) -> None:
    rows = tree(tmp_path / "tree")
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    config = job_config(manifest, tmp_path / "out", output_format="webdataset")
    runner.plan_job(config)
    worker = ShardWorker(config)
    put = worker.storage.put

    def dies_at_the_commit(key: str, data: bytes) -> str:
        if key == layout.shard_key(0):
            raise KilledCommit("killed before the commit")
        return put(key, data)

    worker.storage.put = dies_at_the_commit  # type: ignore[method-assign]
    with pytest.raises(KilledCommit):
        worker.run(0, 0, len(rows))
    worker.close()
    tar = tmp_path / "out" / "shards" / "shard-00000.tar"
    assert tar.is_file() and not (tmp_path / "out" / layout.shard_key(0)).exists()  # written, not committed

    again = ShardWorker(config)
    try:
        summary = again.run(0, 0, len(rows))
    finally:
        again.close()
    keys = [s["__key__"] for s in read_webdataset(tar)]
    assert summary["ok"] == 9 and len(keys) == len(set(keys)) == 9
    assert files_under(tmp_path / "out" / "shards") == {"shard-00000.tar"}  # no temporary file left


def test_keys_that_coincide_in_one_shard_both_get_their_ids_hash(tmp_path: Path) -> None:
    storage = runner.open_storage(job_config("m", tmp_path / "out"))
    writer = writers.open_writer("webdataset", storage, 0, 0, None)
    for image_id in ("x/a.b", "x/a_b", "x/c"):
        writer.put(writers.Sample(image_id, None, "png", encode(photo((4, 4))), {"image_id": image_id}))
    named = writer.finish()
    members = {image_id: layout.split_member(uri)[1] for (image_id, _), uri in named.items()}
    assert members["x/c"] == "x_c.png" and members["x/a.b"] != members["x/a_b"]
    assert all(members[i].startswith("x_a_b_") and members[i].count(".") == 1 for i in ("x/a.b", "x/a_b"))


@pytest.mark.parametrize("output_format", ["webdataset", "parquet"])
def test_the_report_shows_thumbnails_read_from_shard_files(tmp_path: Path, output_format: str) -> None:
    from pipeline.report import write_report

    out = tmp_path / "out"
    run_job(tmp_path, tree(tmp_path / "tree", per_class=1), out, output_format=output_format)
    write_report(runner.open_storage(job_config("m", out)), worst=0)
    page = (out / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 6  # each sample's original and its output


def test_the_careful_pass_after_a_crash_writes_the_shard_file_whole(tmp_path: Path) -> None:
    rows = tree(tmp_path / "tree", per_class=2)
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    config = job_config(manifest, tmp_path / "out", output_format="parquet")
    runner.plan_job(config)
    storage = runner.open_storage(config)
    storage.put(layout.attempt_key(0), json.dumps({"attempt": 1, "suspect": "cat/img1.jpg"}).encode())  # a crash
    worker = ShardWorker(config)
    try:
        summary = worker.run(0, 0, len(rows))  # one image at a time, each named in the marker first
    finally:
        worker.close()
    table = pq.read_table(tmp_path / "out" / "shards" / "shard-00000.parquet")
    assert summary["ok"] == 6 and sorted(table.column("image_id").to_pylist()) == sorted(r[0] for r in rows)


def test_a_new_generation_of_a_shard_file_output_holds_every_row_and_drops_the_old_files(tmp_path: Path) -> None:
    rows = tree(tmp_path / "tree")
    out = tmp_path / "out"
    run_job(tmp_path, rows[:6], out, labels=False, output_format="webdataset", shard_rows=4)
    assert files_under(out / "shards") == {"shard-00000.tar", "shard-00001.tar"}
    metrics = run_job(tmp_path, rows, out, labels=False, output_format="webdataset", shard_rows=4)  # 3 photos more
    success = json.loads((out / layout.SUCCESS_KEY).read_text())
    assert success["generation"] == 1 and success["processed_this_run"] == 9  # nothing kept: files hold all rows
    assert files_under(out / "shards") == {f"shard-g0001-{s:05d}.tar" for s in range(3)}
    keys = [s["__key__"] for f in sorted((out / "shards").iterdir()) for s in read_webdataset(f)]
    assert len(keys) == len(set(keys)) == 9
    assert all("shard-g0001-" in r["output_uri"] for r in metrics)
