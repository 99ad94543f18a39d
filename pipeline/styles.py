"""Style specs as users write them -> ``list[Style]``.

``starry.jpg`` · ``starry.jpg:0.7,wave.jpg:0.3`` · ``7`` · ``3:0.5,12:0.5``. A part that is an
integer is a built-in style index; anything else is an image path or URI. A trailing
``:number`` is its weight (default 1); weights are normalised later by the stylizer.
"""

from __future__ import annotations

import re

from pipeline.codec import read_image, to_tensor
from pipeline.errors import ConfigError
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
    styles = []
    for src, weight in split_spec(spec):
        if src.isdigit():
            styles.append(Style(index=int(src), weight=weight, label=src))
        elif load_images:
            styles.append(Style(image=to_tensor(read_image(src).array), weight=weight, label=src))
        else:
            styles.append(Style(weight=weight, label=src))
    return styles
