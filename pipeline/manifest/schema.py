"""The manifest's columns, the extensions it lists and the keys ``manifest build`` writes in its footer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.layout import IMAGE_EXTENSIONS
from pipeline.media.video import VIDEO_EXTENSIONS

MEDIA_EXTENSIONS: tuple[str, ...] = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
REQUIRED_COLUMNS = ("image_id", "uri")
SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mtime", pa.timestamp("us", tz="UTC")),
        ("etag", pa.string()),
        ("media_type", pa.string()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("frame_rate", pa.string()),
        ("frames", pa.int64()),
        ("has_audio", pa.bool_()),
    ]
)
VIDEO_COLUMNS = ("duration", "fps", "frame_rate", "frames", "has_audio")
TAG_COLUMNS = ("etag", "size_bytes", "mtime")  # what a row's source tag is made of (hashing.source_tags)
PROBE_BYTES = 64 * 1024
PROBE_RETRY_BYTES = 1024 * 1024  # JPEGs with big EXIF/XMP/ICC blocks put their size marker later
FINGERPRINT_KEY = b"stylize.fingerprint"  # sha256 over (image_id, uri) of every row
SOURCES_KEY = b"stylize.sources"  # sha256 over (image_id, source tag): changes when a photo is replaced
VIDEOS_KEY = b"stylize.videos"  # JSON [[row, frames], ...] of the probed videos
UNIQUE_IDS_KEY = b"stylize.unique_ids"  # "true" when manifest build checked that no image_id repeats
LABELS_KEY = b"stylize.labels"  # JSON sorted class names of the `label` column: a label's index is its position
LABEL_COLUMN = "label"  # optional: the photo's class name (manifest build --label-from / --labels)
LABEL_SOURCES = ("parent", "top")  # --label-from: the photo's own folder, or the first folder under the root


@dataclass
class ManifestStats:
    """What a manifest build did; ``problems`` are ``validate`` messages (capped)."""

    out: str
    rows: int = 0
    total_bytes: int = 0
    listed: int = 0
    skipped: int = 0
    unprobed: int = 0
    renamed_ids: int = 0
    unreadable_dirs: int = 0
    unlabeled: int = 0  # rows left without a label (--labels lacks their id, or no folder to name the class)
    classes: int = 0  # distinct labels
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
