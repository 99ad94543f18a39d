"""Style specs as users write them -> ``list[Style]``.

``starry.jpg`` · ``starry.jpg:0.7,wave.jpg:0.3`` · ``7`` · ``3:0.5,12:0.5``. A part that is an
integer is a built-in style index; anything else is an image path or URI. A trailing
``:number`` is its weight (default 1); weights are normalised later by the stylizer.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.codec import read_image, to_tensor
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.models.base import Style

_WEIGHT = re.compile(r"^(?P<src>.+?):(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


def split_spec(spec: str) -> list[tuple[str, float]]:
    """``"a.jpg:0.7,b.jpg:0.3"`` -> ``[("a.jpg", 0.7), ("b.jpg", 0.3)]``; no I/O."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ConfigError("empty style spec; give an image (starry.jpg), an index (7) or a mix (3:0.5,12:0.5)")
    out = []
    for part in parts:
        m = _WEIGHT.match(part)
        # "s3://bucket/x.jpg" has a colon too, but never followed by a bare number
        src, weight = (m.group("src"), float(m.group("w"))) if m else (part, 1.0)
        out.append((src, weight))
    return out


def parse_style_spec(spec: str, *, load_images: bool = True) -> list[Style]:
    """Parse a spec; image parts are read and decoded unless ``load_images`` is False."""
    from pipeline.models.base import Style  # torch: only here, so JobConfig's spec check stays light

    styles = []
    for src, weight in split_spec(spec):
        if src.isdigit():
            styles.append(Style(index=int(src), weight=weight, label=src))
        elif load_images:
            styles.append(Style(image=to_tensor(read_image(src).array), weight=weight, label=src))
        else:
            styles.append(Style(weight=weight, label=src))
    return styles


def assign_styles(
    image_ids: Sequence[str],
    config: Any,
    column: Sequence[Any] | None = None,
) -> list[str]:
    """The style spec of each row: per-row ``column`` values, else one sampled from ``config.style_manifest``
    (seeded per image id, so it depends on neither sharding nor reruns), else ``config.style``."""
    default = config.style
    if column is not None:
        return [str(v) if v not in (None, "") else str(default) for v in column]
    if config.style_manifest:
        pool = style_pool(config.style_manifest, config)
        out = []
        for image_id in image_ids:
            digest = hashlib.sha256(f"{config.style_seed}:{image_id}".encode()).digest()
            out.append(pool[random.Random(digest).randrange(len(pool))])
        return out
    if not default:
        raise ConfigError("no style: set style, style_column or style_manifest")
    return [str(default)] * len(image_ids)


_POOLS: dict[tuple[str, str], list[str]] = {}


def style_pool(path: str, config: Any) -> list[str]:
    """The specs a style manifest lists (read once per process)."""
    from pipeline.manifest import read_uri_list

    key = (path, repr(sorted((config.storage_options or {}).items())))
    if key not in _POOLS:
        pool = read_uri_list(path, config.storage_options or None, config.allowed_schemes)
        if not pool:
            raise ConfigError(f"style manifest {path} lists no styles")
        _POOLS[key] = pool
    return _POOLS[key]
