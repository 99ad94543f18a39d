"""An archive-like benchmark corpus, made here and seeded: what the speed figures are measured on.

A real archive is not a folder of 1 MP crops. ``make_corpus(folder, n)`` writes ``n`` JPEGs whose sizes
follow ``MIX``: the everyday sizes of cameras and the web (4:3 and 3:2 both ways, odd crops, a square
thumbnail, a tiny portrait), phone photos (12 MP both ways and 16:9), small thumbnails and a
panorama; about one in ten is greyscale and one in ten is stored sideways with an EXIF orientation tag
(so it must be turned on decode). Each is a random crop of one of several source photos (scikit-image's,
when installed; else a synthetic scene), scaled to its size. Same ``seed``, same files.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# (width, height, weight): relative frequencies, not a survey; every kind an archive holds appears
MIX: list[tuple[int, int, float]] = [
    (640, 480, 1.0),
    (480, 640, 1.0),
    (333, 517, 1.0),
    (1024, 683, 1.0),
    (256, 256, 1.0),
    (1200, 800, 1.0),
    (97, 203, 1.0),
    (4032, 3024, 0.4),
    (3024, 4032, 0.4),
    (4000, 2250, 0.3),
    (160, 120, 0.5),
    (6000, 1500, 0.15),
]
GREY_SHARE = 0.1
ROTATED_SHARE = 0.1
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry")


@dataclass(frozen=True)
class Spec:
    name: str
    width: int
    height: int
    grey: bool
    rotated: bool
    source: int


def specs(n: int, seed: int = 0) -> list[Spec]:
    """The corpus's files, drawn from ``MIX`` with ``seed``; the first ``len(MIX)`` cover every size once."""
    rng = np.random.default_rng(seed)
    weights = np.array([w for _, _, w in MIX])
    picks = list(range(min(n, len(MIX)))) + list(rng.choice(len(MIX), max(0, n - len(MIX)), p=weights / weights.sum()))
    out = []
    for i, k in enumerate(picks):
        w, h, _ = MIX[int(k)]
        out.append(Spec(f"photo-{i:05d}.jpg", w, h, rng.random() < GREY_SHARE, rng.random() < ROTATED_SHARE, i))
    return out


def _sources() -> Iterator[np.ndarray]:
    try:
        from skimage import data

        for name in SOURCES:
            img = getattr(data, name)()
            yield np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
    except ImportError:  # a synthetic scene: gradients, edges and texture
        ys, xs = np.mgrid[0:512, 0:768] / 512
        for k in range(3):
            scene = np.stack([np.sin(xs * (3 + k) + ys), np.cos(ys * (5 - k)), (xs * ys) % 0.3 * 3], -1)
            yield (np.clip(scene * 0.45 + 0.5, 0, 1) * 255).astype(np.uint8)


def render(spec: Spec, sources: list[np.ndarray], seed: int = 0) -> bytes:
    """One file's JPEG bytes: a random crop of a source photo with the spec's aspect ratio, scaled to its size."""
    rng = np.random.default_rng([seed, spec.source])
    src = sources[spec.source % len(sources)]
    sh, sw = src.shape[:2]
    aspect = spec.width / spec.height
    ch = int(min(sh, sw / aspect) * rng.uniform(0.6, 1.0))
    cw = max(1, min(sw, int(ch * aspect)))
    y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    image = Image.fromarray(src[y : y + ch, x : x + cw]).resize((spec.width, spec.height), Image.Resampling.BICUBIC)
    if spec.grey:
        image = image.convert("L")
    exif = None
    if spec.rotated:  # stored turned a quarter, with the tag that says so (Orientation 6: rotate 90 CW to view)
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def make_corpus(folder: str | Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` archive-like JPEGs into ``folder`` (made if missing); returns their paths in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = list(_sources())
    paths = []
    for spec in specs(n, seed):
        path = folder / f"s{seed}-{spec.name}"
        if not path.exists():
            path.write_bytes(render(spec, sources, seed))
        paths.append(path)
    return paths


def describe(n: int, seed: int = 0) -> dict[str, object]:
    """What ``make_corpus(n, seed)`` holds: counts per size, greyscale and rotated files, megapixels."""
    chosen = specs(n, seed)
    sizes: dict[str, int] = {}
    for s in chosen:
        sizes[f"{s.width}x{s.height}"] = sizes.get(f"{s.width}x{s.height}", 0) + 1
    return {
        "photos": n,
        "sizes": sizes,
        "grey": sum(s.grey for s in chosen),
        "rotated": sum(s.rotated for s in chosen),
        "megapixels": round(sum(s.width * s.height for s in chosen) / 1e6, 1),
    }
