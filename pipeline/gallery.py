"""Pictures for the docs: per-family contact sheets and a sheet of the runtime controls.

Everything here is made by the library itself (the README's pictures come from this), so a
regression in a family shows up as a picture that changed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline import imaging
from pipeline.codec import read_image, to_array, to_tensor
from pipeline.models import controls, create, get_card
from pipeline.models.base import Style
from pipeline.sheet import Tile, contact_sheet

DEFAULT_INDICES = (0, 6, 13, 19, 25)


def load_image(path: str, max_side: int) -> torch.Tensor:
    """An image file as (1,3,H,W) in [0,1], downscaled so its longer side is at most ``max_side``."""
    return imaging.resize_max_side(to_tensor(read_image(path).array), max_side)


def family_sheet(
    name: str,
    contents: list[str],
    styles: list[str],
    *,
    max_side: int = 384,
    weights: str | None = None,
    indices: tuple[int, ...] = DEFAULT_INDICES,
    device: str = "cpu",
    **options: object,
) -> np.ndarray:
    """Rows: one per content image; columns: the content, then one output per style."""
    card = get_card(name)
    model = create(name, weights=weights, device=device, **options)
    if card.style_kind == "index":
        columns = [(f"style {i}", Style(index=i), None) for i in indices]
    elif card.style_kind == "fixed":
        columns = [(Path(weights or name).stem, Style(), None)]
    else:
        columns = [(Path(s).stem, Style(image=load_image(s, 256)), load_image(s, 256)) for s in styles]
    rows: list[list[Tile]] = []
    if card.style_kind == "image":
        rows.append([("style:", np.full((8, 8, 3), 255, np.uint8))] + [(c[0], to_array(c[2])) for c in columns])
    for path in contents:
        content = load_image(path, max_side)
        row: list[Tile] = [(Path(path).stem, to_array(content))]
        for label, style, _ in columns:
            row.append((label, to_array(controls.stylize(model, content, [style]))))
        rows.append(row)
    return np.asarray(contact_sheet(rows))


def controls_sheet(
    name: str, content_path: str, style_a: Style, style_b: Style, *, max_side: int = 320, device: str = "cpu"
) -> np.ndarray:
    """One content through the controls: alpha sweep, a two-style mix, a left/right mask, colour preservation."""
    model = create(name, device=device)
    content = load_image(content_path, max_side)

    def run(styles: list[Style], **kw: object) -> np.ndarray:
        return to_array(controls.stylize(model, content, styles, **kw))  # type: ignore[arg-type]

    h, w = content.shape[-2:]
    masks = torch.zeros(1, 2, h, w)
    masks[:, 0, :, : w // 2], masks[:, 1, :, w // 2 :] = 1, 1
    a, b = [style_a], [style_b]
    rows: list[list[Tile]] = [
        [("content", to_array(content))] + [(f"alpha {x}", run(a, alpha=x)) for x in (0.25, 0.5, 0.75, 1.0)],
        [
            ("style A", run(a)),
            (
                "A 0.5 + B 0.5",
                run([replace(style_a, weight=0.5), replace(style_b, weight=0.5)]),
            ),
            ("style B", run(b)),
            ("mask: A | B", run([style_a, style_b], masks=masks)),
        ],
        [
            ("A", run(a)),
            ("A, luminance", run(a, preserve_color="luminance")),
            ("A, histogram", run(a, preserve_color="histogram")),
        ],
    ]
    return np.asarray(contact_sheet(rows))
