"""Job configuration: one pydantic model, filled from YAML, then ``--set key=value``, then flags.

The top-level keys of ``JobConfig`` are a contract: scheduled jobs keep YAML files with them, and
``model_dump()`` goes into every run summary. Add keys; do not rename or remove them.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import base64
import difflib
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from pipeline.errors import ConfigError, StorageError
from pipeline.scale import DEFAULT_STYLE_SCALE, DEFAULT_TILE_PIXELS, STYLE_SCALE_HELP, StyleScale, parse_style_scale
from pipeline.storage import ALLOWED_SCHEMES, check_scheme

_SCHEME = re.compile(r"^[a-z0-9+.-]*$")
SECRET_KEY = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)


class JobConfig(BaseModel):
    """Everything a batch job needs; see ``configs/*.yaml`` for worked examples."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    manifest: str = Field(description="Parquet manifest (local path or s3://, gs:// URI); see `stylize manifest`.")
    output: str = Field(description="Output root: images/ (the source tree mirrored) or shards/, metrics/, _SUCCESS.")
    stylizer: str = Field("dumoulin", description="Registered model name (`stylize models list`).")
    style: str = Field(
        "0",
        description='Style spec for every image: "starry.jpg", "starry.jpg:0.7,wave.jpg:0.3", "7" or "3:0.5,12:0.5".',
    )
    style_column: str | None = Field(None, description="Manifest column holding a per-image style spec.")
    style_manifest: str | None = Field(
        None, description="Manifest of style images; each content image gets one, sampled with style_seed."
    )
    style_seed: int = Field(0, ge=0, description="Seed of the per-image style sampling (style_manifest).")
    styles_per_image: int = Field(
        1,
        ge=1,
        le=64,
        description="Distinct styles per photo from style_manifest (K): each (photo, k) is one output and one "
        "metrics row (k = 0..K-1); a video row is stylized once (k = 0).",
    )
    style_split: str | None = Field(
        None,
        description="Only the styles of this split of style_manifest: its `split` column, else a fixed hash split "
        "of the style URIs (`val`: about 10 %, `train`: the rest), so two datasets' style pools stay disjoint.",
    )
    alpha: float = Field(1.0, ge=0.0, le=1.0, description="Style strength: 0 = content, 1 = full style.")
    preserve_color: Literal["none", "luminance", "histogram"] = Field(
        "none", description="Keep the content's colours: luminance-only transfer or histogram matching."
    )
    max_side: int | None = Field(
        None, ge=16, le=32768, description="Downscale so the longer side is at most this many pixels (None: as is)."
    )
    style_scale: StyleScale = Field(
        DEFAULT_STYLE_SCALE,
        description="Longer side (px) at which strokes are painted; larger photos are stylized at it and "
        "upsampled edge-aware to full size. native: at the photo's own size (strokes fixed in pixels).",
    )
    encoder_weights: str = Field("auto", description="VGG encoder weight source for models that need one.")
    weights: str | None = Field(None, description="Model checkpoint path/URI (None: the model's default).")
    format: Literal["jpeg", "png", "webp"] = Field("jpeg", description="Output image format.")
    output_format: Literal["files", "webdataset", "parquet"] = Field(
        "files",
        description="How outputs are stored: files (the source tree mirrored under images/), webdataset (a tar "
        "per shard) or parquet (image bytes and fields, a file per shard); `format` is the image encoding.",
    )
    resize_shorter: int | None = Field(
        None,
        ge=8,
        le=32768,
        description="Resize so the shorter side is this many pixels, as torchvision's Resize(N) "
        "(training sets: 256); before max_side.",
    )
    center_crop: int | None = Field(
        None,
        ge=8,
        le=32768,
        description="Then crop the centre square of this side, as torchvision's CenterCrop(M) (training "
        "sets: 224); a photo smaller than it fails its row (no padding).",
    )

    quality: int = Field(92, ge=1, le=100, description="JPEG/WebP quality (ignored for PNG).")
    png_level: int = Field(1, ge=0, le=9, description="PNG zlib level: 1 is fast, 9 is smallest (PNG only).")
    batch_size: int = Field(4, ge=1, le=1024, description="Images per model call on one actor.")
    actors: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Most stylizer actors, each holding a loaded model (None: one per CPU on an embedded "
        "local Ray without GPUs, each with one thread; else 1).",
    )
    min_actors: int | None = Field(
        None, ge=1, le=4096, description="Fewest actors; the pool grows to `actors` while shards wait (None: actors)."
    )
    shard_rows: int = Field(
        256,
        ge=1,
        le=1_000_000,
        description="Manifest rows per shard, the unit an actor owns (fixed once a run starts).",
    )
    tile_pixels: int | None = Field(
        DEFAULT_TILE_PIXELS,
        ge=4096,
        description="Feed-forward models stylize larger images in feathered tiles (None: never).",
    )
    mask_column: str | None = Field(
        None, description="Manifest column with a per-image mask image URI: white areas get mask_style."
    )
    mask_style: str | None = Field(None, description="Style spec inside the mask (mask_column); style fills the rest.")
    gpus_per_actor: float = Field(0, ge=0, le=16, description="GPUs reserved per actor (fractions share a GPU).")
    cpus_per_actor: float = Field(1, ge=0, le=256, description="CPUs reserved per actor.")
    device: str = Field("auto", description='"auto" (cuda if the actor has a GPU), "cpu", "cuda", "cuda:N", "mps".')
    engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="What runs the model: auto = onnxruntime for dumoulin on CPU where installed, else torch."
    )
    metrics: bool = Field(True, description="Compute per-image quality metrics (costs a VGG pass).")
    max_retries: int = Field(
        2,
        ge=0,
        le=100,
        description="Worker crashes (segfault, OOM kill) an image or video segment may cause and still be tried "
        "again; one more makes it a failed row (0: tried once).",
    )
    allowed_schemes: list[str] = Field(
        default_factory=lambda: sorted(ALLOWED_SCHEMES),
        description='URI schemes sources may use ("" = local path); add "http"/"https" only for trusted manifests.',
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options, e.g. {endpoint_url: http://minio:9000} for S3."
    )
    seed: int = Field(
        0, ge=0, description="Seed of torch's RNG in each worker and of optimisation methods' noise (gatys init=noise)."
    )
    # re-running over an output that already holds results (pipeline.plan, pipeline.shard)
    rerun: Literal["new", "failed", "all"] = Field(
        "new",
        description="Which rows of an output that already holds results are stylized again: new = only rows "
        "new or changed since the last run; failed = those plus rows that failed before; all = every row.",
    )
    prune: bool = Field(False, description="Delete the outputs of photos no longer in the manifest.")
    # clusters: driver-side bounds (pipeline.runner, pipeline.lease)
    shard_retries: int = Field(
        3, ge=0, le=100, description="Times a shard that failed with a transient storage error is tried again."
    )
    stall_timeout: float = Field(
        600, gt=0, description="Seconds without progress after which the run fails, naming the shards it waited for."
    )
    lease_seconds: float = Field(
        120, gt=0, description="A run's lease on its output expires this long after its last heartbeat."
    )
    wait_for_lease: bool = Field(False, description="Wait for another run's lease on the output instead of stopping.")
    # videos (manifest rows with a video extension; pipeline/temporal.py, pipeline/video_job.py)
    consistency: Literal["flow", "none"] = Field(
        "flow", description="Videos: blend each frame with the flow-warped previous output (flow) or not (none)."
    )
    blend: float = Field(0.5, ge=0.0, lt=1.0, description="Videos: weight of the warped previous output.")
    segment_frames: int = Field(
        900, ge=2, description="Videos longer than this are cut into segments of it, run by different actors."
    )
    warmup_frames: int = Field(10, ge=0, le=1000, description="Frames stylized (not written) before a segment.")
    video_codec: str = Field("libx264", description="FFmpeg encoder of video outputs (MP4).")
    video_crf: int = Field(18, ge=0, le=63, description="Encoder quality of video outputs (lower is better).")
    video_pix_fmt: str = Field("yuv420p", description="Pixel format of video outputs.")

    def __init__(self, **data: Any):
        # direct construction reports like load_config does: one ConfigError line
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(one_line_error(exc, JobConfig.model_fields)) from None

    @field_validator("manifest", "output", "stylizer", "encoder_weights")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("style", mode="before")
    @classmethod
    def _style_text(cls, v: Any) -> Any:
        if isinstance(v, (bool, float)):
            # unquoted YAML reads 3:0.5 as a base-60 number (180.5); refuse instead of guessing
            raise ValueError('quote the style spec in YAML, e.g. style: "3:0.5" (it was read as a number)')
        return str(v) if isinstance(v, int) else v

    @field_validator("style")
    @classmethod
    def _style_spec(cls, v: str) -> str:
        from pipeline.styles import split_spec

        try:
            split_spec(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("style_scale", mode="before")
    @classmethod
    def _style_scale(cls, v: Any) -> StyleScale:
        try:
            return parse_style_scale(v)
        except ConfigError:
            raise ValueError(f"must be {STYLE_SCALE_HELP}") from None

    @field_validator("format", mode="before")
    @classmethod
    def _format_alias(cls, v: Any) -> Any:
        return "jpeg" if isinstance(v, str) and v.lower() == "jpg" else (v.lower() if isinstance(v, str) else v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from pipeline.devices import DEVICE_NAMES, check_device  # config accepts exactly what the resolver does

        try:
            return check_device(v)
        except ConfigError:
            raise ValueError(f"must be {DEVICE_NAMES}") from None

    @field_validator("allowed_schemes")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        out = sorted({s.strip().lower().removesuffix("://") for s in v})
        bad = [s for s in out if not _SCHEME.match(s)]
        if bad:
            raise ValueError(f"not URI schemes: {bad}")
        if not out:
            raise ValueError("must allow at least one scheme")
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> JobConfig:
        if self.style_column and self.style_manifest:
            raise ValueError("style_column and style_manifest are exclusive; choose one per-image style source")
        if self.styles_per_image > 1 and not self.style_manifest:
            raise ValueError("styles_per_image > 1 samples distinct styles from style_manifest; set style_manifest")
        if self.style_split and not self.style_manifest:
            raise ValueError("style_split picks part of style_manifest; set style_manifest")
        if self.center_crop and self.resize_shorter and self.center_crop > self.resize_shorter:
            raise ValueError(
                f"center_crop ({self.center_crop}) is larger than resize_shorter ({self.resize_shorter}): "
                "the crop would not fit"
            )
        if bool(self.mask_column) != bool(self.mask_style):
            raise ValueError("mask_column and mask_style go together: the mask says where mask_style applies")
        if self.min_actors and self.actors and self.min_actors > self.actors:
            raise ValueError(f"min_actors ({self.min_actors}) is more than actors ({self.actors})")
        for key in ("manifest", "output", "style_manifest"):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                check_scheme(value, self.allowed_schemes)
            except StorageError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return self

    def public_dict(self) -> dict[str, Any]:
        """``model_dump()`` with secret-looking ``storage_options`` values masked (for summaries, logs)."""

        def mask(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: ("***" if SECRET_KEY.search(str(k)) else mask(v)) for k, v in obj.items()}
            return obj

        data = self.model_dump()
        data["storage_options"] = mask(data["storage_options"])
        return data


def one_line_error(exc: ValidationError, known_keys: Iterable[str], what: str = "job config") -> str:
    """A pydantic error as one line: ``invalid <what>: key: reason (got value)``, all problems joined.

    ``known_keys`` are the model's fields, for the "did you mean" hint on an unknown key.
    """
    known = list(known_keys)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
            parts.append(f"{loc}: {msg}")
            continue
        if not err.get("loc"):  # a cross-field check: the message names the key, the input is everything
            parts.append(msg)
            continue
        got = repr(err.get("input"))
        parts.append(f"{loc}: {msg} (got {got[:80]})")
    return f"invalid {what}: " + "; ".join(parts)


def _is_text(annotation: Any) -> bool:
    """True for str, Literal[str...] and their Optional forms: ``--set`` keeps those values verbatim."""
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return bool(args) and all(_is_text(a) for a in args)
    return False


def _parse_override(item: str, fields: Mapping[str, FieldInfo]) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set wants key=value, got {item!r}")
    key, raw = item.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set has an empty key in {item!r}")
    field = fields.get(path[0])
    if field is not None and len(path) == 1 and _is_text(field.annotation):
        nullable = type(None) in get_args(field.annotation)
        # a style like 3:0.5 would be a base-60 number as YAML; strings stay strings
        return path, (None if nullable and raw.strip() in ("null", "~", "None", "") else raw)
    try:
        return path, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse {raw!r}: {exc}".replace("\n", " ")) from None


def read_mapping(
    path: str | None = None,
    overrides: Sequence[str] = (),
    *,
    payload: str | None = None,
    fields: Mapping[str, FieldInfo] | None = None,
) -> dict[str, Any]:
    """The keys of a config before validation: the YAML (or JSON) file at ``path`` (local, s3://, gs://, ...)
    or ``payload`` (the urlsafe base64 JSON that ``--config-b64`` carries), then ``--set`` ``overrides``.

    The one reader of both job entrypoints (``jobs/run_job.py``, ``jobs/train_job.py``) and the CLI; ``fields``
    (default: JobConfig's) says which keys are text that ``--set`` keeps verbatim. Raises ``ConfigError``.
    """
    if payload is not None:
        try:
            text = base64.b64decode(payload.encode(), altchars=b"-_", validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError("--config-b64 is not urlsafe base64 of UTF-8 JSON") from None
        data = _parse_yaml(text, "--config-b64")  # JSON is YAML
    else:
        data = _read_yaml(path) if path else {}
    for item in overrides:
        keys, value = _parse_override(item, JobConfig.model_fields if fields is None else fields)
        target = data
        for k in keys[:-1]:
            nxt = target.get(k)
            if nxt is None:
                nxt = target[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is not a mapping")
            target = nxt
        target[keys[-1]] = value
    return data


def _read_yaml(path: str) -> dict[str, Any]:
    from pipeline.storage import read_source

    try:
        text = read_source(path).decode("utf-8")
    except StorageError as exc:
        raise ConfigError(f"config file: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    return _parse_yaml(text, path)


def _parse_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(
    path: str | None = None, overrides: Sequence[str] = (), *, payload: str | None = None, **flags: Any
) -> JobConfig:
    """YAML file (optional; or ``payload``, see ``read_mapping``), then ``--set key=value`` overrides,
    then the non-None ``flags``.

    Override values are YAML scalars (``batch_size=8``, ``metrics=false``, ``max_side=null``)
    except for text keys, which are kept verbatim (``style=3:0.5,12:0.5``). Dotted keys reach
    into dicts: ``storage_options.endpoint_url=http://minio:9000``. Raises ``ConfigError``.
    """
    data = read_mapping(path, overrides, payload=payload)
    for key, value in flags.items():
        if value is not None:
            data[key] = value
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line_error(exc, JobConfig.model_fields)) from None
