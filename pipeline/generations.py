"""Generations of one output: which metrics files belong to which run over which manifest, and which
job settings a generation's pixels depend on.

Generation 0 is the first run over an output; a rerun over a changed manifest (or with
``rerun=failed|all`` after a finished run) starts the next one, whose shards are cut over the new
manifest and whose metrics files carry the generation in their names (``layout.shard_key``).
"""

from __future__ import annotations

from typing import Any

from pipeline import layout
from pipeline.storage import Storage

# the job keys that decide an output's pixels: results made under other values are not reused
PIXEL_SETTINGS = (
    "stylizer",
    "weights",
    "encoder_weights",
    "style",
    "style_column",
    "style_manifest",
    "style_seed",
    "styles_per_image",
    "style_split",
    "alpha",
    "preserve_color",
    "max_side",
    "resize_shorter",
    "center_crop",
    "style_scale",
    "tile_pixels",
    "mask_column",
    "mask_style",
    "format",
    "quality",
    "png_level",
    "output_format",
    "consistency",
    "blend",
    "video_codec",
    "video_crf",
    "video_pix_fmt",
)


def pixel_settings(config: Any) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    return {key: data[key] for key in PIXEL_SETTINGS}


def changed_setting(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first pixel setting recorded in ``old`` that ``new`` changes, or None."""
    for key in PIXEL_SETTINGS:
        if key in old and old[key] != new.get(key):
            return key
    return None


def listing(storage: Storage) -> dict[int, dict[int, str]]:
    """``{generation: {shard: key}}`` of the committed metrics files, from one listing of ``metrics/``."""
    found: dict[int, dict[int, str]] = {}
    for key in storage.list(layout.METRICS_PREFIX + "/"):
        parsed = layout.parse_shard_key(key)
        if parsed:
            found.setdefault(parsed[0], {})[parsed[1]] = key
    return found
