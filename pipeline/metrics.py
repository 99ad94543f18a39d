"""Per-image metric rows, optional quality metrics, and the run summary.

Every manifest row becomes exactly one metrics row (``status`` ok or failed), K rows with
``styles_per_image`` K (one per (photo, k)). Quality metrics
are measured with the shared VGG (``pipeline.models.vgg``) on copies brought to a fixed small working
size (longer side ``QUALITY_SIDE`` px, with the one max-side resize) on the actor's device, a whole
batch per VGG pass and each style's Gram matrices once, so a 40-megapixel photo costs the same as a
thumbnail:

- ``style_distance``: mean over relu1_1..relu4_1 of ``||G(out) - G(style)||_F / ||G(style)||_F``
  (Gram matrices; the target of a mix is the weighted mean of the styles' Grams). Index and
  fixed-style networks have no style image, so it is null for them.
- ``content_distance``: ``||F(out) - F(content)||_2 / ||F(content)||_2`` at relu4_1.
- ``colour_distance``: Euclidean distance between the per-channel RGB mean and std (6 numbers,
  [0,1] units) of output and content; near 0 means the photo's colours were kept.
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from pipeline.models.base import Style

GRAM_CACHE = 64  # style specs whose Gram matrices are kept (dataset generation samples from thousands)
COLOUR_SAMPLE = 1 << 17  # pixels, at least, that colour_distance's statistics are taken over
QUALITY_SIDE = 128  # px, longer side: 0.10 s a photo in a 60-photo job on the 2-core CPU (docs/benchmarks.md)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"

METRICS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("source_tag", pa.string()),  # etag, else size@mtime: how the next run tells a replaced photo
        ("shard", pa.int64()),
        ("row", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("error_kind", pa.string()),  # a failed row's exception class (null when ok)
        ("failed_stage", pa.string()),  # where it failed: one of STAGES (null when ok)
        ("output_uri", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("out_width", pa.int64()),
        ("out_height", pa.int64()),
        ("stylizer", pa.string()),
        ("style", pa.string()),
        # stylized training sets: which of the photo's K styles (0 when K = 1), its class name and index
        ("k", pa.int64()),
        ("label", pa.string()),
        ("label_index", pa.int64()),
        ("note", pa.string()),
        ("seconds_decode", pa.float64()),
        ("seconds_stylize", pa.float64()),
        ("seconds_encode", pa.float64()),
        ("seconds_metrics", pa.float64()),
        ("style_distance", pa.float64()),
        ("content_distance", pa.float64()),
        ("colour_distance", pa.float64()),
        ("finished_at", pa.float64()),
        # videos (null for images): the output's frames, exact rate, seconds, E_warp and fidelity (temporal.py)
        ("media_type", pa.string()),
        ("frames", pa.int64()),
        ("fps", pa.float64()),
        ("frame_rate", pa.string()),
        ("duration", pa.float64()),
        ("ewarp", pa.float64()),
        ("fidelity", pa.float64()),
        ("seconds_per_frame", pa.float64()),
    ]
)
COLUMNS = tuple(METRICS_SCHEMA.names)
QUALITY_COLUMNS = ("style_distance", "content_distance", "colour_distance")
Stage = Literal["read", "decode", "stylize", "encode", "write", "metrics"]
STAGES: tuple[str, ...] = get_args(Stage)
MAX_KINDS = 20  # failure kinds counted by name in _SUCCESS; the rest are summed as "other"


def _clean(value: Any, typ: pa.DataType) -> Any:
    """Intermediate batches use "" and NaN for 'none' (stable Arrow types); the file uses nulls."""
    if value is None:
        return None
    if pa.types.is_string(typ):
        return str(value) or None
    if pa.types.is_integer(typ):
        v = float(value)
        return None if v != v or v < 0 else int(v)
    v = float(value)
    return None if v != v else v


def to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Metric row dicts -> a table with exactly ``METRICS_SCHEMA`` (extra keys dropped, missing ones null)."""
    rows = list(rows)
    arrays = [pa.array([_clean(r.get(f.name), f.type) for r in rows], type=f.type) for f in METRICS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA)


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


# --- quality --------------------------------------------------------------------------------------


def colour_distance(out: Tensor, content: Tensor) -> float:
    """Distance between per-channel RGB (mean, std) of two (1,3,H,W) images in [0,1]."""

    def stats(x: Tensor) -> Tensor:
        # every step-th pixel in each direction (about COLOUR_SAMPLE of them): a sample's mean and std are
        # within ~1e-3 of the whole photo's, at a sixth of the cost on a 1 MP photo (no blur, unlike a resize);
        # float32 (torch sums pairwise): within 1e-8 of float64
        step = max(1, math.isqrt(x.shape[-2] * x.shape[-1] // COLOUR_SAMPLE))
        sample = x[..., ::step, ::step].reshape(3, -1).float()
        std, mean = torch.std_mean(sample, dim=1, correction=0)
        return torch.cat([mean, std]).double()

    return float((stats(out) - stats(content)).norm())


class QualityScorer:
    """Quality metrics on a device, with the VGG loaded once and style Grams cached per style spec."""

    def __init__(self, encoder: torch.nn.Module, side: int = QUALITY_SIDE) -> None:
        # channels-last convs: the same arithmetic, about 2x faster on CPU (docs/benchmarks.md)
        self.encoder = encoder.to(memory_format=torch.channels_last)
        self.side = side
        self.device = next(encoder.parameters()).device
        self._style_grams: OrderedDict[str, list[Tensor] | None] = OrderedDict()  # the last GRAM_CACHE specs

    @classmethod
    def load(cls, source: str | None, device: str | torch.device = "cpu", side: int = QUALITY_SIDE) -> QualityScorer:
        from pipeline.models.vgg import load_encoder

        return cls(load_encoder(source or "auto", last=CONTENT_LAYER, device=device), side)

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        from pipeline.imaging import resize_max_side

        x = resize_max_side(x.to(self.device).float(), self.side).contiguous(memory_format=torch.channels_last)
        return self.encoder(x, layers=STYLE_LAYERS)

    def _grams(self, spec: str, styles: Sequence[Style]) -> list[Tensor] | None:
        from pipeline.models.base import normalized_weights
        from pipeline.models.vgg import gram

        if spec in self._style_grams:
            self._style_grams.move_to_end(spec)
        else:
            if len(self._style_grams) >= GRAM_CACHE:
                self._style_grams.popitem(last=False)
            if any(s.image is None for s in styles):
                self._style_grams[spec] = None
            else:
                weights = normalized_weights(list(styles))
                total: list[Tensor] = []
                for s, w in zip(styles, weights, strict=True):
                    img = s.image if s.image.dim() == 4 else s.image.unsqueeze(0)
                    feats = self._features(img.float())
                    g = [gram(feats[n]) * w for n in STYLE_LAYERS]
                    total = g if not total else [a + b for a, b in zip(total, g, strict=True)]
                self._style_grams[spec] = total
        return self._style_grams[spec]

    @torch.no_grad()
    def score_batch(
        self, out: Tensor, content: Tensor, specs: Sequence[str], styles: Sequence[Sequence[Style]]
    ) -> list[dict[str, float]]:
        """``out`` and ``content``: (B,3,H,W) in [0,1] of one size; one spec and style list per image."""
        from pipeline.models.vgg import gram

        feats = self._features(torch.cat([out, content]))
        b = out.shape[0]
        rows = []
        for i in range(b):
            a, c = feats[CONTENT_LAYER][i], feats[CONTENT_LAYER][b + i]
            row = {
                "content_distance": float((a - c).norm() / c.norm().clamp_min(1e-8)),
                "colour_distance": colour_distance(out[i : i + 1].cpu(), content[i : i + 1].cpu()),
                "style_distance": float("nan"),
            }
            targets = self._grams(specs[i], styles[i])
            if targets is not None:
                dists = [
                    float((gram(feats[n][i : i + 1]) - t).norm() / t.norm().clamp_min(1e-12))
                    for n, t in zip(STYLE_LAYERS, targets, strict=True)
                ]
                row["style_distance"] = sum(dists) / len(dists)
            rows.append(row)
        return rows

    def score(self, out: Tensor, content: Tensor, spec: str, styles: Sequence[Style]) -> dict[str, float]:
        """One image: ``out`` and ``content`` (1,3,H,W) in [0,1]; sizes may differ (content's wins)."""
        from pipeline.imaging import resize

        out = resize(out, tuple(content.shape[-2:]))
        return self.score_batch(out, content, [spec], [styles])[0]


# --- summary --------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import numpy
    import PIL

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyarrow": pa.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:  # the summary is also written by ray-less tools
        pass
    return out


SUMMED = ("seconds_decode", "seconds_stylize", "seconds_encode", "seconds_metrics", *QUALITY_COLUMNS)
SUMMARY_KEY = b"stylize.shard_summary"


def shard_summary(rows: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """What a shard's metrics file carries in its footer: counts and sums, so the driver reads no rows."""
    kinds: dict[str, int] = {}
    for r in rows:
        if r.get("status") != "ok":
            kind = r.get("error_kind") or "unknown"
            kinds[kind] = kinds.get(kind, 0) + 1
    out: dict[str, Any] = {
        "rows": len(rows),
        "photos": sum(not r.get("k") for r in rows),  # manifest rows: a photo's K rows count once (k = 0)
        "ok": sum(r.get("status") == "ok" for r in rows),
        "failed": sum(r.get("status") != "ok" for r in rows),
        "failures_by_kind": kinds,
    }
    for col in SUMMED:
        vals = [float(r[col]) for r in rows if r.get(col) is not None and float(r[col]) == float(r[col])]
        out[f"sum_{col}"], out[f"n_{col}"] = sum(vals), len(vals)
    out.update(extra)
    fill = batch_fill(out.get("images_in_calls"), out.get("model_calls"), out.get("batch_size"))
    if fill is not None:
        out["batch_fill"] = fill
    return out


def batch_fill(images: Any, calls: Any, batch_size: Any) -> float | None:
    """Images per model call over ``batch_size`` (1.0: every call full); None without calls. A shard's
    footer and ``_SUCCESS`` both carry it, so a shard whose calls did not fill can be found."""
    if not calls or not batch_size:
        return None
    return round(int(images or 0) / int(calls) / max(1, int(batch_size)), 4)


def shard_file(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """The shard's metrics Parquet, its summary in the footer."""
    table = to_table(rows)
    table = table.replace_schema_metadata({SUMMARY_KEY: json.dumps(summary).encode()})
    return table_bytes(table)


def read_shard_summary(storage: Any, key: str) -> dict[str, Any]:
    """The footer summary of one shard file (older files without one: computed from the rows)."""
    with storage.open(key) as f:
        pf = pq.ParquetFile(f)
        meta = pf.schema_arrow.metadata or {}
        if SUMMARY_KEY in meta:
            return json.loads(meta[SUMMARY_KEY])
        return shard_summary(pf.read().to_pylist())


def failures_by_kind(shards: Sequence[dict[str, Any]], cap: int = MAX_KINDS) -> dict[str, int]:
    """Failed rows per ``error_kind`` over the shard summaries, most frequent first: the ``cap`` most frequent
    kinds by name, the rest summed as "other" (so the document stays small whatever the job met). Shards
    committed before kinds were recorded count their failures as "unknown"."""
    total: dict[str, int] = {}
    for s in shards:
        kinds = s.get("failures_by_kind")
        if kinds is None:
            kinds = {"unknown": int(s.get("failed", 0))} if int(s.get("failed", 0)) else {}
        for kind, n in kinds.items():
            total[kind] = total.get(kind, 0) + int(n)
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:cap])
    rest = sum(n for _, n in ranked[cap:])
    if rest:
        out["other"] = out.get("other", 0) + rest
    return out


def summarize(
    shards: Sequence[dict[str, Any]],
    *,
    config: dict[str, Any],
    wall_seconds: float,
    processed: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``_SUCCESS`` document from the shard summaries: counts over all rows, this run's throughput."""
    summary: dict[str, Any] = {
        "rows": sum(int(s["rows"]) for s in shards),  # (photo, k) pairs with styles_per_image K > 1
        "photos": sum(int(s.get("photos", s["rows"])) for s in shards),
        "ok": sum(int(s["ok"]) for s in shards),
        "failed": sum(int(s["failed"]) for s in shards),
        "failures_by_kind": failures_by_kind(shards),
        "processed_this_run": processed,
        "wall_seconds": round(wall_seconds, 3),
        "images_per_second": round(processed / wall_seconds, 4) if wall_seconds > 0 else None,
        "finished_at": time.time(),
        "config": config,
        "versions": versions(),
    }
    for col in SUMMED:
        n = sum(int(s.get(f"n_{col}", 0)) for s in shards)
        if n:
            summary[f"mean_{col}"] = sum(float(s.get(f"sum_{col}", 0.0)) for s in shards) / n
    calls = sum(int(s.get("model_calls", 0)) for s in shards)
    if calls:
        images = sum(int(s.get("images_in_calls", 0)) for s in shards)
        summary["model_calls"] = calls
        summary["batch_fill"] = batch_fill(images, calls, config.get("batch_size") or 1)
    summary.update(extra or {})
    return summary


def summary_bytes(summary: dict[str, Any]) -> bytes:
    return json.dumps(summary, indent=2, sort_keys=True, default=str).encode()
