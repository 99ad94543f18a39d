"""Bytes <-> RGB uint8 arrays <-> tensors. Pure functions, no I/O beyond ``read_image``.

Decoding is hardened against hostile or broken input: every failure is a ``DecodeError`` with a
reason (batch jobs record it per row and go on), never a crash or a runaway allocation.

What ``decode_image`` does to the pixels, in order:

* only common photo formats are parsed (``ACCEPTED_FORMATS``): Pillow's other plugins (EPS runs
  Ghostscript, for one) are never reached by untrusted bytes;
* the size declared in the header is checked against ``max_pixels`` *before* any pixel is decoded;
* animated GIF / WebP / APNG: the first frame, noted as ``"animated: first of N frames"``;
* EXIF orientation is applied (noted as ``"exif orientation N applied"``);
* CMYK: through the embedded ICC profile to sRGB when there is one, else the usual
  ``(255 - C) * (255 - K) / 255`` formula (Adobe's inverted CMYK JPEGs are undone by Pillow);
* 16-bit grey is scaled to 8 bits (``v / 257``, rounded), not clipped; 16-bit RGB(A) PNGs are
  already reduced to their high byte by Pillow;
* transparency (alpha channel or a palette's transparent index) is composited onto **white**:
  stylizers take RGB, and white is what a viewer shows behind a transparent photo on a page;
* with a ``target`` (the output size as a function of the upright photo's size, e.g. the max-side fit),
  a JPEG larger than it is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's ``draft``),
  never below the target, and then resized once to the target (``imaging.resize_array``): a 12 MP photo
  capped at 1024 px decodes about 4x faster (0.21 s whole), and its size is exactly what a whole decode
  and the same resize would give.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import DecodeError, InputError

if TYPE_CHECKING:  # torch is imported where tensors are made: manifest building and decoding never need it
    import torch

# "JPEG" also admits MPO, which many phone cameras write: Pillow's JPEG opener hands those out as MPO.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
DEFAULT_MAX_PIXELS = 90_000_000
_BACKGROUND = (255, 255, 255)
_DRAFTS = ("JPEG", "MPO")  # formats whose decoder scales down as it decodes (Pillow's draft)
_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that turn the photo a quarter: stored width is upright height
Target = Callable[[tuple[int, int]], tuple[int, int]]  # upright (H, W) -> the (H, W) the caller wants


@dataclass(frozen=True)
class Decoded:
    """An RGB image, (H,W,3) uint8, with a note on anything done to it (EXIF rotation, first frame...)."""

    array: np.ndarray
    note: str = ""
    source_size: tuple[int, int] | None = None  # (H, W) of the upright photo before a target resized it

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def source_width(self) -> int:
        return self.source_size[1] if self.source_size else self.width

    @property
    def source_height(self) -> int:
        return self.source_size[0] if self.source_size else self.height


_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _sniff(data: bytes) -> str | None:
    """The format a file claims by its magic bytes, to tell "truncated" from "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def _open(data: bytes) -> Image.Image:
    """Parse the header only (Pillow opens lazily); raises ``DecodeError``."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # our own max_pixels check is the limit; Pillow's warning would only duplicate it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image too large (decompression bomb?): {exc}") from None
    except Image.UnidentifiedImageError:
        sniffed = _sniff(data)
        if sniffed:
            raise DecodeError(f"truncated or corrupt {sniffed} header ({len(data)} bytes)") from None
        raise DecodeError(
            f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); {len(data)} bytes"
        ) from None
    except Exception as exc:  # Pillow plugins raise a zoo of types (SyntaxError, struct.error...) on bad headers
        raise DecodeError(f"unreadable image header: {type(exc).__name__}: {exc}") from None


def probe(data: bytes) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header alone, without decoding pixels.

    ``format`` is lower case (``"jpeg"``, ``"png"``...). Works on a prefix of the file for the
    common formats (the first 64 KiB is nearly always enough). Raises ``DecodeError``.
    """
    with _open(data) as img:
        return int(img.width), int(img.height), str(img.format).lower()


def _gray16_to_rgb(img: Image.Image) -> Image.Image:
    a = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        # float images carry no range; [0,1] is the common convention, anything larger is read as [0,255]
        scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        a8 = np.nan_to_num(a * scale).clip(0, 255)
    else:
        a8 = (a.clip(0, 65535) / 257.0).round()
    g = a8.astype(np.uint8)
    return Image.fromarray(np.stack([g, g, g], axis=-1))


def _cmyk_to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB"), "cmyk via icc profile"
        except Exception:  # a broken embedded profile is common enough; fall back to the formula
            pass
    return img.convert("RGB"), "cmyk converted"


def _to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Any Pillow mode -> RGB, see the module docstring for the rules."""
    mode = img.mode
    if mode == "RGB":
        return img, []
    if mode == "CMYK":
        rgb, note = _cmyk_to_rgb(img)
        return rgb, [note]
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray16_to_rgb(img), ["16-bit scaled to 8-bit"]
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB"), ["alpha composited onto white"]
    try:
        return img.convert("RGB"), []
    except ValueError:
        raise DecodeError(f"unsupported colour mode {mode!r}") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF is not worth failing the image for
        return 1


def _draft(img: Image.Image, size: tuple[int, int], orientation: int) -> None:
    """Let a JPEG decode at the smallest 1/2, 1/4 or 1/8 scale still at least ``size`` (upright H, W);
    other formats decode whole."""
    h, w = size
    stored = (h, w) if orientation in _SWAPPED else (w, h)  # draft takes the stored (W, H)
    if img.format in _DRAFTS and stored[0] < img.width and stored[1] < img.height:
        img.draft(img.mode, stored)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, target: Target | None = None) -> Decoded:
    """Decode image bytes to RGB uint8 (H,W,3); raises ``DecodeError`` with a reason.

    ``max_pixels`` bounds width*height as declared in the header, checked before decoding.
    Pillow's own hard limit (2 x ``Image.MAX_IMAGE_PIXELS``, ~179 MP) still applies above it.
    ``target`` maps the upright photo's (H, W) to the size wanted (``imaging.fit_size`` for a max side):
    the array comes back at exactly that size, decoded at a reduced scale where the format allows
    (module docstring), and ``source_size`` keeps the photo's own.
    """
    img = _open(data)
    try:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise DecodeError(f"image declares an empty size {w}x{h}")
        if w * h > max_pixels:
            raise DecodeError(f"image too large: {w}x{h} = {w * h} pixels > max_pixels {max_pixels}")
        notes = []
        n_frames = int(getattr(img, "n_frames", 1) or 1)
        if n_frames > 1:
            img.seek(0)
            # MPO's extra pictures are previews or stereo views, not animation
            kind = "multi-picture: first of {} images" if img.format == "MPO" else "animated: first of {} frames"
            notes.append(kind.format(n_frames))
        # a JPEG's EXIF is in its header; other formats may keep it after the pixels (read once loaded)
        orientation = _orientation(img) if img.format in _DRAFTS else None
        if target is not None and orientation is not None:
            upright = (w, h) if orientation in _SWAPPED else (h, w)
            _draft(img, tuple(target(upright)), orientation)  # type: ignore[arg-type]
        try:
            img.load()
        except Exception as exc:  # truncated data, corrupt streams: many exception types
            reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            raise DecodeError(f"{reason} {img.format} data: {type(exc).__name__}: {exc}") from None
        if orientation is None:
            orientation = _orientation(img)
        upright = (w, h) if orientation in _SWAPPED else (h, w)
        size = tuple(target(upright)) if target is not None else upright
        if orientation not in (0, 1):
            try:
                img = ImageOps.exif_transpose(img)
                notes.append(f"exif orientation {orientation} applied")
            except Exception:
                notes.append(f"exif orientation {orientation} ignored (unreadable)")
                upright = (h, w)  # the photo stays as stored, and so does its target's orientation
                size = tuple(target(upright)) if target is not None else upright
        try:
            rgb, mode_notes = _to_rgb(img)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot convert {img.mode} to RGB: {type(exc).__name__}: {exc}") from None
        notes.extend(mode_notes)
        array = np.array(rgb, dtype=np.uint8)  # a writable copy; asarray would give a read-only view
        if array.ndim != 3 or array.shape[2] != 3:
            raise DecodeError(f"decoded to unexpected shape {array.shape}")
        if tuple(array.shape[:2]) != size:
            from pipeline.imaging import resize_array  # torch: only where a target resizes

            array = resize_array(array, size)  # type: ignore[arg-type]
        return Decoded(array, "; ".join(notes), upright if size != upright else None)
    finally:
        img.close()


def read_image(
    path_or_uri: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, storage_options: dict | None = None
) -> Decoded:
    """Read and decode a local path or fsspec URI; raises ``DecodeError`` naming the URI.

    For trusted paths (style images, CLI arguments): no scheme allow-list here. Manifest rows
    go through ``storage.read_source`` (allow-listed) and ``decode_image`` instead.
    """
    from pipeline.storage import open_fs  # S3 endpoint options; storage never imports codec

    try:
        fs, path = open_fs(path_or_uri, storage_options)
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise DecodeError(f"file not found: {path_or_uri}") from None
    except IsADirectoryError:
        raise DecodeError(f"is a directory: {path_or_uri}") from None
    except Exception as exc:  # StorageError, OSError, botocore errors: all mean "could not read"
        raise DecodeError(f"cannot read {path_or_uri}: {type(exc).__name__}: {exc}") from None
    try:
        return decode_image(data, max_pixels=max_pixels)
    except DecodeError as exc:
        raise DecodeError(f"{path_or_uri}: {exc}") from None


PNG_LEVEL = 1  # zlib level: 4.6x faster than Pillow's default 6 on a stylized photo, 17% larger (bench/engines.py)
# at level 1, zlib's run-length strategy: on stylized outputs (fine texture, few long repeats) 17% smaller
# than level 1's default matching and about 6% faster to write (on photos, 5% smaller); runs of flat
# colour still compress (docs/benchmarks.md, session 8)
_PNG_FAST_STRATEGY = zlib.Z_RLE


def encode_image(array: np.ndarray, fmt: str = "jpeg", quality: int = 92, png_level: int = PNG_LEVEL) -> bytes:
    """(H,W,3) uint8 -> encoded bytes in ``fmt`` (jpeg, png or webp); ``png_level`` is PNG's zlib level."""
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(str(fmt).lower())
    if pil_fmt is None:
        raise DecodeError(f"unsupported output format {fmt!r}; use jpeg, png or webp")
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        shape = getattr(array, "shape", None)
        raise InputError(f"encode_image wants (H,W,3) uint8, got {shape} {getattr(array, 'dtype', type(array))}")
    if not 1 <= int(quality) <= 100:
        raise InputError(f"quality must be in 1..100, got {quality}")
    buf = io.BytesIO()
    kwargs: dict[str, int] = {"quality": int(quality)}
    if pil_fmt == "PNG":
        kwargs = {"compress_level": int(png_level)}
        if int(png_level) == 1:
            kwargs["compress_type"] = _PNG_FAST_STRATEGY
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format=pil_fmt, **kwargs)
    return buf.getvalue()


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (1,3,H,W) float32 in [0,1]."""
    import torch

    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"to_tensor wants (H,W,3) uint8, got {array.shape} {array.dtype}")
    if not array.flags.writeable:  # torch warns on read-only arrays even though .float() copies
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """(3,H,W) or (1,3,H,W) float in [0,1] -> (H,W,3) uint8."""
    import torch

    t = tensor.detach().float().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise InputError(f"to_array wants one image, got batch shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise InputError(f"to_array wants (3,H,W) or (1,3,H,W), got {tuple(tensor.shape)}")
    return (t.clamp(0, 1).mul(255).add(0.5).to(torch.uint8)).permute(1, 2, 0).numpy()


def to_arrays(batch: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) float in [0,1] -> (B,H,W,3) uint8, the same rounding as ``to_array`` in one pass."""
    import torch

    if batch.dim() != 4 or batch.shape[1] != 3:
        raise InputError(f"to_arrays wants (B,3,H,W), got {tuple(batch.shape)}")
    t = batch.detach().float().cpu()
    return t.clamp(0, 1).mul(255).add(0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
