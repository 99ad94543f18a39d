"""One shard end to end, without Ray: read rows -> fetch/decode -> batch -> stylize -> encode/write -> metrics.

A ``ShardWorker`` holds one loaded stylizer (and the metrics VGG). ``run(shard)`` reads the shard's
rows from the manifest itself (only the columns it needs), fetches and decodes in a thread pool
that runs ahead of the model, groups the decoded images into model calls that fill
(``pipeline.batching``), encodes and writes each output in threads, and finally writes the shard's
metrics Parquet atomically. That file is the shard's commit marker; the caller receives only
its small summary.

On a rerun over an output that already holds results (a new generation, ``pipeline.generations``),
the rows whose source is unchanged since the earlier generation are kept: their earlier metrics rows
are copied into this shard's file and their outputs are not touched (``pipeline.incremental``).

Every row ends as exactly one metrics row, ``ok`` or ``failed`` with a one-line reason, the
exception's class (``error_kind``) and the stage it failed in (``failed_stage``): a bad input never
raises. Only what belongs to the photo fails a row (its source is missing or unreadable, it does not
decode, it is too large, the model or the encoder fails on it). A fault of the machine or the store
(``MachineError``: no space left, permission or credentials refused) and any other storage error
while writing outputs or the commit escape ``run``: the shard does not commit, no row is failed for
them, and the attempt marker is left as it was, so no image is blamed for them.

Crashes (a segfault or OOM kill in a native library) are bounded by one marker per shard attempt,
``_attempts/shard-N.json``. A first attempt writes it, works at full speed and deletes it after the
commit. If a process dies, the retried task finds the marker and goes one image at a time, naming
each image in the marker before touching it; an image that was the suspect of more than
``max_retries`` crashes becomes a failed row instead of being tried again (``pipeline.crashes``, the
rule video segments follow too).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
import torch

from pipeline import generations, incremental, layout, video_job, writers
from pipeline.batching import Call, plan_calls
from pipeline.codec import decode_image, encode_image, to_array, to_arrays, to_tensor
from pipeline.config import JobConfig
from pipeline.crashes import crash_limit
from pipeline.devices import resolve_device
from pipeline.errors import InputError, MachineError, StorageError, StylizeError, describe
from pipeline.imaging import fit, fit_size, resize, resize_masks, shorter_side_size, training_crop
from pipeline.manifest.hashing import source_tags
from pipeline.manifest.schema import LABEL_COLUMN, TAG_COLUMNS
from pipeline.media.video import is_video
from pipeline.metrics import QualityScorer, Stage, shard_file, shard_summary
from pipeline.models.base import Style
from pipeline.models.controls import stylize
from pipeline.models.engines import load_stylizer
from pipeline.raysession import import_plugins
from pipeline.storage import Storage, read_source
from pipeline.styles import assign_style_sets, parse_style_spec
from pipeline.temporal import FrameStylizer
from pipeline.video_render import frame_stylizer

Row = dict[str, Any]
STYLE_CACHE = 64  # parsed (and decoded) style specs kept per actor
WINDOW_PIXELS = 48_000_000  # decoded pixels grouped at once (float32 RGB: ~580 MB); bounds memory on huge photos


class StageError(Exception):
    """``cause`` met in ``stage`` of a model call, so the row that fails for it names the stage."""

    def __init__(self, stage: Stage, cause: Exception) -> None:
        super().__init__(str(cause))
        self.stage, self.cause = stage, cause


@dataclass
class Item:
    """One manifest row on its way through the shard: its metrics row and, while in flight, pixels."""

    row: Row
    pixels: torch.Tensor | None = None  # (1,3,H,W) uint8 after max_side (a quarter of float's memory)
    mask: torch.Tensor | None = None  # (1,1,H,W) in [0,1]
    output: Future[str] | None = field(default=None, repr=False)
    kept: bool = False  # its earlier generation's row is copied forward; nothing to do
    kind: str = "new"  # against the earlier generation: new, changed or unchanged (pipeline.incremental)
    # the photo's other (photo, k) items this one decodes for (styles_per_image): one decode, shared pixels
    siblings: list[Item] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.row["status"] == "ok"

    def fail(self, exc: BaseException, stage: Stage) -> None:
        """Fail the row for ``exc`` met in ``stage``: its reason, kind (the exception's class) and stage."""
        self.row.update(
            status="failed",
            error=" ".join(describe(exc).split())[:500] or "failed",
            error_kind=type(exc).__name__,
            failed_stage=stage,
        )
        self.pixels = self.mask = None


def start_row(
    image_id: str,
    uri: str,
    shard: int,
    row: int,
    style: str,
    stylizer: str,
    source_tag: str | None = None,
    *,
    k: int = 0,
    label: str | None = None,
    label_index: int | None = None,
) -> Row:
    return {
        "image_id": image_id,
        "source_uri": uri,
        "source_tag": source_tag,
        "shard": shard,
        "row": row,
        "style": style,
        "k": k,  # which of the photo's styles_per_image styles (0 when K = 1)
        "label": label,  # the manifest's label column, and its index in the sorted class names
        "label_index": label_index,
        "stylizer": stylizer,
        "status": "ok",
        "error": "",
        "error_kind": "",
        "failed_stage": "",
        "output_uri": "",
        "note": "",
        "media_type": "image",  # a video row becomes "video" in pipeline.video_job
    }


class ShardWorker:
    """Owns a loaded stylizer and processes whole shards of one job's manifest."""

    def __init__(self, config: JobConfig, *, threads: int | None = None, io_threads: int = 4) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        import_plugins()
        self.config = config
        self.device = resolve_device(config.device)
        # the job's seed, as `stylize image --seed` uses it: torch's RNG, and the noise of optimisation methods
        torch.manual_seed(config.seed)
        import pipeline.models as models

        options = {} if models.get_card(config.stylizer).feed_forward else {"seed": config.seed}
        self.model = load_stylizer(
            config.stylizer,
            device=self.device,
            engine=config.engine,
            weights=config.weights,
            encoder_weights=config.encoder_weights,
            threads=threads,
            storage_options=config.storage_options or None,  # a remote `weights` is read with the job's options
            **options,
        )
        self.scorer = QualityScorer.load(config.encoder_weights, device=self.device) if config.metrics else None
        self.storage = Storage(config.output, config.storage_options or None)
        self.pool = ThreadPoolExecutor(max_workers=max(1, io_threads), thread_name_prefix="stylize-io")
        self._styles: OrderedDict[str, list[Style]] = OrderedDict()
        self._manifest: Any = None  # the open manifest (its footer read once per actor)
        self._group: tuple[int, pa.Table] | None = None  # the last manifest row group read
        self._classes: dict[str, int] | None = None  # label -> index, from the manifest's footer
        self.mixes_styles = bool(getattr(self.model, "per_sample_styles", False))
        self.calls = 0
        self.images_in_calls = 0
        self.progress = (-1, 0, 0)  # (shard, rows done, rows failed) of the shard running now
        self.videos = video_job.VideoShard(config, self.storage, self._frames, self._open_manifest, self._source)
        self._generation: dict[str, Any] | None = None  # this run's _plan.json (generation, bases, rerun)
        self._writer: writers.Writer = writers.FilesWriter(self.storage, None)  # the running shard's (run)
        self._weights_sha256: tuple[str | None] | None = None
        self._earlier: incremental.EarlierResults | None = None
        self.generation()  # read while the actor starts, not inside its first (possibly racing) task

    # --- reading -----------------------------------------------------------------------------

    def _columns(self) -> list[str]:
        extra = [c for c in (self.config.style_column, self.config.mask_column) if c]
        return ["image_id", "uri", *extra]

    def read_rows(self, start: int, count: int) -> pa.Table:
        """Rows ``start .. start+count`` of the manifest, only the columns this job reads."""
        pf = self._open_manifest()  # its columns were checked when the job was planned
        columns = self._columns() + [c for c in (*TAG_COLUMNS, LABEL_COLUMN) if c in pf.schema_arrow.names]
        pieces, first = [], 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = max(start, first), min(start + count, first + n)
            if lo < hi:
                if self._group is None or self._group[0] != g:
                    self._group = (g, pf.read_row_group(g, columns=columns))
                pieces.append(self._group[1].slice(lo - first, hi - lo))
            first += n
        return pa.concat_tables(pieces) if pieces else pa.table({c: pa.array([], pa.string()) for c in self._columns()})

    def _open_manifest(self) -> Any:
        from pipeline.manifest import open_manifest

        if self._manifest is None:
            self._manifest = open_manifest(self.config.manifest, self.config.storage_options or None)
        return self._manifest

    def classes(self) -> dict[str, int]:
        """``{label: index}`` of the manifest's class names (read once per actor; empty without labels)."""
        if self._classes is None:
            from pipeline.manifest import class_names

            self._classes = {name: i for i, name in enumerate(class_names(self._open_manifest()) or [])}
        return self._classes

    def _source(self, row: int) -> tuple[str, str, str]:
        """Manifest row ``row`` as (image_id, uri, style spec): what a video segment needs to run."""
        item = self._items(row // max(1, self.config.shard_rows), row, 1)[0]
        return item.row["image_id"], item.row["source_uri"], item.row["style"]

    def _frames(self, spec: str) -> FrameStylizer:
        config = self.config
        return frame_stylizer(
            self.model,
            self.styles(spec),
            alpha=config.alpha,
            preserve_color=config.preserve_color,
            tile_pixels=config.tile_pixels,
            style_scale=config.style_scale,
        )

    def styles(self, spec: str) -> list[Style]:
        """Parse a spec once (the last ``STYLE_CACHE`` specs are kept: dataset generation samples from
        thousands); image parts are read through the job's allowed schemes."""
        if spec in self._styles:
            self._styles.move_to_end(spec)
        else:
            styles = []
            for s in parse_style_spec(spec, load_images=False):
                if s.index is None and s.label and self.model.style_kind == "image":
                    image = to_tensor(decode_image(self._read(s.label)).array)
                    s = Style(image=image, weight=s.weight, label=s.label)
                styles.append(s)
            self._styles[spec] = styles
            while len(self._styles) > STYLE_CACHE:
                self._styles.popitem(last=False)
        return self._styles[spec]

    def _read(self, uri: str) -> bytes:
        return read_source(uri, self.config.allowed_schemes, self.config.storage_options or None)

    def generation(self) -> dict[str, Any]:
        """This run's ``_plan.json`` (read once per actor: a run is one generation)."""
        if self._generation is None:
            data = self.storage.read_if_exists(layout.PLAN_KEY)
            self._generation = json.loads(data) if data else {}
            bases = [int(g) for g in self._generation.get("bases", [])]
            if bases:
                listing = generations.listing(self.storage)
                files = [(g, key) for g in bases for key in sorted(listing.get(g, {}).values())]
                touched = incremental.touched_ids(self.storage, bases)
                ranges = incremental.read_ranges(self.storage, bases)
                self._earlier = incremental.EarlierResults(self.storage, files, touched, ranges)
        return self._generation

    def _items(self, shard: int, start: int, count: int) -> list[Item]:
        """The shard's rows as items, K per photo (``styles_per_image``; a video is one), in row then k order;
        the (photo, k) pairs kept from the earlier generation are marked ``kept``."""
        table = self.read_rows(start, count)
        ids = [str(v) if v is not None else "" for v in table.column("image_id").to_pylist()]
        uris = [str(v) if v is not None else "" for v in table.column("uri").to_pylist()]
        tags = source_tags(table).to_pylist()
        column = table.column(self.config.style_column).to_pylist() if self.config.style_column else None
        spec_sets = assign_style_sets(ids, self.config, column)
        masks = table.column(self.config.mask_column).to_pylist() if self.config.mask_column else [None] * len(ids)
        labels = table.column(LABEL_COLUMN).to_pylist() if LABEL_COLUMN in table.column_names else [None] * len(ids)
        classes = self.classes() if LABEL_COLUMN in table.column_names else {}
        rerun = str(self.generation().get("rerun", "new"))
        earlier = self._earlier.lookup(ids) if self._earlier is not None else {}
        items = []
        for i, (image_id, uri, tag, specs, mask) in enumerate(zip(ids, uris, tags, spec_sets, masks, strict=True)):
            label = str(labels[i]) if labels[i] is not None else None
            # the label is the manifest's, also on kept rows: relabelling a manifest needs no stylizing
            named = {"label": label, "label_index": classes.get(label) if label is not None else None}
            for k, spec in enumerate(specs[:1] if is_video(uri) else specs):
                old = earlier.get((image_id, k))
                kind, kept = incremental.classify(old, uri, tag, rerun)
                if kept:  # the earlier row, renumbered into this shard; its output stays as it is
                    row = {**old, "shard": shard, "row": start + i, "source_tag": tag, "k": k, **named}
                    items.append(Item(row, kept=True, kind=kind))
                    continue
                row = start_row(image_id, uri, shard, start + i, spec, self.config.stylizer, tag, k=k, **named)
                row["mask_uri"] = mask
                items.append(Item(row, kind=kind))
        return items

    # --- stages --------------------------------------------------------------------------------

    def decode(self, item: Item) -> Item:
        """Fetch and decode one row (in a pool thread); a bad input fails the row. The photo's other (photo, k)
        items (``item.siblings``) share the pixels, or the failure: a photo is read and decoded once."""
        from pipeline.manifest import row_problem

        t0 = time.perf_counter()
        stage: Stage = "read"
        try:
            problem = row_problem(item.row["image_id"], item.row["source_uri"], self.config.allowed_schemes)
            if problem:
                raise InputError(problem)
            data = self._read(item.row["source_uri"])
            mask_data = self._read(item.row["mask_uri"]) if item.row.get("mask_uri") else None
            stage = "decode"
            config = self.config
            if config.resize_shorter or config.center_crop:
                # a training crop: decoded (at a reduced scale where it can) to Resize(N)'s size, cropped, capped
                target = partial(shorter_side_size, shorter=config.resize_shorter) if config.resize_shorter else None
                decoded = decode_image(data, target=target)
                try:
                    array = training_crop(decoded.array, config.resize_shorter, config.center_crop)
                except ValueError as exc:  # smaller than center_crop: the photo's, told in one line
                    raise InputError(str(exc)) from None
                array = fit(array, config.max_side)
            else:
                decoded = decode_image(data, target=partial(fit_size, max_side=config.max_side))
                array = decoded.array
            item.row.update(width=decoded.source_width, height=decoded.source_height, note=decoded.note or "")
            pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
            if mask_data is not None:
                mask = to_tensor(decode_image(mask_data).array).mean(1, keepdim=True)
                item.mask = resize_masks(mask, tuple(pixels.shape[-2:]))
            item.pixels = pixels
        except MachineError:
            raise  # credentials refused for the whole store: no photo's fault (pipeline.storage)
        except Exception as exc:  # noqa: BLE001 - a bad input is a failed row, never a failed job
            item.fail(exc, stage)
            for other in item.siblings:
                other.fail(exc, stage)
        item.row["seconds_decode"] = time.perf_counter() - t0
        for other in item.siblings:
            if other.ok:  # the same tensors: each call copies its own float batch from them
                other.pixels, other.mask = item.pixels, item.mask
                other.row.update(width=item.row["width"], height=item.row["height"], note=item.row["note"])
            other.row["seconds_decode"] = 0.0  # the photo's one decode is counted on this item
        return item

    def weights_sha256(self) -> str | None:
        """The sha256 of the loaded model's weight files (``models.fetch.weights_digests``; None without a
        file), recorded with every sample of a dataset. Known once per actor."""
        if self._weights_sha256 is None:
            from pipeline.models.fetch import combined_sha256, weights_digests

            config = self.config
            digests = weights_digests(config.stylizer, config.weights, config.storage_options or None)
            self._weights_sha256 = (combined_sha256(digests),)
        return self._weights_sha256[0]

    def _sample_k(self, row: Row) -> int | None:
        """The row's style number in output names: None when each photo has one style (no ``-k``)."""
        return int(row.get("k") or 0) if self.config.styles_per_image > 1 else None

    def _write(self, item: Item, array: Any) -> str:
        """Encode one output and hand it to the shard's writer (in a pool thread). A photo the encoder refuses,
        or whose id makes no key, raises ``StageError``; a storage error escapes as it is (not the photo's: see
        ``run``). Returns its URI, or "" where the shard file names it at the end (``writers``)."""
        t0 = time.perf_counter()
        row = item.row
        ext = layout.extension(self.config.format)
        sample = writers.Sample(row["image_id"], self._sample_k(row), ext, b"")
        try:
            self._writer.check(sample)
        except Exception as exc:  # noqa: BLE001
            raise StageError("write", exc) from exc
        try:
            sample.data = encode_image(array, self.config.format, self.config.quality, self.config.png_level)
        except Exception as exc:  # noqa: BLE001
            raise StageError("encode", exc) from exc
        if self.config.output_format != "files":
            sample.fields = writers.sample_fields(row, self.config, self.weights_sha256())
        uri = self._writer.put(sample)
        row["seconds_encode"] = time.perf_counter() - t0
        row["finished_at"] = time.time()
        return uri

    def _model(self, content: torch.Tensor, styles: list[list[Style]], masks: torch.Tensor | None) -> torch.Tensor:
        """One model call through ``controls.stylize`` (every control, mixed styles or not); with a mask
        column, each mask's inside takes ``mask_style`` and its outside the image's own styles."""
        config = self.config
        if masks is not None:
            inside = self.styles(str(config.mask_style))
            regions = torch.cat([masks, 1 - masks], 1)
            masks = torch.cat([_expand_masks(regions[i : i + 1], inside, own) for i, own in enumerate(styles)])
            styles = [[*inside, *own] for own in styles]
        return stylize(
            self.model,
            content,
            styles,
            alpha=config.alpha,
            preserve_color=config.preserve_color,
            masks=masks,
            tile_pixels=config.tile_pixels,
            style_scale=config.style_scale,
        )

    @torch.inference_mode()
    def _call(self, items: list[Item], call: Call) -> None:
        """One model call over ``items`` at the call's size; outputs go to the writer threads."""
        t0 = time.perf_counter()
        size = (call.height, call.width)
        batch = torch.cat([resize(it.pixels.float().div_(255), size) for it in items]).to(self.device)
        masks = None
        if self.config.mask_column:
            masks = torch.cat([resize_masks(it.mask, size) for it in items]).to(self.device)
        styles = [self.styles(it.row["style"]) for it in items]
        out = self._model(batch, styles, masks).float()
        self.calls += 1
        self.images_in_calls += len(items)
        t1 = time.perf_counter()
        scores = None
        if self.scorer is not None:
            try:
                scores = self.scorer.score_batch(out, batch.float(), [it.row["style"] for it in items], styles)
            except Exception as exc:  # noqa: BLE001
                raise StageError("metrics", exc) from exc
        t2 = time.perf_counter()
        at_size = to_arrays(out) if all(tuple(it.pixels.shape[-2:]) == size for it in items) else None
        for i, item in enumerate(items):
            height, width = (int(n) for n in item.pixels.shape[-2:])
            pixels = at_size[i] if at_size is not None else to_array(resize(out[i : i + 1], (height, width)))
            item.row.update(
                out_height=height,
                out_width=width,
                seconds_stylize=(t1 - t0) / len(items),
                seconds_metrics=(t2 - t1) / len(items) if scores else None,
                **(scores[i] if scores else {}),
            )
            item.pixels = item.mask = None
            item.output = self.pool.submit(self._write, item, pixels)

    def _stylize(self, items: list[Item], call: Call) -> None:
        """A call that raises is split until only the culprit fails."""
        try:
            self._call(items, call)
        except MachineError:
            raise  # a style image refused for credentials: the machine's, not these photos'
        except Exception as exc:  # noqa: BLE001
            if len(items) == 1:
                stage, cause = (exc.stage, exc.cause) if isinstance(exc, StageError) else ("stylize", exc)
                items[0].fail(cause, stage)
                return
            for item in items:
                if item.ok and item.output is None and item.pixels is not None:
                    h, w = item.pixels.shape[-2:]
                    self._stylize([item], Call((0,), int(h), int(w)))

    def _windows(self, items: list[Item]) -> Iterator[tuple[list[Item], bool]]:
        """``(window, last)``: decoded items in groups of at most ``8 * batch_size`` images or ``WINDOW_PIXELS``;
        the pool decodes up to one group ahead while the caller stylizes this one. A photo's (photo, k) items
        are decoded once, by the first of them (``decode``), and arrive in the same window."""
        heads = _photos(items)
        limit = max(8 * self.config.batch_size, 16)
        futures = [self.pool.submit(self.decode, it) for it in heads[:limit]]
        window: list[Item] = []
        pixels = 0
        for n in range(len(heads)):
            item = futures[n].result()
            futures[n] = None  # type: ignore[call-overload]  # drop the reference: memory follows the window
            if n + limit < len(heads):
                futures.append(self.pool.submit(self.decode, heads[n + limit]))
            window += [item, *item.siblings]
            pixels += item.pixels.shape[-1] * item.pixels.shape[-2] if item.pixels is not None else 0
            if len(window) >= limit or pixels >= WINDOW_PIXELS or n == len(heads) - 1:
                yield window, n == len(heads) - 1
                window, pixels = [], 0

    def _report(self, shard: int, items: list[Item]) -> None:
        done = [it for it in items if it.output is not None or not it.ok]
        self.progress = (shard, len(done), sum(not it.ok for it in done))

    def _process(self, items: list[Item]) -> None:
        """Each window makes the calls that fill and carries its leftovers into the next, so that images of
        compatible sizes from different windows meet (``pipeline.batching``); the last window empties it.
        The carried pixels stay under half of ``WINDOW_PIXELS``: past that the leftovers run partly filled."""
        carried: list[Item] = []
        for window, last in self._windows(items):
            live = carried + [it for it in window if it.ok]
            sizes = [(int(it.pixels.shape[-2]), int(it.pixels.shape[-1])) for it in live]
            keys = [0 if self.mixes_styles and not self.config.mask_column else it.row["style"] for it in live]
            calls, left = plan_calls(sizes, keys, self.config.batch_size, final=last)
            if left and sum(sizes[i][0] * sizes[i][1] for i in left) > WINDOW_PIXELS // 2:
                calls, left = plan_calls(sizes, keys, self.config.batch_size, final=True)
            for call in calls:
                self._stylize([live[i] for i in call.items], call)
            carried = [live[i] for i in left]
            self._report(items[0].row["shard"], items)

    def _process_carefully(self, items: list[Item], marker: dict[str, Any]) -> None:
        """After a crash: one image at a time, each named in the marker before it is touched."""
        for item in items:
            if isinstance(self._writer, writers.FilesWriter):
                with contextlib.suppress(StylizeError):  # the crash may have cut a write short
                    ext = layout.extension(self.config.format)
                    self.storage.remove_partial(self._writer.key(item.row["image_id"], ext, self._sample_k(item.row)))
            if not self._suspect(item, marker):
                continue
            self.decode(item)
            if item.ok:
                h, w = item.pixels.shape[-2:]
                self._stylize([item], Call((0,), int(h), int(w)))
            if item.output is not None:
                _settle(item)  # the write is part of what may crash
            self._report(item.row["shard"], items)

    def _videos_carefully(self, items: list[Item], marker: dict[str, Any]) -> None:
        """After a crash: each video named in the marker before it runs; a repeat culprit fails."""
        for item in items:
            if self._suspect(item, marker):
                video_job.process_row(self.videos, item)

    def _suspect(self, item: Item, marker: dict[str, Any]) -> bool:
        """Name ``item`` in the shard's marker before it is touched (True), or fail it (False) once it has
        crashed the worker more than ``max_retries`` times."""
        image_id = item.row["image_id"]  # with K styles a photo, (photo, k) is the unit that may crash
        if self.config.styles_per_image > 1 and not is_video(item.row["source_uri"]):
            image_id = f"{image_id}#{int(item.row.get('k') or 0)}"
        gave_up = crash_limit(marker.setdefault("crashes", {}).get(image_id, 0), self.config.max_retries)
        if gave_up is not None:
            item.fail(gave_up, "stylize")  # the crash struck somewhere in its one-image pass; stylize is likeliest
            return False
        marker["suspect"] = image_id
        self.storage.put(marker["key"], json.dumps(marker).encode())
        return True

    def run_segment(self, row: int, index: int, start: int, stop: int | None) -> dict[str, Any]:
        """One segment of a long video (a work unit of the plan); see ``pipeline.video_job``."""
        return video_job.segment_task(self.videos, row, index, start, stop)

    # --- the shard -----------------------------------------------------------------------------

    def _marker(self, shard: int, generation: int = 0) -> dict[str, Any] | None:
        key = layout.attempt_key(shard, generation)
        data = self.storage.read_if_exists(key)
        if data is None:
            return None
        try:
            marker = json.loads(data)
        except ValueError:
            marker = {"attempt": 1}
        marker["key"] = key
        suspect = marker.pop("suspect", None)
        if suspect:
            marker.setdefault("crashes", {})[suspect] = marker.get("crashes", {}).get(suspect, 0) + 1
        return marker

    def run(self, shard: int, start: int, count: int) -> dict[str, Any]:
        """Process rows ``start .. start+count`` as shard ``shard`` and commit its metrics file."""
        t0 = time.perf_counter()
        self.calls = self.images_in_calls = 0
        self.progress = (shard, 0, 0)
        generation = int(self.generation().get("generation", 0))
        items = self._items(shard, start, count)
        todo = [it for it in items if not it.kept]
        videos = [it for it in todo if is_video(it.row["source_uri"])]  # pipeline.video_job, after the photos
        photos = [it for it in todo if not is_video(it.row["source_uri"])] if videos else todo
        marker = self._marker(shard, generation)
        # a plan lists colliding stems; one recorded before names were mirrored has none (its names kept the
        # source's extension, and so do the rest of its shards); no plan at all (a shard run alone): none collide
        collisions = self.generation().get("collisions", [] if not self.generation() else None)
        self._writer = writers.open_writer(
            self.config.output_format, self.storage, shard, generation, None if collisions is None else set(collisions)
        )
        try:
            if marker is None:
                # the ids whose outputs this attempt may write: a later generation must not keep older rows of them
                first = {"attempt": 1, "ids": list(dict.fromkeys(it.row["image_id"] for it in todo))}
                self.storage.put(layout.attempt_key(shard, generation), json.dumps(first).encode())
                self._process(photos)
                for item in videos:
                    video_job.process_row(self.videos, item)
            else:
                marker["attempt"] = int(marker.get("attempt", 1)) + 1
                self._process_carefully(photos, marker)
                self._videos_carefully(videos, marker)
            for item in items:
                if item.output is not None:
                    _settle(item)
                item.row.setdefault("finished_at", time.time())
            named = self._writer.finish()  # a shard file is whole before its commit marker
            for item in items:
                if item.output is not None and item.ok:
                    sample_id = (item.row["image_id"], self._sample_k(item.row))
                    item.row["output_uri"] = named.get(sample_id, item.row["output_uri"])
            summary = self._commit(shard, items, len(todo), generation, t0)
        except StorageError:
            self._give_back(items, marker, shard, generation)
            raise
        finally:
            self._writer.discard()
        with contextlib.suppress(StorageError):  # a leftover marker is harmless: committed shards are skipped
            self.storage.delete(layout.attempt_key(shard, generation))
        return summary

    def _commit(self, shard: int, items: list[Item], processed: int, generation: int, t0: float) -> dict[str, Any]:
        rows = [it.row for it in items]
        summary = shard_summary(
            rows,
            shard=shard,
            model_calls=self.calls,
            images_in_calls=self.images_in_calls,
            batch_size=self.config.batch_size,
            seconds=time.perf_counter() - t0,
            pid=os.getpid(),
            generation=generation,
            processed=processed,
            output_format=self.config.output_format,
            **_id_range(items),
            **{kind: sum(it.kind == kind for it in items) for kind in ("new", "changed", "unchanged")},
        )
        self.storage.put(layout.shard_key(shard, generation), shard_file(rows, summary))
        return summary

    def _give_back(self, items: list[Item], marker: dict[str, Any] | None, shard: int, generation: int) -> None:
        """A storage error ends this attempt (no commit): let the writes in flight finish, so none lands after
        the shard is given up, and take this attempt out of the marker (no image is blamed for the store's
        error; a first attempt's retry runs at full speed again)."""
        for item in items:
            if item.output is not None:
                with contextlib.suppress(Exception):
                    item.output.result()
        with contextlib.suppress(StorageError):  # the store may be what failed; the marker is a best effort
            if marker is None:
                self.storage.delete(layout.attempt_key(shard, generation))
            else:
                marker.pop("suspect", None)
                marker["attempt"] -= 1
                self.storage.put(marker["key"], json.dumps(marker).encode())

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _settle(item: Item) -> None:
    """Wait for ``item``'s write: its URI goes on the row, a photo's fault fails the row, a storage error
    raises (``run`` gives the shard up)."""
    assert item.output is not None
    try:
        item.row["output_uri"] = item.output.result()
    except StageError as exc:
        item.fail(exc.cause, exc.stage)


def _photos(items: list[Item]) -> list[Item]:
    """The first item of each photo (consecutive items of one manifest row), its others as its siblings."""
    heads: list[Item] = []
    for item in items:
        item.siblings = []
        if heads and heads[-1].row["row"] == item.row["row"]:
            heads[-1].siblings.append(item)
        else:
            heads.append(item)
    return heads


def _id_range(items: list[Item]) -> dict[str, str]:
    """The shard's smallest and largest image_id: the next generation reads this file only for ids between."""
    ids = [it.row["image_id"] for it in items if it.row["image_id"]]
    return {"first_id": min(ids), "last_id": max(ids)} if ids else {}


def _expand_masks(masks: torch.Tensor, inside: list[Style], outside: list[Style]) -> torch.Tensor:
    """(B,2,H,W) inside/outside -> one mask per style, each region's styles sharing it by weight."""

    def shares(styles: list[Style]) -> list[float]:
        total = sum(s.weight for s in styles) or 1.0
        return [s.weight / total for s in styles]

    parts = [masks[:, :1] * w for w in shares(inside)] + [masks[:, 1:] * w for w in shares(outside)]
    return torch.cat(parts, 1)


__all__ = ["Item", "ShardWorker"]
