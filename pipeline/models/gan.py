"""The GAN family's one wrapper: a one-style generator that works in [-1, 1] and ends in tanh.

``cyclegan`` and ``animegan`` differ only in their networks (and how their weights load); both keep the
stylizer contract the same way, here: content ``(B,3,H,W)`` in [0,1] goes in as ``2x - 1``, the tanh
output comes back as ``(y + 1) / 2``, and ``alpha`` blends the result with the photo in pixel space.
The style is in the weights, so the generator takes ``[Style()]``; region masks pick between styles,
which a one-style generator does not have.
"""

from __future__ import annotations

from torch import Tensor, nn

from pipeline.models.base import Style, Stylizer


class GeneratorStylizer(Stylizer):
    """Fixed-style generator: content (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1] (module doc)."""

    family = "gan"
    style_kind = "fixed"
    multiple = 4
    native_masks = False
    pixel_alpha = True  # alpha blends the output with the photo in pixel space
    # a reflection pad of 1 at quarter resolution needs 2 px: 8 px after padding to a multiple of 4
    min_px = 5

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        stylized = (self.net(content * 2 - 1) + 1) / 2
        return alpha * stylized + (1.0 - alpha) * content
