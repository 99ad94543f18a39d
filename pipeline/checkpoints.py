"""Find trained stylizer checkpoints under a prefix by their safetensors metadata.

Only the header of each ``.safetensors`` object is read (8 bytes of length, then the JSON
header), so listing a bucket of large checkpoints stays cheap. Files without a ``stylizer``
key in their metadata (optimizer state, foreign weights) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import StorageError
from pipeline.models.weights import read_header
from pipeline.storage import open_fs


@dataclass(frozen=True)
class Found:
    """One checkpoint: its URI, family, training step and style (image URI or style manifest)."""

    uri: str
    stylizer: str
    step: int
    style: str
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


def _metadata(fs: Any, path: str) -> dict[str, str] | None:
    """The header metadata of one listed file, or None if it is not a readable safetensors file."""
    try:
        with fs.open(path, "rb") as f:
            return read_header(f)
    except OSError:
        return None


def _join(prefix: str, root: str, path: str) -> str:
    """Rebuild a URI in the form the prefix was given (fsspec paths drop the scheme)."""
    rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
    return f"{prefix.rstrip('/')}/{rel}" if rel else prefix


def find_checkpoints(prefix: str) -> list[Found]:
    """Every trained checkpoint under ``prefix`` (a folder or URI, searched recursively, or one file).

    Sorted by stylizer, style, then step. Raises ``StorageError`` if the prefix cannot be listed.
    """
    fs, root = open_fs(prefix)
    try:
        if fs.isfile(root):
            paths, base, shown = [root], root, prefix
        else:
            paths = [p for p in fs.find(root) if p.endswith(".safetensors")]
            base, shown = root.rstrip("/"), prefix
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot list {prefix}: {type(exc).__name__}: {exc}") from None
    found = []
    for path in sorted(paths):
        meta = _metadata(fs, path)
        if not meta or not meta.get("stylizer"):
            continue
        try:
            step = int(meta.get("step", "0"))
        except ValueError:
            step = 0
        uri = shown if path == base and fs.isfile(root) else _join(shown, base, path)
        style = meta.get("style") or meta.get("style_manifest") or ""
        found.append(Found(uri=uri, stylizer=meta["stylizer"], step=step, style=style, metadata=meta))
    return sorted(found, key=lambda f: (f.stylizer, f.style, f.step, f.uri))
