"""Manifests: streaming build, ids that cannot escape, per-row problems, tables of URIs."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import manifest as m
from pipeline.errors import ManifestError, StylizeError
from pipeline.storage import check_key


def _img_bytes(w: int, h: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture()
def archive(tmp_path):
    """50 tiny images in nested folders, plus files a build must skip."""
    root = tmp_path / "archive"
    for i in range(50):
        folder = root / f"y{2000 + i % 3}" / f"m{i % 4:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        fmt, ext = (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))[i % 3]
        (folder / f"img_{i:03d}.{ext}").write_bytes(_img_bytes(8 + i, 6 + i % 7, fmt, seed=i))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.jpg").write_bytes(_img_bytes(4, 4))
    (root / "y2000" / "._img_000.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "y2001" / "my photo (1).JPG").write_bytes(_img_bytes(10, 12, "JPEG"))
    (root / "y2001" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 10)
    return root


def test_build_streams_rows_and_metadata(archive, tmp_path):
    out = tmp_path / "m" / "manifest.parquet"
    seen = []
    stats = m.build_manifest(str(archive), str(out), batch_rows=16, progress=seen.append)
    assert stats.rows == 52  # 50 + "my photo (1).JPG" + broken.jpg
    assert stats.skipped == 1 + 1  # notes.txt, the ._ sidecar; .hidden/ is never even listed
    assert stats.listed == seen[-1] == 54 and seen == list(range(1, 55))
    assert stats.unprobed == 1 and stats.renamed_ids == 1
    pf = pq.ParquetFile(str(out))
    assert pf.metadata.num_row_groups == 4  # 16 + 16 + 16 + 4: written in batches, not at the end
    table = m.read_manifest(str(out))
    assert table.schema.equals(m.SCHEMA)
    rows = {r["image_id"]: r for r in table.to_pylist()}
    r = rows["y2000/m00/img_000.jpg"]
    assert r["uri"] == str(archive / "y2000" / "m00" / "img_000.jpg")
    assert (r["width"], r["height"]) == (8, 6)
    assert r["size_bytes"] == os.path.getsize(r["uri"])
    assert r["mtime"] is not None
    assert rows["y2001/broken.jpg"]["width"] is None
    assert not any("secret" in i or "._" in i for i in rows)
    assert m.validate(table) == []
    assert stats.total_bytes == sum(r["size_bytes"] for r in rows.values())
    ids = table.column("image_id").to_pylist()
    # deterministic ids and order (each folder's files sorted, then its sorted subfolders)
    assert ids.index("y2001/broken.jpg") < ids.index("y2001/m00/img_004.png")
    out2 = tmp_path / "again.parquet"
    m.build_manifest(str(archive), str(out2), batch_rows=1000, probe_size=False)
    assert m.read_manifest(str(out2)).column("image_id").to_pylist() == ids
    assert m.read_manifest(str(out2)).column("width").null_count == 52


def test_build_extensions_filter(archive, tmp_path):
    stats = m.build_manifest(str(archive), str(tmp_path / "o.parquet"), extensions=["PNG"], probe_size=False)
    assert stats.rows == 17
    with pytest.raises(ManifestError, match="no images"):
        m.build_manifest(str(archive), str(tmp_path / "x.parquet"), extensions=[".heic"])
    assert not (tmp_path / "x.parquet").exists()
    assert [p.name for p in tmp_path.iterdir() if "manifest-" in p.name] == []  # no temp left


def test_build_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        m.build_manifest(str(tmp_path / "nope"), str(tmp_path / "o.parquet"))
    f = tmp_path / "list.csv"
    f.write_text("uri\n")
    with pytest.raises(ManifestError, match="from-table"):
        m.build_manifest(str(f), str(tmp_path / "o.parquet"))
    with pytest.raises(ManifestError, match="not allowed"):
        m.build_manifest("memory://x", str(tmp_path / "o.parquet"))
    with pytest.raises(ManifestError, match="not allowed"):
        m.build_manifest(str(tmp_path), "http://127.0.0.1:1/o.parquet")


def test_symlinked_folder_not_followed(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    (root / "x.png").write_bytes(_img_bytes(4, 4))
    os.symlink(root, root / "loop")
    stats = m.build_manifest(str(root), str(tmp_path / "o.parquet"))
    assert stats.rows == 1


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("2020/trip/IMG_0001.JPG", "2020/trip/IMG_0001.JPG"),
        ("a-b_c.d.png", "a-b_c.d.png"),
    ],
)
def test_safe_ids_kept(rel, expected):
    assert m.make_image_id(rel) == expected


@pytest.mark.parametrize(
    "rel",
    ["my photo.jpg", "../../x.jpg", "/etc/passwd", "s3://other-bucket/x", "a\\..\\b.jpg", "фото.jpg", "a//b.jpg",
     "a\x00.jpg", "x/" + "long" * 100 + ".jpg", "/".join(["d" * 100] * 10) + "/f.jpg", "a*?.jpg", ""],
)  # fmt: skip
def test_unsafe_ids_neutralised(rel):
    image_id = m.make_image_id(rel)
    assert check_key(image_id) == image_id
    assert "~" in image_id and len(image_id) <= 620
    assert m.make_image_id(rel) == image_id  # stable


def test_ids_never_collide_after_cleaning():
    a, b, c = m.make_image_id("a b.jpg"), m.make_image_id("a_b.jpg"), m.make_image_id("a?b.jpg")
    assert len({a, b, c}) == 3


def _table(ids, uris):
    return pa.table({"image_id": pa.array(ids, pa.string()), "uri": pa.array(uris, pa.string())})


def test_validate_reports_per_row():
    table = _table(
        ["ok.jpg", "../../x", "/etc/passwd", "s3://other-bucket/x", "dup", "dup", "h", "mem", None, "nouri"],
        ["/a.jpg", "/b.jpg", "/c.jpg", "/d.jpg", "s3://b/1.jpg", "gs://b/2.jpg",
         "http://169.254.169.254/latest/meta-data", "memory://x.jpg", "/e.jpg", None],
    )  # fmt: skip
    problems = m.validate(table)
    text = "\n".join(problems)
    assert "duplicate image_id 'dup' (2 rows)" in text
    assert "row 1 ('../../x'): unsafe image_id" in text
    assert "row 2 ('/etc/passwd'): unsafe image_id" in text
    assert "row 3 ('s3://other-bucket/x'): unsafe image_id" in text
    assert "row 6 ('h'): uri scheme 'http' not allowed" in text
    assert "row 7 ('mem'): uri scheme 'memory' not allowed" in text
    assert "row 8 (None): missing image_id" in text
    assert "row 9 ('nouri'): missing uri" in text
    assert not any(p.startswith(("row 0 ", "row 4 ", "row 5 ")) for p in problems)
    assert len(problems) == 8
    assert m.duplicate_ids(table) == {"dup": 2}
    # a configured allow-list changes the verdict per row
    assert m.row_problem("h", "http://x/y.jpg", allowed_schemes={"http"}) is None
    assert m.row_problem("ok", "/a.jpg", allowed_schemes={"s3"}) == "uri scheme 'local' not allowed"


def test_validate_missing_columns_and_limit():
    assert m.validate(pa.table({"uri": ["a"]})) == ["missing column 'image_id'"]
    assert "must hold strings" in m.validate(pa.table({"image_id": [1], "uri": ["a"]}))[0]
    many = _table([f"../{i}" for i in range(500)], ["/a.jpg"] * 500)
    problems = m.validate(many, limit=10)
    assert len(problems) == 11 and problems[-1] == "... and 490 more problems"


def test_from_table_csv_keeps_extra_columns(tmp_path):
    src = tmp_path / "list.csv"
    src.write_text(
        "path,style,batch\n"
        "s3://photos/2020/a b.jpg,3:0.5,0001\n"
        "/data/x.png,starry.jpg,0002\n"
        "http://evil/x.jpg,1,0003\n"
        "/data/x.png,2,0004\n"
    )
    out = tmp_path / "m.parquet"
    stats = m.from_table(str(src), str(out), uri_column="path")
    t = m.read_manifest(str(out))
    assert t.column_names == [f.name for f in m.SCHEMA] + ["style", "batch"]
    assert t.column("batch").to_pylist() == ["0001", "0002", "0003", "0004"]  # not parsed as numbers
    assert t.column("style").to_pylist()[0] == "3:0.5"
    ids = t.column("image_id").to_pylist()
    assert ids[1] == "data/x.png" and ids[0].startswith("photos/2020/a_b.jpg~")
    assert stats.rows == 4 and stats.renamed_ids == 1  # "a b.jpg"
    text = "\n".join(stats.problems)
    assert "duplicate image_id 'data/x.png'" in text and "'http' not allowed" in text


def test_from_table_parquet_with_ids(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": ["a", "../b"], "uri": ["/x/a.jpg", "/x/b.jpg"], "size_bytes": [10, 20]}), src)
    stats = m.from_table(str(src), str(tmp_path / "m.parquet"), id_column="key")
    t = m.read_manifest(str(tmp_path / "m.parquet"))
    assert t.column("image_id").to_pylist() == ["a", "../b"]  # given ids are kept, and reported
    assert t.column("size_bytes").to_pylist() == [10, 20] and stats.total_bytes == 30
    assert len(stats.problems) == 1 and "unsafe image_id" in stats.problems[0]


def test_from_table_txt_and_errors(tmp_path):
    src = tmp_path / "list.txt"
    src.write_text("# a comment\n/x/a.jpg\n\n/x/b.jpg\n")
    m.from_table(str(src), str(tmp_path / "m.parquet"))
    assert m.read_manifest(str(tmp_path / "m.parquet")).column("image_id").to_pylist() == ["x/a.jpg", "x/b.jpg"]
    with pytest.raises(ManifestError, match="no column 'path'"):
        m.from_table(str(src), str(tmp_path / "o.parquet"), uri_column="path")
    with pytest.raises(ManifestError, match="not found"):
        m.from_table(str(tmp_path / "missing.csv"), str(tmp_path / "o.parquet"))


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        m.read_manifest(str(tmp_path / "none.parquet"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="cannot read"):
        m.read_manifest(str(bad))
    pq.write_table(pa.table({"uri": ["a"]}), tmp_path / "noid.parquet")
    with pytest.raises(ManifestError, match="image_id"):
        m.read_manifest(str(tmp_path / "noid.parquet"))


def test_inspect(archive, tmp_path):
    out = tmp_path / "m.parquet"
    m.build_manifest(str(archive), str(out))
    info = m.inspect(str(out))
    assert info["rows"] == 52
    # 17 jpg + "my photo (1).JPG" + broken.jpg; extensions are counted lower-cased
    assert info["extensions"] == {".jpg": 19, ".png": 17, ".webp": 16}
    assert info["schemes"] == {"local": 52}
    s = info["size_bytes"]
    assert s["unknown"] == 0 and s["min"] <= s["p50"] <= s["p90"] <= s["max"]
    assert info["total_bytes"] == sum(os.path.getsize(p) for p in m.read_manifest(str(out)).column("uri").to_pylist())
    assert info["dimensions"]["known"] == 51
    assert info["problems"] == []


def test_cli_build_and_inspect(archive, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.manifest import app

    runner = CliRunner()
    out = tmp_path / "cli.parquet"
    res = runner.invoke(app, ["build", str(archive), "--out", str(out), "--batch-rows", "7"])
    assert res.exit_code == 0, res.output
    assert "52 rows" in res.output and "listed 54" in res.output
    assert m.read_manifest(str(out)).num_rows == 52
    res = runner.invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0 and "52" in res.output and ".webp 16" in res.output
    res = runner.invoke(app, ["inspect", str(out), "--json"])
    assert res.exit_code == 0 and '"rows": 52' in res.output

    lst = tmp_path / "l.csv"
    lst.write_text("uri\n/x/a.jpg\nmemory://x.jpg\n")
    res = runner.invoke(app, ["build", "--from-table", str(lst), "--out", str(tmp_path / "t.parquet")])
    assert res.exit_code == 0 and "2 rows" in res.output and "'memory' not allowed" in res.output
    res = runner.invoke(app, ["build", "--from-table", str(lst), "--out", str(tmp_path / "t.parquet"),
                              "--allow-scheme", "memory"])  # fmt: skip
    assert res.exit_code == 0 and "not allowed" not in res.output

    res = runner.invoke(app, ["build", str(archive), "--from-table", str(lst), "--out", str(tmp_path / "u.parquet")])
    assert isinstance(res.exception, StylizeError) and "either SRC" in str(res.exception)
    res = runner.invoke(app, ["build", str(tmp_path / "nope"), "--out", str(tmp_path / "u.parquet")])
    assert isinstance(res.exception, ManifestError)
