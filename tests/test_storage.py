"""Local Storage: atomic puts, listing, and keys / source URIs that try to escape."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.storage import (
    ALLOWED_SCHEMES,
    Storage,
    check_key,
    key_problem,
    local_copy,
    open_fs,
    read_source,
    s3_options,
    safe_key,
    schemes_of,
)

ATTACKS = [
    "../../x",
    "a/../../x",
    "..",
    "/etc/passwd",
    "s3://other-bucket/x",
    "gs://b/x",
    "simplecache::s3://b/x",
    "a\\..\\..\\x",
    "C:/Windows/x",
    "data:text/plain,hi",
    "a\x00b",
    "a\nb",
    "",
    "a//b",
    "a/",
    "./a",
    "a/*",
    "x" * 300,
]


@pytest.mark.parametrize("key", ATTACKS)
def test_unsafe_keys_rejected(key, tmp_path):
    assert key_problem(key) is not None
    with pytest.raises(StorageError, match="unsafe key"):
        check_key(key)
    st = Storage(str(tmp_path / "root"))
    with pytest.raises(StorageError):
        st.put(key, b"x")
    with pytest.raises(StorageError):
        st.get(key)
    assert not (tmp_path / "x").exists() and not (tmp_path / "passwd").exists()


@pytest.mark.parametrize("key", ["a.jpg", "2020/trip/IMG 0001.JPG", "10:30.jpg", ".hidden", "a..b/c", "фото.jpg"])
def test_safe_keys_accepted(key):
    assert check_key(key) == key


def test_safe_key_joins_and_rejects():
    assert safe_key("run-1", "images", "2020/a.jpg") == "run-1/images/2020/a.jpg"
    for bad in (("out", "../x"), ("out", ""), ("/abs",), ("out", "s3://b/k"), ("a\\b",), ("a\x00",)):
        with pytest.raises(StorageError):
            safe_key(*bad)
    with pytest.raises(StorageError):
        safe_key()


def test_put_get_exists_list_delete(tmp_path):
    st = Storage(str(tmp_path / "out"))
    uri = st.put("a/b/c.jpg", b"hello")
    assert uri == str(tmp_path / "out" / "a" / "b" / "c.jpg")
    assert st.uri("a/b/c.jpg") == uri
    assert st.get("a/b/c.jpg") == b"hello"
    assert st.exists("a/b/c.jpg") and not st.exists("a/b/missing.jpg")
    st.put("a/d.txt", b"1")
    st.put("ab.txt", b"2")
    assert st.list() == ["a/b/c.jpg", "a/d.txt", "ab.txt"]
    assert st.list("a/") == ["a/b/c.jpg", "a/d.txt"]
    assert st.list("a") == ["a/b/c.jpg", "a/d.txt", "ab.txt"]
    assert st.list("a/b") == ["a/b/c.jpg"]
    assert st.list("zzz/") == []
    st.put("a/d.txt", b"overwritten")
    assert st.get("a/d.txt") == b"overwritten"
    st.delete("a/d.txt")
    st.delete("a/d.txt")  # idempotent
    assert not st.exists("a/d.txt")
    with pytest.raises(StorageError, match="not found"):
        st.get("a/d.txt")
    with pytest.raises(StorageError, match="unsafe list prefix"):
        st.list("../")


def test_file_uri_root(tmp_path):
    st = Storage(f"file://{tmp_path}/out/")
    assert st.put("k.bin", b"1") == f"file://{tmp_path}/out/k.bin"
    assert (tmp_path / "out" / "k.bin").read_bytes() == b"1"


def test_put_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    st = Storage(str(tmp_path))
    st.put("x.bin", b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match="disk full"):
        st.put("x.bin", b"new-but-failed")
    monkeypatch.undo()
    assert st.get("x.bin") == b"old"  # the old object is intact, never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    assert st.list() == ["x.bin"]


def test_put_file_mode_is_not_private(tmp_path):
    st = Storage(str(tmp_path))
    st.put("x.bin", b"1")
    (tmp_path / "plain.bin").write_bytes(b"1")  # what an ordinary open() makes under this umask
    mode = stat.S_IMODE((tmp_path / "x.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) != 0o600


def test_schemes_of_matches_fsspec():
    assert schemes_of("/data/a.jpg") == [""]
    assert schemes_of("relative/a.jpg") == [""]
    assert schemes_of("file:///data/a.jpg") == ["file"]
    assert schemes_of("S3://b/k") == ["s3"]
    assert schemes_of("simplecache::s3://b/k") == ["simplecache", "s3"]
    assert schemes_of("data:text/plain,hi") == ["data"]
    assert schemes_of("http://169.254.169.254/latest") == ["http"]


def test_read_source_allow_list(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(b"abc")
    assert read_source(str(p)) == b"abc"
    assert read_source(f"file://{p}") == b"abc"
    for uri in ("http://127.0.0.1:1/x.jpg", "memory://x.jpg", "ftp://h/x.jpg", "data:,abc", "simplecache::file:///x"):
        with pytest.raises(StorageError, match="not allowed"):
            read_source(uri)
    with pytest.raises(StorageError, match="not found"):
        read_source(str(tmp_path / "missing.jpg"))
    with pytest.raises(StorageError, match="not allowed"):
        read_source(str(p), allowed_schemes={"s3"})


def test_memory_scheme_when_configured():
    import fsspec

    fsspec.filesystem("memory").pipe_file("/stylize-test/a.bin", b"mem")
    assert read_source("memory://stylize-test/a.bin", allowed_schemes=ALLOWED_SCHEMES | {"memory"}) == b"mem"


def test_s3_endpoint_from_env(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("STYLIZE_S3_ENDPOINT", "http://127.0.0.1:9")
    assert s3_options({})["endpoint_url"] == "http://127.0.0.1:9"
    assert s3_options({"endpoint_url": "http://x"})["endpoint_url"] == "http://x"
    monkeypatch.delenv("STYLIZE_S3_ENDPOINT")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:10")
    assert s3_options(None) == {"endpoint_url": "http://127.0.0.1:10"}


def test_open_fs_local(tmp_path):
    fs, path = open_fs(str(tmp_path))
    assert path == str(tmp_path) and fs.isdir(path)


def test_local_copy_is_the_path_itself_or_a_temp_copy_removed_after(tmp_path):
    import fsspec

    local = tmp_path / "a.mp4"
    local.write_bytes(b"video")
    with local_copy(fsspec.filesystem("file"), str(local)) as path:
        assert path == str(local)
    assert local.exists()  # a local source is never deleted

    memory = fsspec.filesystem("memory")
    memory.pipe("/bucket/clip.mov", b"remote video")
    memory.pipe("/bucket/noext", b"x")
    with local_copy(memory, "/bucket/clip.mov") as path:
        assert path.endswith(".mov") and Path(path).read_bytes() == b"remote video"
    assert not os.path.exists(path)
    with local_copy(memory, "/bucket/noext", ".video") as path:
        assert path.endswith(".video")
    with pytest.raises(FileNotFoundError), local_copy(memory, "/bucket/missing.mp4"):
        pass
