"""The report's pictures: small inline JPEG thumbnails of the shown rows' originals and outputs.

Sources are read with the *caller's* options (``source_options``): ``_SUCCESS`` stores the job's
``storage_options`` with secrets masked, so those are never used for credentials. What could not be read
is counted, with its first reason, so the page can say why thumbnails are missing.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pipeline.storage import ALLOWED_SCHEMES, read_source
from pipeline.writers import read_output

THUMB_SIDE = 160
THUMB_MAX_PIXELS = 64_000_000  # above this a thumbnail is not worth the decode; a placeholder is shown
MASKED = "***"  # what JobConfig.public_dict writes in place of a secret


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> str:
    """Encoded image bytes -> a ``data:`` URI of a small JPEG thumbnail ("" if undecodable or huge)."""
    import warnings

    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > THUMB_MAX_PIXELS:
                return ""
            img.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a fraction of the size
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
            img.thumbnail((side, side))
    except Exception:  # noqa: BLE001 - a missing or bad image gets a placeholder, never a crash
        return ""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def source_options(recorded: dict[str, Any] | None, given: dict[str, Any] | None) -> dict[str, Any] | None:
    """Options to read a job's sources with: what the job recorded minus its masked secrets (an endpoint, a
    region still help), then what the caller gives; credentials otherwise come from the caller's environment."""

    def unmasked(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: unmasked(v) for k, v in obj.items() if v != MASKED}
        return obj

    options = {**unmasked(recorded or {}), **(given or {})}
    return options or None


@dataclass
class Shown:
    """One ok row on the contact sheet (or among the worst), with its thumbnails."""

    index: int
    row: dict[str, Any]
    original: str = ""
    output: str = ""


@dataclass
class Unread:
    """Originals that could not be read for the shown rows, and the first reason."""

    count: int = 0
    first: str = ""


def read_thumbs(storage: Any, shown: list[Shown], allowed: list[str] | None, options: dict[str, Any] | None) -> Unread:
    """Fill in thumbnails, reading exactly one source and one output per shown row (in a few threads)."""
    allowed = allowed or sorted(ALLOWED_SCHEMES)

    def original(s: Shown) -> tuple[str, str]:
        try:
            return thumbnail(read_source(s.row["source_uri"] or "", allowed, options)), ""
        except Exception as exc:  # noqa: BLE001 - the source may be gone or refused now: a placeholder, counted
            return "", f"{type(exc).__name__}: {exc}"

    def output(s: Shown) -> str:
        try:
            return thumbnail(read_output(storage, s.row["output_uri"] or ""))  # a file, or a shard file's member
        except Exception:  # noqa: BLE001
            return ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        originals = list(pool.map(original, shown))
        outputs = list(pool.map(output, shown))
    unread = Unread()
    for s, (a, error), b in zip(shown, originals, outputs, strict=True):
        s.original, s.output = a, b
        if error:
            unread.count += 1
            unread.first = unread.first or error
    return unread
