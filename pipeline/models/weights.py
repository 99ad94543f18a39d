"""Reading checkpoints safely from a path or URI.

Only two formats are accepted: safetensors, and ``.pth`` read with ``weights_only=True``
(pickle can run code, tensors cannot). Remote URIs (``s3://``, ``gs://`` and anything
fsspec knows) are copied once into the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from pipeline.errors import WeightsError

# .model and .pth.tar are what pytorch/examples and pytorch-AdaIN training scripts save
SAFE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".model", ".tar")
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit on the JSON header


SHA256_SUFFIX = ".sha256"  # beside a fetched file: the digest it had when it was fetched


def cache_dir() -> Path:
    """``$STYLIZE_CACHE`` or the platform's user cache folder + ``stylize``; created on first use."""
    import platformdirs

    root = Path(os.environ.get("STYLIZE_CACHE") or platformdirs.user_cache_dir("stylize")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def recorded_sha256(path: Path) -> str | None:
    """The digest recorded beside ``path`` when it was fetched (``<file>.sha256``), or None."""
    sidecar = path.with_name(path.name + SHA256_SUFFIX)
    return sidecar.read_text().strip().lower() if sidecar.is_file() else None


def check_recorded(path: Path) -> None:
    """Refuse ``path`` if it no longer has the sha256 recorded beside it when it was fetched."""
    recorded = recorded_sha256(path)
    if recorded and sha256_of(path) != recorded:
        raise WeightsError(
            f"{path} changed since it was fetched (its sha256 differs from {path.name}{SHA256_SUFFIX}); "
            "fetch it again with `stylize models fetch` (or `stylize models import`)"
        )


def cache_availability(folder: str, file: str, help_text: str) -> tuple[bool, str]:
    """(present?, where) for one published file in ``cache_dir()/<folder>``; ``help_text`` when absent."""
    path = cache_dir() / folder / file
    return (True, str(path)) if path.is_file() else (False, help_text)


def split_sha256(uri: str) -> tuple[str, str | None]:
    """``path#sha256=HEX`` -> (path, HEX); a bare path -> (path, None)."""
    if "#sha256=" in uri:
        path, digest = uri.split("#sha256=", 1)
        return path, digest.lower()
    return uri, None


def local_path(uri: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local file for ``uri``, copying remote objects into the cache first (once per URI).

    ``storage_options`` are the job's (credentials, endpoint); a later call without them finds the copy.
    """
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" not in uri:
        path = Path(uri).expanduser()
        if not path.exists():
            raise WeightsError(f"weights file not found: {path}")
        return path
    from pipeline.storage import open_fs

    target = cache_dir() / "remote" / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(uri).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs, path = open_fs(uri, storage_options)
            with fs.open(path, "rb") as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except Exception as exc:  # noqa: BLE001 - any backend error becomes one message
            raise WeightsError(f"cannot fetch weights {uri}: {exc}") from exc
        target.with_suffix(".part").replace(target)
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(uri: str, *, sha256: str | None = None) -> dict[str, Tensor]:
    """Load a flat ``{name: tensor}`` dict from safetensors or a weights-only ``.pth``.

    ``uri`` may end in ``#sha256=HEX``; that digest (or ``sha256``) is verified first.
    """
    uri, digest = split_sha256(uri)
    digest = sha256 or digest
    path = local_path(uri)
    if path.is_dir():
        raise WeightsError(f"expected a weights file, got a directory: {path}")
    if digest and sha256_of(path) != digest:
        raise WeightsError(f"sha256 mismatch for {path}: expected {digest}")
    if not digest:
        check_recorded(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"cannot read safetensors {path}: {exc}") from exc
    if path.suffix not in SAFE_SUFFIXES:
        raise WeightsError(f"unsupported weights format {path.suffix!r} ({path}); use .safetensors or .pth")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - includes the unpickler refusing code
        raise WeightsError(f"cannot read {path} as a weights-only checkpoint: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} is not a state dict of tensors")
    return dict(obj)


def read_header(f: BinaryIO) -> dict[str, str] | None:
    """The ``__metadata__`` of the safetensors file open in ``f`` (at its start); None if it is not one.

    The one safetensors header reader: it reads only the 8-byte length and the JSON header, never the
    tensors, so listing a bucket of checkpoints (``pipeline.checkpoints``) stays cheap.
    """
    head = f.read(8)
    if len(head) < 8:
        return None
    n = int.from_bytes(head, "little")
    if n <= 0 or n > MAX_HEADER_BYTES:
        return None
    raw = f.read(n)
    try:
        header = json.loads(raw) if len(raw) == n else None
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def read_metadata(uri: str) -> dict[str, str]:
    """The safetensors header metadata of ``uri`` ({} for other formats); raises ``WeightsError``."""
    path = local_path(split_sha256(uri)[0])
    if path.suffix != ".safetensors":
        return {}
    try:
        with open(path, "rb") as f:
            meta = read_header(f)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from None
    if meta is None:
        raise WeightsError(f"{path} is not a safetensors file (no readable header)")
    return meta


def load_into(module: torch.nn.Module, state: dict[str, Tensor], *, what: str, partial: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatches.

    ``partial`` allows ``state`` to cover only some of the module's tensors (a warm start).
    """
    own = module.state_dict()
    missing = [] if partial else [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise WeightsError(f"{what} weights do not fit: " + "; ".join(parts))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=not partial)
