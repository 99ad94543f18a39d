"""Bytes <-> RGB uint8 arrays <-> tensors. Pure functions, no I/O beyond ``read_image``.

(Minimal first version: the batch-pipeline work hardens decoding against hostile input.)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from pipeline.errors import DecodeError


@dataclass(frozen=True)
class Decoded:
    """An RGB image, (H,W,3) uint8, with a note on anything done to it (EXIF rotation, first frame...)."""

    array: np.ndarray
    note: str = ""

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])


def decode_image(data: bytes) -> Decoded:
    """Decode image bytes to RGB uint8, honouring EXIF orientation; raises ``DecodeError``."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            return Decoded(np.asarray(img.convert("RGB")))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"not a readable image: {exc}") from None


def read_image(path_or_uri: str) -> Decoded:
    """Read and decode a local path or fsspec URI."""
    import fsspec

    try:
        with fsspec.open(path_or_uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DecodeError(f"file not found: {path_or_uri}") from None
    except OSError as exc:
        raise DecodeError(f"cannot read {path_or_uri}: {exc}") from None
    try:
        return decode_image(data)
    except DecodeError as exc:
        raise DecodeError(f"{path_or_uri}: {exc}") from None


def encode_image(array: np.ndarray, fmt: str = "jpeg", quality: int = 92) -> bytes:
    """(H,W,3) uint8 -> encoded bytes in ``fmt`` (jpeg, png or webp)."""
    buf = io.BytesIO()
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(fmt.lower())
    if pil_fmt is None:
        raise DecodeError(f"unsupported output format {fmt!r}; use jpeg, png or webp")
    kwargs = {"quality": quality} if pil_fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(array).save(buf, format=pil_fmt, **kwargs)
    return buf.getvalue()


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(3,H,W) or (1,3,H,W) float in [0,1] -> (H,W,3) uint8."""
    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        t = t[0]
    return (t.clamp(0, 1).mul(255).add(0.5).to(torch.uint8)).permute(1, 2, 0).numpy()
