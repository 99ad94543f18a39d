"""Hostile and unusual image bytes: every case decodes correctly or raises DecodeError with a reason."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.codec import decode_image, encode_image, probe, read_image, to_array, to_arrays, to_tensor
from pipeline.errors import DecodeError, InputError


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png(width: int, height: int, depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG written by hand, so the header can declare anything."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _gradient(w: int = 48, h: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 128)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_plain_rgb_roundtrip(fmt):
    arr = _gradient()
    kw = {"quality": 100} if fmt in ("JPEG", "WEBP") else {}
    out = decode_image(_save(Image.fromarray(arr), fmt, **kw))
    assert out.array.shape == (32, 48, 3) and out.array.dtype == np.uint8
    assert out.array.flags.writeable and out.array.flags.c_contiguous
    assert np.abs(out.array.astype(int) - arr).mean() < 3
    assert out.note == ""


def test_zero_bytes():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"")


def test_non_image_bytes():
    with pytest.raises(DecodeError, match="not an image"):
        decode_image(b"<html><body>404 not found</body></html>" * 10)


def test_unaccepted_format_is_refused():
    # EPS would make Pillow run Ghostscript; it must never get that far
    with pytest.raises(DecodeError, match="not an image"):
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b" " * 100)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt):
    data = _save(Image.fromarray(_gradient(96, 96)), fmt)
    with pytest.raises(DecodeError, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_garbage_after_valid_header():
    data = _save(Image.fromarray(_gradient()), "PNG")
    broken = data[:60] + bytes(range(256)) * 4
    with pytest.raises(DecodeError):
        decode_image(broken)


def test_bomb_declared_size_rejected_before_decoding():
    bomb = _png(100_000, 100_000, 8, 2, b"\x00" * 16)
    assert len(bomb) < 200
    t0 = time.perf_counter()
    with pytest.raises(DecodeError, match="too large"):
        decode_image(bomb)
    assert time.perf_counter() - t0 < 1.0


def test_max_pixels_checked_before_decoding():
    # 12000 x 8000 = 96 MP declared: above our default limit, below Pillow's hard error
    data = _png(12_000, 8_000, 8, 0, b"\x00")
    with pytest.raises(DecodeError, match=r"12000x8000 = 96000000 pixels > max_pixels"):
        decode_image(data)
    small = _save(Image.fromarray(_gradient(64, 64)), "PNG")
    with pytest.raises(DecodeError, match="max_pixels 1000"):
        decode_image(small, max_pixels=1000)
    assert decode_image(small, max_pixels=64 * 64).array.shape == (64, 64, 3)


def test_probe_reads_header_only():
    with pytest.raises(DecodeError, match="too large"):
        probe(_png(100_000, 100_000, 8, 2, b""))
    data = _save(Image.fromarray(_gradient(48, 32)), "JPEG")
    assert probe(data) == (48, 32, "jpeg")
    assert probe(data[:1024]) == (48, 32, "jpeg")
    assert probe(_save(Image.fromarray(_gradient(40, 30)), "PNG")[:64]) == (40, 30, "png")
    with pytest.raises(DecodeError):
        probe(b"not an image")


def test_cmyk_jpeg_and_tiff():
    patches = [(255, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 128), (100, 50, 0, 60)]
    img = Image.new("CMYK", (32, 8))
    for i, c in enumerate(patches):
        img.paste(c, (i * 8, 0, i * 8 + 8, 8))
    expected = np.array([[round((255 - v) * (255 - c[3]) / 255) for v in c[:3]] for c in patches])
    for fmt, tol in (("TIFF", 1), ("JPEG", 6)):
        kw = {"quality": 100} if fmt == "JPEG" else {}
        out = decode_image(_save(img, fmt, **kw))
        got = out.array[4, 4::8].astype(int)
        assert np.abs(got - expected).max() <= tol, (fmt, got, expected)
        assert "cmyk" in out.note


def test_16bit_grey_is_scaled_not_clipped():
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, axis=0)
    out = decode_image(_save(Image.fromarray(a), "PNG"))
    assert out.array[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out.array[..., 0] == out.array[..., 2]).all()
    assert "16-bit" in out.note


def test_16bit_rgb_png():
    a = np.zeros((4, 4, 3), dtype=">u2")
    a[..., 0], a[..., 1], a[..., 2] = 65535, 32896, 0
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(4))
    out = decode_image(_png(4, 4, 16, 2, raw))
    assert out.array[0, 0].tolist() == [255, 128, 0]


def test_rgba_composited_onto_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:, :4, 3] = 0  # ... fully transparent on the left
    rgba[:, 4:, 3] = 255
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.array[0, 0].tolist() == [255, 255, 255]
    assert out.array[0, 7].tolist() == [255, 0, 0]
    assert "white" in out.note


def test_half_alpha_blends():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 128  # black at 50%
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert abs(int(out.array[0, 0, 0]) - 127) <= 1


def test_palette_with_transparency():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 255] + [0, 255, 0] + [0, 0, 0] * 254)
    img.paste(1, (0, 0, 4, 8))
    data = _save(img, "PNG", transparency=0)  # index 0 (blue) is transparent
    out = decode_image(data)
    assert out.array[0, 0].tolist() == [0, 255, 0]
    assert out.array[0, 7].tolist() == [255, 255, 255]


def test_grey_and_bilevel():
    assert decode_image(_save(Image.new("L", (5, 5), 77), "PNG")).array[0, 0].tolist() == [77, 77, 77]
    assert decode_image(_save(Image.new("1", (5, 5), 1), "PNG")).array[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_honoured():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(_save(img, "JPEG", quality=100, exif=exif.tobytes()))
    assert out.array.shape == (40, 20, 3)
    # after a 90 degree clockwise turn the stored left half is at the top
    assert out.array[2, 10, 0] > 200 and out.array[-3, 10, 0] < 50
    assert "orientation 6" in out.note


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(data)
    assert out.note.startswith("animated: first of 3 frames")
    r, g, b = out.array[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_read_image_names_the_uri(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\x00" * 10)
    with pytest.raises(DecodeError, match="x.jpg"):
        read_image(str(p))
    with pytest.raises(DecodeError, match="not found"):
        read_image(str(tmp_path / "missing.jpg"))
    q = tmp_path / "ok.png"
    q.write_bytes(_save(Image.fromarray(_gradient()), "PNG"))
    assert read_image(str(q)).array.shape == (32, 48, 3)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_roundtrip(fmt):
    arr = _gradient()
    back = decode_image(encode_image(arr, fmt, quality=95)).array
    assert np.abs(back.astype(int) - arr).mean() < 3


def test_encode_rejects_bad_input():
    with pytest.raises(DecodeError, match="unsupported output format"):
        encode_image(_gradient(), "gif")
    with pytest.raises(InputError, match=r"\(32, 48\)"):
        encode_image(_gradient()[..., 0], "png")
    with pytest.raises(InputError, match="quality"):
        encode_image(_gradient(), "jpeg", quality=0)


def test_tensor_roundtrip_and_contracts():
    arr = _gradient()
    t = to_tensor(arr)
    assert t.shape == (1, 3, 32, 48) and t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    assert np.array_equal(to_array(t), arr)
    with pytest.raises(InputError, match="float32"):
        to_tensor(arr.astype(np.float32))
    with pytest.raises(InputError, match=r"\(2, 3, 4, 4\)"):
        to_array(torch.zeros(2, 3, 4, 4))


def test_raised_max_pixels_has_no_pillow_warning_and_still_fails_cleanly():
    import warnings

    data = _png(12_000, 8_000, 8, 0, b"\x00")  # above Pillow's warning size, with almost no pixel data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DecodeError, match="truncated|corrupt"):
            decode_image(data, max_pixels=100_000_000)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_to_arrays_rounds_a_batch_as_to_array_rounds_each_image() -> None:
    batch = torch.rand(3, 3, 5, 7) * 1.2 - 0.1  # values outside [0,1] clamp the same way
    arrays = to_arrays(batch)
    assert arrays.shape == (3, 5, 7, 3) and arrays.dtype == np.uint8
    for i in range(3):
        assert np.array_equal(arrays[i], to_array(batch[i]))


def _scene(w: int, h: int) -> np.ndarray:
    """A smooth photo-like scene (gradients and soft waves): what a reduced-scale decode must match."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    r, g, b = np.sin(x * 7 + y * 3), np.cos(y * 9 - x), (x * y * 4) % 1
    return (np.stack([r * 0.4 + 0.5, g * 0.4 + 0.5, b * 0.8 + 0.1], -1) * 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["rgb", "grey", "rotated"])
@pytest.mark.parametrize(("size", "max_side"), [((2047, 1533), 600), ((1999, 1333), 250), ((999, 4001), 333)])
def test_a_target_decodes_a_big_jpeg_at_reduced_scale_to_the_exact_size(monkeypatch, kind, size, max_side):
    from functools import partial

    from PIL import JpegImagePlugin

    from pipeline.imaging import fit, fit_size

    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, requested):
        out = draft(self, mode, requested)
        scales.append(self.decoderconfig[0] if out else 1)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    image = Image.fromarray(_scene(*size))
    exif = None
    if kind == "grey":
        image = image.convert("L")
    if kind == "rotated":  # stored sideways, with the tag that turns it upright
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
    data = _save(image, "JPEG", quality=92, **({"exif": exif} if exif else {}))
    whole = decode_image(data)
    fast = decode_image(data, target=partial(fit_size, max_side=max_side))
    expected = fit(whole.array, max_side)
    assert scales and scales[-1] >= 2  # decoded at 1/2, 1/4 or 1/8
    assert fast.array.shape == expected.shape and fast.array.dtype == np.uint8
    assert (fast.source_height, fast.source_width) == whole.array.shape[:2] == (size[1], size[0])
    assert fast.note == whole.note
    assert np.abs(fast.array.astype(int) - expected).mean() < 2.0  # the same picture, within JPEG's own noise


def test_a_target_the_photo_already_meets_decodes_it_whole():
    from functools import partial

    from pipeline.imaging import fit_size

    data = _save(Image.fromarray(_scene(517, 333)), "JPEG", quality=92)
    whole = decode_image(data)
    fast = decode_image(data, target=partial(fit_size, max_side=1024))
    assert np.array_equal(fast.array, whole.array) and fast.source_size is None
    png = decode_image(_save(Image.fromarray(_scene(517, 333)), "PNG"), target=partial(fit_size, max_side=100))
    assert png.array.shape == (64, 100, 3) and png.source_size == (333, 517)


def test_png_at_the_fast_level_is_lossless_and_uses_run_length_matching():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # a stylized output's fine texture
    texture[:, :48] = (30, 90, 200)  # and a flat area: runs still compress
    data = encode_image(texture, "png", png_level=1)
    assert np.array_equal(decode_image(data).array, texture)
    plain = _save(Image.fromarray(texture), "PNG", compress_level=1)
    rle = _save(Image.fromarray(texture), "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    assert data == rle != plain


@pytest.mark.parametrize(("shape", "size"), [((301, 457), (97, 148)), ((64, 48), (131, 99)), ((40, 40), (40, 17))])
def test_resize_array_is_the_one_resize_within_a_level(shape, size):
    """The uint8 path (fast) keeps the filter of ``imaging.resize`` (float): every value within 1."""
    from pipeline.imaging import resize, resize_array

    array = _scene(shape[1], shape[0])
    fast = resize_array(array, size)
    slow = to_array(resize(to_tensor(array), size))
    assert fast.shape == (*size, 3) and fast.dtype == np.uint8 and fast.flags.c_contiguous
    assert np.abs(fast.astype(int) - slow).max() <= 1
