"""The keys of a job's output: what the runner writes and the report, CLI and tools read.

```
OUTPUT/images/<image_id>[-<k>].<ext>  one per ok row, derived from the image id (and k when K > 1) only
OUTPUT/metrics/shard-NNNNN.parquet    one per shard of generation 0: its rows' metrics; the shard's commit marker
OUTPUT/metrics/shard-gGGGG-NNNNN.parquet  the same for generation G >= 1 (a rerun over a changed manifest)
OUTPUT/_attempts/shard-[gGGGG-]NNNNN.json  while a shard runs: its attempt count (gone after a clean run)
OUTPUT/videos/<image_id>.mp4          one per ok video row (segments joined, audio copied)
OUTPUT/_segments/row-NNNNNNNNN/       while a long video is cut: seg-NNNNN.mp4 + .json (its commit marker)
OUTPUT/_generations/gGGGG.json        a finished generation's metrics files with their image_id ranges
OUTPUT/_plan.json                     the shard plan, the manifest's fingerprint, the generation, pixel settings
OUTPUT/_SUCCESS                       the run summary, written last
```
"""

from __future__ import annotations

import re

from pipeline.storage import safe_key

IMAGES_PREFIX = "images"
VIDEOS_PREFIX = "videos"
SEGMENTS_PREFIX = "_segments"
METRICS_PREFIX = "metrics"
ATTEMPTS_PREFIX = "_attempts"
GENERATIONS_PREFIX = "_generations"
PLAN_KEY = "_plan.json"
SUCCESS_KEY = "_SUCCESS"
LOG_KEY = "_logs"
EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}


_SHARD_NAME = r"(?:^|/)shard-(?:g(\d+)-)?(\d+)"  # the one pattern of a shard's file name (generation, shard)
SHARD_FILE = re.compile(_SHARD_NAME + r"\.parquet$")
ATTEMPT_FILE = re.compile(_SHARD_NAME + r"\.json$")


def _shard_name(shard: int, generation: int) -> str:
    # generation 0 keeps the names outputs written before generations existed already have
    return f"shard-g{generation:04d}-{shard:05d}" if generation else f"shard-{shard:05d}"


def shard_key(shard: int, generation: int = 0) -> str:
    return f"{METRICS_PREFIX}/{_shard_name(shard, generation)}.parquet"


def parse_shard_key(key: str, pattern: re.Pattern[str] = SHARD_FILE) -> tuple[int, int] | None:
    """``(generation, shard)`` of a metrics file's key (or an attempt marker's, with ``ATTEMPT_FILE``), or None."""
    m = pattern.search(str(key))
    return (int(m.group(1) or 0), int(m.group(2))) if m else None


def index_key(generation: int) -> str:
    return f"{GENERATIONS_PREFIX}/g{generation:04d}.json"


def attempt_key(shard: int, generation: int = 0) -> str:
    return f"{ATTEMPTS_PREFIX}/{_shard_name(shard, generation)}.json"


def output_key(image_id: str, fmt: str, *, k: int | None = None) -> str:
    """``images/<safe id>.<ext>``: derived from the image id only, so reruns overwrite, never duplicate.
    ``k`` (which of a photo's K styles; None when K = 1) goes before the extension: ``<id>-<k>.<ext>``."""
    ext = EXTENSIONS.get(str(fmt).lower(), str(fmt).lower())
    suffix = f"-{int(k)}" if k is not None else ""
    return safe_key(IMAGES_PREFIX, f"{image_id}{suffix}.{ext}")


def video_key(image_id: str) -> str:
    """``videos/<safe id>.mp4``: like ``output_key``, derived from the id only."""
    return safe_key(VIDEOS_PREFIX, f"{image_id}.mp4")


def segment_prefix(row: int) -> str:
    """A long video's segments, keyed by manifest row: the driver plans them without reading ids."""
    return f"{SEGMENTS_PREFIX}/row-{row:09d}/"


def segment_key(row: int, segment: int, ext: str) -> str:
    """``seg-NNNNN.mp4`` (the video), ``.json`` (its commit marker: stats or error), ``.claim`` (in progress)."""
    return f"{segment_prefix(row)}seg-{segment:05d}.{ext}"


def relative_key(root_uri: str, uri: str) -> str:
    """The key of ``uri`` under the output ``root_uri`` (rows record outputs as full URIs)."""
    root = root_uri.rstrip("/")
    return uri[len(root) :].lstrip("/") if uri.startswith(root) else uri
