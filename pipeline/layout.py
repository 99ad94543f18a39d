"""The keys of a job's output: what the runner writes and the report, CLI and tools read.

```
OUTPUT/images/<image id's stem>[-k].<ext>  output_format files: the source tree mirrored, one per ok row
OUTPUT/shards/shard-[gGGGG-]NNNNN.tar     output_format webdataset: a shard's samples, written before its metrics
OUTPUT/shards/shard-[gGGGG-]NNNNN.parquet output_format parquet: the same as one Parquet file
OUTPUT/metrics/shard-NNNNN.parquet    one per shard of generation 0: its rows' metrics; the shard's commit marker
OUTPUT/metrics/shard-gGGGG-NNNNN.parquet  the same for generation G >= 1 (a rerun over a changed manifest)
OUTPUT/_attempts/shard-[gGGGG-]NNNNN.json  while a shard runs: its attempt count (gone after a clean run)
OUTPUT/videos/<image_id>.mp4          one per ok video row (segments joined, audio copied)
OUTPUT/_segments/row-NNNNNNNNN/       while a long video is cut: seg-NNNNN.mp4 + .json (its commit marker)
OUTPUT/_generations/gGGGG.json        a finished generation's metrics files with their image_id ranges
OUTPUT/_plan.json                     the shard plan, the manifest's fingerprint, the generation, pixel settings
OUTPUT/_SUCCESS                       the run summary, written last
OUTPUT/dataset.json, OUTPUT/README.md the dataset card (pipeline.card), written with _SUCCESS
```
"""

from __future__ import annotations

import re

from pipeline.storage import safe_key

IMAGES_PREFIX = "images"
SHARDS_PREFIX = "shards"
CARD_KEY = "dataset.json"
CARD_README_KEY = "README.md"
VIDEOS_PREFIX = "videos"
SEGMENTS_PREFIX = "_segments"
METRICS_PREFIX = "metrics"
ATTEMPTS_PREFIX = "_attempts"
GENERATIONS_PREFIX = "_generations"
PLAN_KEY = "_plan.json"
SUCCESS_KEY = "_SUCCESS"
LOG_KEY = "_logs"
EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}
# the photos a manifest lists (pipeline.manifest.schema reads them from here); an output name replaces them
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# an image id's source extension after a name that keeps at least one character (".jpg" stays), as Python's re
# and pyarrow's RE2 both read it: plan.py finds colliding stems with it (replaced by STEM_REPLACEMENT)
SOURCE_EXTENSION = r"(?i)([^/])\.(?:" + "|".join(e[1:] for e in IMAGE_EXTENSIONS) + r")$"
STEM_REPLACEMENT = r"\1"
_SOURCE_EXTENSION = re.compile(SOURCE_EXTENSION)
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
MEMBER_MARK = "#"  # output_uri of a sample in a shard file: <shard file's URI>#<member>


_SHARD_NAME = r"(?:^|/)shard-(?:g(\d+)-)?(\d+)"  # the one pattern of a shard's file name (generation, shard)
SHARD_FILE = re.compile(_SHARD_NAME + r"\.parquet$")
ATTEMPT_FILE = re.compile(_SHARD_NAME + r"\.json$")
CONTAINER_FILE = re.compile(_SHARD_NAME + r"\.(?:tar|parquet)$")


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


def extension(fmt: str) -> str:
    """The file extension of an output encoding (``jpeg`` -> ``jpg``)."""
    return EXTENSIONS.get(str(fmt).lower(), str(fmt).lower())


def output_stem(image_id: str) -> str:
    """The image id without its source extension (``bird/img1.jpg`` -> ``bird/img1``)."""
    return _SOURCE_EXTENSION.sub(STEM_REPLACEMENT, image_id)


def output_key(image_id: str, fmt: str, *, k: int | None = None, keep_extension: bool = False) -> str:
    """``images/<id's stem>[-k].<ext>``: the source tree mirrored (``bird/img1.jpg`` -> ``images/bird/img1.png``,
    so ImageFolder reads the output), ``-k`` for the k-th style of a photo when there are several. Derived
    from the image id only, so reruns overwrite, never duplicate. ``keep_extension``: the source's extension
    stays (``a.jpg`` -> ``a.jpg.png``), for the ids whose stems collide (``a.jpg``, ``a.png``: the plan lists
    them) and for outputs planned before names were mirrored (which all kept it)."""
    name = image_id if keep_extension else output_stem(image_id)
    suffix = f"-{int(k)}" if k is not None else ""
    return safe_key(IMAGES_PREFIX, f"{name}{suffix}.{extension(fmt)}")


def container_key(shard: int, generation: int, output_format: str) -> str:
    """``shards/shard-[gGGGG-]NNNNN.tar`` (webdataset) or ``.parquet``: one shard's samples, named as its
    metrics file is."""
    ext = {"webdataset": "tar", "parquet": "parquet"}[output_format]
    return f"{SHARDS_PREFIX}/{_shard_name(shard, generation)}.{ext}"


def sample_key(image_id: str, k: int | None = None) -> str:
    """A sample's key inside a shard file: the image id with every character outside ``[A-Za-z0-9_-]``
    (``/``, ``.``) as ``_``, and ``-k`` (webdataset splits a member's name at its first dot)."""
    return _KEY_CHARS.sub("_", image_id) + (f"-{int(k)}" if k is not None else "")


def split_member(uri: str) -> tuple[str, str | None]:
    """``.../shard-00003.tar#key.png`` -> (the shard file's URI, ``key.png``); a plain URI -> (uri, None)."""
    base, mark, member = uri.rpartition(MEMBER_MARK)
    if mark and base.endswith((".tar", ".parquet")) and "/" not in member:
        return base, member
    return uri, None  # a loose file, whose name may hold a "#" of its own


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
