"""Image ids: stable, storage-safe keys derived from a path relative to the source root."""

from __future__ import annotations

import hashlib
import re

from fsspec.core import split_protocol

_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SEGMENT = 120
_MAX_ID = 600  # leaves room under S3's 1024-byte keys for an output prefix and suffix


def make_image_id(rel_path: str) -> str:
    """A stable, storage-safe id for a path relative to the source root.

    Safe paths are kept as they are (``2020/trip/IMG_0001.JPG``). Otherwise every character
    outside ``[A-Za-z0-9._-]`` becomes ``_``, ``.``/``..``/empty segments become ``_``, long
    segments are cut, and ``~`` plus 8 hex digits of the SHA-1 of the original path is appended
    (``2020/my photo.jpg`` -> ``2020/my_photo.jpg~3f2a...``). ``~`` never survives the cleaning,
    so a changed id can never equal an unchanged one.
    """
    original = str(rel_path)
    segments = original.split("/")
    cleaned = []
    for seg in segments:
        new = _ID_CHARS.sub("_", seg)
        if new in ("", ".", ".."):
            new = "_"
        cleaned.append(new[:_MAX_SEGMENT])
    # keep the most specific part (the file name) when the whole path is too long
    while len(cleaned) > 1 and len("/".join(cleaned)) > _MAX_ID:
        cleaned.pop(0)
    image_id = "/".join(cleaned)
    if image_id != original:
        digest = hashlib.sha1(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        image_id = f"{image_id}~{digest}"
    return image_id


def id_from_uri(uri: str) -> str:
    """``make_image_id`` of the URI's path without scheme (``s3://b/a/x.jpg`` -> ``b/a/x.jpg``)."""
    _, path = split_protocol(str(uri).split("::")[-1])
    return make_image_id(path.lstrip("/"))
