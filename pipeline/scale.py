"""The size settings the model controls take: the style scale and the tile budget.

They belong to ``models.controls``, which applies them; they live in this torch-free module so the job
config, the driver and the CLI can check them without importing torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.errors import ConfigError

DEFAULT_TILE_PIXELS = 4_000_000  # feed-forward models tile larger images (jobs, `stylize image`, the controls)

# the longer side (px) at which strokes are painted: larger photos are stylized at this size and brought back
# to full size edge-aware (controls.stylize). A feed-forward network's look, seen whole, depends on the size
# it runs at (its strokes are fixed in pixels), so a large photo looks like a 512 px photo only if it is
# painted at 512 px too. Measured with ghiasi over 3 photos x 5 paintings (docs/benchmarks.md, "Style
# scale", session 8): a 640 px working size moves the Gram style distance by -3% to +40% from the 512 px
# photo's (udnie and Composition VII +25% to +40% on every photo, the likely source of issue #20's 16%), a
# 512 px working size by under 1%. The networks were trained on 256 px crops; 512 keeps their look.
DEFAULT_STYLE_SCALE = 512
STYLE_SCALE_RANGE = (64, 32768)
STYLE_SCALE_HELP = f"'native' or a longer side of {STYLE_SCALE_RANGE[0]} to {STYLE_SCALE_RANGE[1]} px"
StyleScale = int | Literal["native"]


def parse_style_scale(value: Any) -> StyleScale:
    """A style scale from a job key, a CLI option or a caller: a number of px (``1024``, ``"1024"``) or
    ``"native"`` (stylize at the photo's own size: strokes fixed in pixels). ``ConfigError`` otherwise."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text == "native":
        return "native"
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    lo, hi = STYLE_SCALE_RANGE
    if isinstance(text, bool) or not isinstance(text, int) or not lo <= text <= hi:
        raise ConfigError(f"style_scale must be {STYLE_SCALE_HELP}, got {value!r}")
    return text
