"""Planning without Ray: a foreign manifest's streamed checks, and what makes a manifest 'changed'."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import plan as planning
from pipeline.errors import ManifestError
from pipeline.manifest import write_table


def foreign(path: Path, ids: list[str], **extra: list) -> str:
    """A manifest as another tool writes it: no stylize footer, small row groups."""
    table = pa.table({"image_id": ids, "uri": [f"s3://b/{i}.jpg" for i in ids], **extra})
    pq.write_table(table, path, row_group_size=7)
    return str(path)


def test_a_foreign_manifest_is_fingerprinted_like_a_built_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "_BATCH_ROWS", 5)  # many batches: the result must not depend on them
    ids = [f"id{i:03d}" for i in range(40)]
    bare = planning.inspect_manifest(foreign(tmp_path / "bare.parquet", ids))
    write_table(pa.table({"image_id": ids, "uri": [f"s3://b/{i}.jpg" for i in ids]}), str(tmp_path / "built.parquet"))
    built = planning.inspect_manifest(str(tmp_path / "built.parquet"))
    assert bare.fingerprint == built.fingerprint and bare.rows == 40 and bare.sources == ""


def test_duplicate_ids_across_batches_are_found_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "_BATCH_ROWS", 4)
    ids = [f"id{i:03d}" for i in range(30)] + ["id003", "id029", "id029"]
    with pytest.raises(ManifestError, match=r"duplicate image_id 'id003' \(2 rows\); 'id029' \(3 rows\)"):
        planning.inspect_manifest(foreign(tmp_path / "dup.parquet", ids))


def test_a_replaced_photo_changes_the_sources_digest_not_the_fingerprint(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    night1 = planning.inspect_manifest(
        foreign(tmp_path / "1.parquet", ids, size_bytes=[1, 2, 3], etag=[None, "e", None])
    )
    night2 = planning.inspect_manifest(
        foreign(tmp_path / "2.parquet", ids, size_bytes=[1, 2, 4], etag=[None, "e", None])
    )
    assert night1.fingerprint == night2.fingerprint and night1.sources != night2.sources
