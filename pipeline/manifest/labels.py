"""A manifest's ``label`` column: each photo's class, from its folder or from a table of ``image_id,label``.

Training sets keep their labels through stylization: ``manifest build --label-from parent`` names each
photo's class after the folder it sits in (torchvision's ImageFolder layout, ``root/<class>/<photo>``;
``top`` takes the first folder under the root, ImageFolder's exact rule for deeper trees), and
``--labels FILE`` takes them from a CSV or Parquet table of ``image_id,label`` (COCO-style or custom).
A photo without a label (its id is not in the table, or it sits at the root) gets a null label and is
counted (``ManifestStats.unlabeled``): a partly labelled set is allowed, and the CLI says how many.
The class names are recorded once, sorted, in the manifest's footer (``footer.labels_metadata``); a
label's index is its position there.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ManifestError
from pipeline.manifest.read import duplicate_ids, read_table_file
from pipeline.manifest.schema import LABEL_COLUMN, LABEL_SOURCES
from pipeline.storage import ALLOWED_SCHEMES


def label_from_path(relative: str, how: str) -> str | None:
    """The class of a photo at ``relative`` (a path under the listed root): its folder (``parent``) or the
    first folder under the root (``top``); None for a photo at the root itself."""
    folder = posixpath.dirname(relative.strip("/"))
    if not folder:
        return None
    if how == "parent":
        return posixpath.basename(folder)
    if how == "top":
        return folder.split("/", 1)[0]
    raise ManifestError(f"--label-from {how!r}: choose one of {', '.join(LABEL_SOURCES)}")


def read_labels(
    path: str, storage_options: dict[str, Any] | None = None, allowed: Iterable[str] = ALLOWED_SCHEMES
) -> dict[str, str]:
    """``{image_id: label}`` from a CSV/TSV or Parquet table with ``image_id`` and ``label`` columns.
    A repeated id or a table without those columns is a ``ManifestError``."""
    table = read_table_file(path, storage_options, allowed)
    missing = [c for c in ("image_id", LABEL_COLUMN) if c not in table.column_names]
    if missing:
        raise ManifestError(f"labels table {path} lacks column(s) {', '.join(missing)}; has {table.column_names}")
    table = table.select(["image_id", LABEL_COLUMN]).filter(pc.is_valid(table.column("image_id")))
    dupes = duplicate_ids(table)
    if dupes:
        first = sorted(dupes)[0]
        raise ManifestError(f"labels table {path}: image_id {first!r} has {dupes[first]} rows (one label a photo)")
    ids = table.column("image_id").to_pylist()
    labels = pc.cast(table.column(LABEL_COLUMN), pa.string()).to_pylist()
    return {str(i): lab for i, lab in zip(ids, labels, strict=True) if lab not in (None, "")}


class Labeler:
    """Labels of manifest rows, batch by batch, from ``label_from`` (the photo's folders) or ``labels`` (a
    table read with ``read_labels``); it counts the rows left unlabelled and the class names seen."""

    def __init__(self, label_from: str | None = None, labels: dict[str, str] | None = None) -> None:
        if label_from and labels is not None:
            raise ManifestError("give --label-from or --labels, not both")
        if label_from and label_from not in LABEL_SOURCES:
            raise ManifestError(f"--label-from {label_from!r}: choose one of {', '.join(LABEL_SOURCES)}")
        self.label_from, self.labels = label_from, labels
        self.unlabeled = 0
        self.names: set[str] = set()

    @property
    def active(self) -> bool:
        return bool(self.label_from) or self.labels is not None

    def __call__(self, ids: Sequence[str | None], paths: Sequence[str | None]) -> pa.Array:
        """The labels of rows with these ids and relative paths (``paths`` is what ``label_from`` reads)."""
        if self.label_from:
            out = [label_from_path(p, self.label_from) if p else None for p in paths]
        else:
            table = self.labels or {}
            out = [table.get(i) if i is not None else None for i in ids]
        self.unlabeled += sum(v is None for v in out)
        self.names.update(v for v in out if v is not None)
        return pa.array(out, pa.string())


__all__ = ["Labeler", "label_from_path", "read_labels"]
