"""A deliberately unstable stylizer for the video tests, registered on import
(``STYLIZE_PLUGINS=tests.pipeline_fakes,tests.video_fakes`` for Ray workers).

``test-flicker``: a fixed tone curve plus, per frame, a random brightness offset and per-pixel noise,
both seeded by a hash of the frame's own pixels. It flickers like a real per-frame network (outputs
jump between similar frames) yet is a pure function of its input, so a segmented pass and an
unsegmented one see the same per-frame stylizations.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from pipeline.errors import ModelNotFound
from pipeline.models.base import Style, Stylizer
from pipeline.models.registry import ModelCard, get_card, register

PLUGIN = "tests.video_fakes"
BRIGHTNESS = 0.12  # offsets drawn from U(-B, B)
NOISE = 0.03  # per-pixel std


class FlickerStylizer(Stylizer):
    name = "test-flicker"
    family = "test"
    style_kind = "index"
    frames = 0  # frames stylized in this process (the resume test counts them)

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        out = []
        type(self).frames += content.shape[0]
        for img in content:
            digest = hashlib.sha1((img * 255).round().to(torch.uint8).cpu().numpy().tobytes()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            offset = (torch.rand(1, generator=gen).item() * 2 - 1) * BRIGHTNESS
            noise = torch.randn(img.shape, generator=gen) * NOISE
            styled = 0.8 * (1 - img) + 0.1 + offset + noise.to(img)
            out.append(alpha * styled + (1 - alpha) * img)
        return torch.stack(out)


try:
    get_card(FlickerStylizer.name)
except ModelNotFound:
    register(
        ModelCard(
            stylizer=FlickerStylizer, paper="test double", preprocessing="none", factory=lambda **_: FlickerStylizer()
        )
    )
