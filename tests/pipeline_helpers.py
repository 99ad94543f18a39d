"""Small real images, hostile inputs and manifests for the batch-pipeline tests (all made here)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CONFIG_DEFAULTS: dict[str, Any] = {
    "stylizer": "test-invert",
    "style": "1",
    "style_column": None,
    "style_manifest": None,
    "style_seed": 0,
    "alpha": 1.0,
    "preserve_color": "none",
    "max_side": None,
    "encoder_weights": None,
    "weights": None,
    "format": "png",
    "quality": 90,
    "batch_size": 4,
    "actors": 1,
    "gpus_per_actor": 0,
    "cpus_per_actor": 1,
    "device": "cpu",
    "metrics": False,
    "max_retries": 2,
    "allowed_schemes": None,
    "storage_options": None,
    "seed": 0,
}


def job_config(manifest: str | Path, output: str | Path, **overrides: Any) -> Any:
    """A ``JobConfig`` for tests: the test defaults above, then ``overrides`` (None means the key's default)."""
    from pipeline.config import JobConfig

    fields = {**CONFIG_DEFAULTS, "manifest": str(manifest), "output": str(output), **overrides}
    return JobConfig(**{k: v for k, v in fields.items() if v is not None})


def photo(size: tuple[int, int] = (48, 32), seed: int = 0) -> np.ndarray:
    """A smooth colourful (H,W,3) uint8 image; ``size`` is (W, H)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    chans = [127 + 120 * np.sin(x / (5 + 3 * c) + y / (7 + c) + phase[c]) for c in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def magenta(size: tuple[int, int] = (32, 32)) -> bytes:
    """The input that kills ``test-crashy``."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[..., 0] = arr[..., 2] = 255
    return encode(arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 60_000) -> bytes:
    """A PNG whose header claims side x side pixels of 1-bit grey, with almost no data (a few hundred bytes)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bad_corpus() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected status)."""
    base = photo((40, 30), seed=3)
    jpeg = encode(base, "JPEG", quality=90)
    cmyk = io.BytesIO()
    Image.fromarray(base).convert("CMYK").save(cmyk, format="JPEG")
    gray16 = io.BytesIO()
    Image.fromarray(base[..., 0].astype(np.uint16) * 257).save(gray16, format="PNG")
    pal = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    palette = io.BytesIO()
    pal.save(palette, format="PNG", transparency=0)
    frames = [Image.fromarray(photo((24, 24), seed=s)) for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "zero-byte": (b"", "failed"),
        "truncated": (jpeg[: len(jpeg) // 2], "failed"),
        "not-an-image": (b"hello, I am a text file\n" * 20, "failed"),
        "bomb": (bomb_png(), "failed"),
        "cmyk": (cmyk.getvalue(), "ok"),
        "gray16": (gray16.getvalue(), "ok"),
        "palette-alpha": (palette.getvalue(), "ok"),
        "animated": (gif.getvalue(), "ok"),
        "good": (jpeg, "ok"),
    }


def write_inputs(folder: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Write ``{image_id: bytes}`` into ``folder``; returns ``{image_id: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for image_id, data in files.items():
        path = folder / f"{image_id}.bin"
        path.write_bytes(data)
        out[image_id] = str(path)
    return out


def write_manifest(path: Path, rows: list[tuple[str, str]], **extra: list[Any]) -> Path:
    """A manifest Parquet with image_id, uri, size_bytes (+ extra columns)."""
    sizes = []
    for _, uri in rows:
        p = Path(uri)
        sizes.append(p.stat().st_size if "://" not in uri and p.exists() else 0)
    table = pa.table(
        {
            "image_id": [r[0] for r in rows],
            "uri": [r[1] for r in rows],
            "size_bytes": pa.array(sizes, pa.int64()),
            **extra,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
