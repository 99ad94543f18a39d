"""Contact sheets: a labelled grid of images, for the README gallery and reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

Tile = tuple[str, np.ndarray]


def thumbnail(array: np.ndarray, height: int) -> Image.Image:
    """(H,W,3) uint8 -> a PIL image ``height`` px tall, aspect kept."""
    img = Image.fromarray(array)
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.LANCZOS)


def contact_sheet(rows: Sequence[Sequence[Tile]], *, height: int = 192, pad: int = 6, label: int = 16) -> Image.Image:
    """Lay out rows of (label, image) tiles; each row as wide as its tiles, labels above them."""
    rendered = [[(text, thumbnail(arr, height)) for text, arr in row] for row in rows]
    width = max(sum(t.width + pad for _, t in row) + pad for row in rendered)
    sheet = Image.new("RGB", (width, len(rendered) * (height + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rendered):
        x, y = pad, pad + r * (height + label + pad)
        for text, tile in row:
            draw.text((x + 2, y + 2), text, fill="black")
            sheet.paste(tile, (x, y + label))
            x += tile.width + pad
    return sheet
