"""The size settings the model controls take: the style scale and the tile budget.

They belong to ``models.controls``, which applies them; they live in this torch-free module so the job
config, the driver and the CLI can check them without importing torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.errors import ConfigError

DEFAULT_TILE_PIXELS = 4_000_000  # feed-forward models tile larger images (jobs, `stylize image`, the controls)

# the longer side (px) at which strokes are painted: larger photos are stylized at this size and brought back
# to full size edge-aware (controls.stylize). The feed-forward networks were trained on 256 px crops; measured
# with ghiasi, the Gram style distance seen whole grows by 7% from a 512 px photo to 640, 13% to 768 and 20%
# to 1024 (docs/benchmarks.md), so 640 keeps a large photo's look within 10% of a 512 px one's
DEFAULT_STYLE_SCALE = 640
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
