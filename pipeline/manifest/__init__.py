"""Parquet manifests: one row per source image, the unit of work of a batch job.

Schema (``SCHEMA``; ``from_table`` keeps any extra columns after these)::

    image_id    string    stable id, safe as a storage key (see make_image_id)
    uri         string    where the worker reads the image (local path, s3://, gs://)
    size_bytes  int64     null when unknown (from_table without a size column)
    width       int32     from the header (codec.probe), null when unknown
    height      int32
    mtime       timestamp[us, UTC]   when the filesystem reports it
    etag        string    S3/GCS ETag when the store reports it
    media_type  string    "image" or "video" (by extension)
    duration    float64   videos: seconds, from the container header (null for images)
    fps         float64   videos: frames per second (frame_rate holds it exactly, e.g. "30000/1001")
    frame_rate  string
    frames      int64     videos: frame count declared by the header
    has_audio   bool      videos: whether there is an audio stream
    label       string    optional: the photo's class (``--label-from parent|top``, ``--labels FILE``); the
                          footer lists the sorted class names once (``LABELS_KEY``, ``class_names``)

The video columns were added later: manifests without them still work (their videos are then processed
whole, never cut into segments). ``build_manifest`` also stores ``[row, frames]`` of every probed video
in the footer (``VIDEOS_KEY``), so planning can cut long videos into segments without reading rows.

The package, one job a module: ``schema`` (columns, footer keys), ``ids`` (image ids), ``hashing``
(fingerprints, 64-bit row hashes, source tags over Arrow arrays), ``footer`` (the footer and the
atomic write), ``build`` (walk and probe a folder), ``tables`` (from another tool's table),
``labels`` (the ``label`` column), ``read`` (open, read, validate, class names) and ``summary``
(``manifest inspect``). Callers import the names below.

Bad rows do not fail a manifest: ``validate`` lists them and the runner marks each failed
(``row_problem``). Missing columns are the only fatal problem.
"""

from pipeline.manifest.build import build_manifest
from pipeline.manifest.footer import manifest_metadata, write_table
from pipeline.manifest.hashing import Fingerprint, hash64, source_tags
from pipeline.manifest.ids import id_from_uri, make_image_id
from pipeline.manifest.labels import read_labels
from pipeline.manifest.read import (
    class_names,
    duplicate_ids,
    open_manifest,
    read_manifest,
    read_uri_column,
    read_uri_list,
    row_problem,
    validate,
)
from pipeline.manifest.schema import (
    FINGERPRINT_KEY,
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    REQUIRED_COLUMNS,
    SCHEMA,
    SOURCES_KEY,
    TAG_COLUMNS,
    UNIQUE_IDS_KEY,
    VIDEO_COLUMNS,
    VIDEOS_KEY,
    ManifestStats,
)
from pipeline.manifest.summary import inspect
from pipeline.manifest.tables import from_table

__all__ = [
    "FINGERPRINT_KEY",
    "IMAGE_EXTENSIONS",
    "MEDIA_EXTENSIONS",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "SOURCES_KEY",
    "TAG_COLUMNS",
    "UNIQUE_IDS_KEY",
    "VIDEOS_KEY",
    "VIDEO_COLUMNS",
    "Fingerprint",
    "ManifestStats",
    "build_manifest",
    "class_names",
    "duplicate_ids",
    "from_table",
    "hash64",
    "id_from_uri",
    "inspect",
    "make_image_id",
    "manifest_metadata",
    "open_manifest",
    "read_labels",
    "read_manifest",
    "read_uri_column",
    "read_uri_list",
    "row_problem",
    "source_tags",
    "validate",
    "write_table",
]
