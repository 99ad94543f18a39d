"""S3 through a real S3 API server on 127.0.0.1 (moto): Storage, read_source, manifest build."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import manifest as m
from pipeline.codec import read_image
from pipeline.errors import StorageError
from pipeline.storage import Storage, read_source
from tests.s3server import create_bucket, s3_server

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        create_bucket(url, "photos")
        create_bucket(url, "outputs")
        yield url


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_storage_put_get_list_delete(endpoint):
    st = Storage("s3://outputs/run-1")
    uri = st.put("images/a.jpg", b"abc")
    assert uri == "s3://outputs/run-1/images/a.jpg"
    assert st.get("images/a.jpg") == b"abc"
    assert st.exists("images/a.jpg") and not st.exists("images/zz.jpg")
    st.put("images/b.jpg", b"def")
    st.put("_SUCCESS", b"")
    assert st.list() == ["_SUCCESS", "images/a.jpg", "images/b.jpg"]
    assert st.list("images/") == ["images/a.jpg", "images/b.jpg"]
    st.put("images/a.jpg", b"new")  # overwrite is a single atomic PUT
    assert st.get("images/a.jpg") == b"new"
    st.delete("images/b.jpg")
    assert st.list("images/") == ["images/a.jpg"]
    with pytest.raises(StorageError, match="not found"):
        st.get("images/b.jpg")
    with pytest.raises(StorageError, match="unsafe key"):
        st.put("../../photos/evil.jpg", b"x")
    assert Storage("s3://photos").list() == []  # nothing escaped into the other bucket


def test_explicit_endpoint_option(endpoint, monkeypatch):
    monkeypatch.delenv("STYLIZE_S3_ENDPOINT")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    st = Storage("s3://outputs/explicit", storage_options={"endpoint_url": endpoint})
    st.put("k", b"v")
    assert read_source("s3://outputs/explicit/k", storage_options={"endpoint_url": endpoint}) == b"v"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the generic AWS variable works too
    s3fs.S3FileSystem.clear_instance_cache()
    assert Storage("s3://outputs/explicit").get("k") == b"v"


def test_build_manifest_from_s3_prefix(endpoint, tmp_path):
    src = Storage("s3://photos/archive")
    for i in range(12):
        src.put(f"{2020 + i % 2}/img_{i:02d}.png", _png(10 + i, 7))
    src.put("2020/my photo.png", _png(5, 5))
    src.put("2020/readme.txt", b"hello")
    src.put("2021/.DS_Store", b"junk")
    src.put("elsewhere.png", _png(3, 3))  # still under the prefix, at its top

    out = "s3://outputs/manifests/photos.parquet"
    stats = m.build_manifest("s3://photos/archive", out, batch_rows=5)
    assert stats.rows == 14 and stats.skipped == 2 and stats.renamed_ids == 1 and stats.unprobed == 0
    table = m.read_manifest(out)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    r = rows["2020/img_00.png"]
    assert r["uri"] == "s3://photos/archive/2020/img_00.png"
    assert (r["width"], r["height"]) == (10, 7)
    assert r["size_bytes"] == len(_png(10, 7)) and r["etag"] and r["mtime"] is not None
    assert any(i.startswith("2020/my_photo.png~") for i in rows)
    assert m.validate(table) == []
    # a worker can read every row back through the allow-listed reader and the codec
    for row in table.to_pylist()[:3]:
        assert read_source(row["uri"])[:4] == b"\x89PNG"
        assert read_image(row["uri"]).width == row["width"]
    info = m.inspect(out)
    assert info["schemes"] == {"s3": 14} and info["rows"] == 14


def test_from_table_with_s3_uris(endpoint, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("s3://photos/archive/2020/img_00.png\ns3://photos/archive/2021/img_01.png\n")
    stats = m.from_table(str(lst), "s3://outputs/manifests/list.parquet")
    assert stats.rows == 2 and stats.problems == []
    ids = m.read_manifest("s3://outputs/manifests/list.parquet").column("image_id").to_pylist()
    assert ids == ["photos/archive/2020/img_00.png", "photos/archive/2021/img_01.png"]


def test_both_job_entrypoints_read_their_config_from_s3(endpoint):
    from jobs.run_job import parse_config as parse_job_config
    from jobs.train_job import parse_config as parse_train_config

    configs = Storage("s3://outputs/configs")
    configs.put("job.yaml", b"manifest: s3://photos/m.parquet\noutput: s3://outputs/run\nstyle: '3'\n")
    configs.put(
        "train.json",
        b'{"stylizer": "johnson", "style": "s3://photos/wave.jpg", '
        b'"content_manifest": "s3://photos/c.txt", "output": "s3://outputs/ckpt"}',
    )
    job = parse_job_config(["--config", "s3://outputs/configs/job.yaml", "--set", "batch_size=2"])
    assert (job.output, job.batch_size) == ("s3://outputs/run", 2)
    train = parse_train_config(["--config", "s3://outputs/configs/train.json"])
    assert (train.stylizer, train.output) == ("johnson", "s3://outputs/ckpt")


@pytest.mark.parametrize("output_format", ["webdataset", "parquet"])
def test_a_shard_file_goes_to_s3_whole_and_its_members_read_back(endpoint, output_format):
    from pipeline import writers

    storage = Storage(f"s3://outputs/{output_format}", {"endpoint_url": endpoint})
    writer = writers.open_writer(output_format, storage, 3, 0, None)
    for image_id in ("a/x.jpg", "b/y.jpg"):
        writer.put(writers.Sample(image_id, None, "png", _png(4, 3), {"image_id": image_id}))
    named = writer.finish()
    assert storage.list("shards/") == [f"shards/shard-00003.{'tar' if output_format == 'webdataset' else 'parquet'}"]
    for uri in named.values():
        assert uri.startswith(f"s3://outputs/{output_format}/shards/shard-00003.")
        assert Image.open(io.BytesIO(writers.read_output(storage, uri))).size == (4, 3)
