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
    (seeded per image id, so it depends on neither sharding nor reruns), else ``config.style``. With
    ``styles_per_image`` K > 1 this is each photo's first style (k = 0): see ``assign_style_sets``."""
    return [specs[0] for specs in assign_style_sets(image_ids, config, column, count=1)]


def assign_style_sets(
    image_ids: Sequence[str],
    config: Any,
    column: Sequence[Any] | None = None,
    *,
    count: int | None = None,
) -> list[list[str]]:
    """The K style specs of each row (K = ``count``, default ``config.styles_per_image``), k = 0 .. K-1.

    From ``style_manifest``, the K styles of a photo are distinct and drawn from one stream seeded by
    ``(style_seed, image_id)`` alone: draw k = 0 is the draw one style per photo always made (so K = 1 keeps
    every earlier output's style), later draws skip styles the photo already has. The pool is the manifest's
    ``style_split`` part (``style_pool``). Without a style manifest K is 1 (``JobConfig`` checks it)."""
    count = int(count or getattr(config, "styles_per_image", 1) or 1)
    default = config.style
    if column is not None:
        return [[str(v) if v not in (None, "") else str(default)] for v in column]
    if config.style_manifest:
        pool = style_pool(config.style_manifest, config)
        return [[pool[j] for j in _draws(config.style_seed, image_id, len(pool), count)] for image_id in image_ids]
    if not default:
        raise ConfigError("no style: set style, style_column or style_manifest")
    return [[str(default)] for _ in image_ids]


def _draws(seed: int, image_id: str, size: int, count: int) -> list[int]:
    """``count`` distinct indices below ``size`` from the photo's own seeded stream (rejection of repeats)."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    rng = random.Random(digest)
    picks: list[int] = []
    while len(picks) < min(count, size):
        j = rng.randrange(size)
        if j not in picks:
            picks.append(j)
    return picks


# the hash split of a style pool without a `split` column: a fixed salt (not style_seed), so jobs with
# different seeds still see the same two disjoint parts; VAL_FRACTION of the styles are `val`, the rest `train`
SPLIT_SALT = "stylize-style-split-v1"
VAL_FRACTION = 0.10
HASH_SPLITS = ("train", "val")


def hash_split(uri: str) -> str:
    """``val`` for about ``VAL_FRACTION`` of style URIs (by a salted sha256 of the URI), else ``train``."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{uri}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") < VAL_FRACTION * 2**64 else "train"


_POOLS: dict[tuple[str, str, str | None], list[str]] = {}


def style_pool(path: str, config: Any) -> list[str]:
    """The specs a style manifest lists (read once per process), only ``config.style_split``'s part when set:
    the manifest's ``split`` column where it has one, else ``hash_split``. Fewer styles than
    ``styles_per_image`` is a ``ConfigError``."""
    split = getattr(config, "style_split", None)
    key = (path, repr(sorted((config.storage_options or {}).items())), split)
    if key not in _POOLS:
        from pipeline.manifest import read_uri_column

        opts = config.storage_options or None
        uris, splits = read_uri_column(path, opts, config.allowed_schemes, column="split")
        if not uris:
            raise ConfigError(f"style manifest {path} lists no styles")
        if split:
            if splits is None:
                if split not in HASH_SPLITS:
                    raise ConfigError(
                        f"style_split {split!r}: {path} has no split column, so its styles split by hash into "
                        f"{' and '.join(HASH_SPLITS)} only"
                    )
                splits = [hash_split(u) for u in uris]
            known = sorted({str(s) for s in splits if s is not None})
            uris = [u for u, s in zip(uris, splits, strict=True) if s == split]
            if not uris:
                raise ConfigError(f"style manifest {path} has no styles of split {split!r} (splits: {known})")
        _POOLS[key] = uris
    pool = _POOLS[key]
    wanted = int(getattr(config, "styles_per_image", 1) or 1)
    if len(pool) < wanted:
        part = f" (split {split!r})" if split else ""
        raise ConfigError(f"style manifest {path}{part} lists {len(pool)} styles, fewer than styles_per_image={wanted}")
    return pool
