"""A tiny, deterministic stylizer for tests of the controls and the pipeline.

``TintStylizer`` pulls each pixel halfway to the (weighted) mean colour of the style images:
per-pixel, so tiling must reproduce it exactly, and easy to reason about in colour tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.models.base import Style, Stylizer, normalized_weights


class TintStylizer(Stylizer):
    name = "test-tint"
    family = "test"
    style_kind = "image"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        weights = normalized_weights(styles)
        colour = sum(w * s.image_batch(content.device).mean((0, 2, 3)) for w, s in zip(weights, styles, strict=True))
        tinted = 0.5 * content + 0.5 * colour.view(1, 3, 1, 1)
        return alpha * tinted + (1 - alpha) * content


def solid(colour: tuple[float, float, float], size: int = 32) -> Tensor:
    return torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, size, size).clone()
