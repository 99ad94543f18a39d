"""A batch job on Ray: plan, hold the output's lease, dispatch shards to actors, then ``_SUCCESS``.

The driver plans (``pipeline.plan``: the manifest's footer, ``_plan.json``, one listing of
``metrics/``), hands pending shards and video segments to ``pipeline.dispatch`` (a queue of work
units over actors that may die) and receives one small summary per shard: it never reads an image
row or a pixel. Each actor holds a loaded stylizer and runs whole shards (``pipeline.shard``),
writing the outputs and the shard's metrics file itself. One run at a time writes an output: the
run holds its lease (``pipeline.lease``) from planning to ``_SUCCESS``. Progress goes to the caller's
bar and to the cluster's dashboards (``pipeline.raymetrics``).

Resume: a rerun plans the same shards, skips those whose metrics file exists and redoes the
rest under the same output keys, so a kill at any moment ends, after a rerun, with exactly one
metrics row per manifest row. A dead actor's shard goes back to the queue; the shard's attempt
marker then makes the retry go one image at a time (see ``pipeline.shard``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline import generations, incremental, layout, lease
from pipeline.config import JobConfig
from pipeline.errors import JobError, ManifestError, WeightsError
from pipeline.plan import Plan, inspect_manifest, make_plan
from pipeline.storage import Storage

Progress = Callable[[dict[str, Any]], None]
MIN_SPLIT_ROWS = 16


def open_storage(config: JobConfig) -> Storage:
    return Storage(config.output, config.storage_options or None)


def plan_job(config: JobConfig, *, write: bool = True) -> tuple[Storage, Plan]:
    """The job's plan, from the manifest's footer and what the output already holds (no Ray)."""
    storage = open_storage(config)
    info = inspect_manifest(config.manifest, config.storage_options or None)
    for column in (config.style_column, config.mask_column):
        if column and column not in info.columns:
            raise ManifestError(f"{config.manifest} has no column {column!r} (columns: {', '.join(info.columns)})")
    plan = make_plan(
        storage,
        info,
        shard_rows_for(config, info.rows),
        write=write,
        segment_frames=config.segment_frames,
        settings=generations.pixel_settings(config),
        rerun=config.rerun,
        mirrored=config.output_format == "files",
        keep_earlier=config.output_format == "files",  # a shard file holds all its rows: nothing kept
        storage_options=config.storage_options or None,
    )
    return storage, plan


def dry_run_counts(config: JobConfig, storage: Storage, plan: Plan) -> dict[str, int]:
    """new, changed, unchanged, deleted and to_process rows of this plan's generation, streamed (no Ray)."""
    if not plan.bases:
        return {"new": plan.rows, "changed": 0, "unchanged": 0, "deleted": 0, "to_process": plan.pending_rows()}
    return incremental.diff_counts(
        storage, _base_keys(storage, plan), config.manifest, config.storage_options or None, plan.rows, plan.rerun
    )


def _base_keys(storage: Storage, plan: Plan) -> list[str]:
    """The metrics files of the generations this plan keeps results from, newest generation first."""
    listing = generations.listing(storage)
    return [key for g in plan.bases for key in sorted(listing.get(g, {}).values())]


def shard_rows_for(config: JobConfig, rows: int) -> int:
    """``shard_rows``; unless the user chose it, a job too small to give every actor of an embedded Ray
    two shards gets smaller ones (at least ``MIN_SPLIT_ROWS``), so all cores work on it: one 256-row
    shard would leave 60 photos to a single actor. Only a new plan uses this; a rerun keeps its cut."""
    if "shard_rows" in config.model_fields_set or (os.environ.get("RAY_ADDRESS") and not config.actors):
        return config.shard_rows
    workers = config.actors or os.cpu_count() or 1
    return max(1, min(config.shard_rows, max(MIN_SPLIT_ROWS, -(-rows // (2 * workers)))))


def check_can_start(config: JobConfig) -> None:
    """Fail in the driver, with one line, on what would otherwise kill every actor at start-up."""
    from pipeline.models import get_card
    from pipeline.models.fetch import ensure_weights
    from pipeline.raysession import import_plugins

    import_plugins()
    card = get_card(config.stylizer)  # ModelNotFound lists the known names
    ensure_weights(config.stylizer, config.weights, config.storage_options or None)  # fetched once, before Ray
    if not config.weights:
        available, how = card.availability()
        if not available:
            raise WeightsError(f"stylizer {config.stylizer!r} has no weights here: {how}")
    if config.metrics:
        from pipeline.models.vgg import encoder_availability

        available, how = encoder_availability(config.encoder_weights or "auto")
        if not available:
            raise WeightsError(f"quality metrics need VGG weights: {how}; or set metrics=false")
    if config.style_manifest:
        from pipeline.styles import style_pool

        style_pool(config.style_manifest, config)
    elif not config.style_column and card.style_kind == "image":
        _check_style_images(config, [config.style, *([config.mask_style] if config.mask_style else [])])


def _check_style_images(config: JobConfig, specs: list[str]) -> None:
    """The job-wide style images exist and decode (else every row would fail in the actors)."""
    from pipeline.codec import decode_image
    from pipeline.errors import ConfigError, StylizeError
    from pipeline.storage import read_source
    from pipeline.styles import split_spec

    for spec in specs:
        for source, _ in split_spec(spec):
            if source.isdigit():
                continue
            try:
                decode_image(read_source(source, config.allowed_schemes, config.storage_options or None))
            except StylizeError as exc:
                raise ConfigError(f"style image {source}: {exc}") from None


def _checked_with_ray(config: JobConfig, address: str | None) -> bool:
    """``check_can_start`` in a thread while Ray starts (or is joined) here; True if Ray was started here.

    An embedded Ray takes 2.5-4 s to start on a small machine, and the checks (the model registry, the
    weights, the style images) about 1 s: side by side, the small job waits for the longer of the two
    only. Ray's start is mostly waiting on its own processes, so it holds the GIL little. Ray starts in
    this (the main) thread because its processes die with the thread that started them (Linux's
    parent-death signal follows the thread), and a pool's thread ends. A failed check still waits for the
    start, so the CLI's exit takes the embedded Ray down with it, and its one line is the one shown."""
    from pipeline.raysession import ensure_ray

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylize-checks") as pool:
        checking = pool.submit(check_can_start, config)
        try:
            started_here = ensure_ray(address)
        except BaseException:
            checking.result()  # a failed check explains more than Ray's start
            raise
        checking.result()
    return started_here


def _is_local() -> bool:
    import ray

    return len(ray.nodes()) == 1 and not os.environ.get("RAY_ADDRESS")


def run(
    config: JobConfig,
    *,
    progress: Progress | None = None,
    address: str | None = None,
    held: lease.Lease | None = None,
) -> dict[str, Any]:
    """Run (or resume) the job under the output's lease; returns the ``_SUCCESS`` summary. ``held``: a lease
    the caller already holds on this output (``stylize nightly`` holds it while it rebuilds the manifest too)."""
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if held is None:
            own = lease.held(open_storage(config), config.lease_seconds, wait=config.wait_for_lease)
            held = stack.enter_context(own)
        storage, plan = plan_job(config)
        per = config.styles_per_image  # progress counts (photo, k) pairs, as the shards report them
        done = (plan.rows - plan.pending_rows()) * per
        state = {"total": plan.rows * per, "done": done, "start_done": done, "failed": 0, "processed": 0, "rate": 0.0}
        finished = storage.read_if_exists(layout.SUCCESS_KEY) if not plan.pending else None
        if finished is not None and int(json.loads(finished).get("generation", 0)) == plan.generation:
            return json.loads(finished)
        fresh: list[dict[str, Any]] = []
        if plan.pending:
            if progress:
                progress(dict(state))
            started_here = _checked_with_ray(config, address)
            from pipeline.dispatch import Dispatch
            from pipeline.raymetrics import JobMetrics

            local = started_here or _is_local()
            dispatch = Dispatch(
                config,
                plan,
                state,
                local=local,
                progress=progress,
                lease=held,
                metrics=JobMetrics(storage.root_uri),
                storage=storage,
            )
            fresh = dispatch.run()
        return finish(config, storage, plan, fresh, wall=time.perf_counter() - start, processed=state["processed"])


def finish(
    config: JobConfig, storage: Storage, plan: Plan, fresh: list[dict[str, Any]], *, wall: float, processed: int
) -> dict[str, Any]:
    """Check every shard committed, then write ``_SUCCESS`` from the shard summaries (footers only)."""
    from pipeline import metrics

    done = {int(s["shard"]): s for s in fresh}
    listing = generations.listing(storage)
    committed = listing.get(plan.generation, {})
    missing = [s for s in range(plan.shards) if s not in committed]
    if missing:
        raise JobError(f"shards {missing[:5]} did not commit; rerun the job to finish them")
    for shard in range(plan.shards):
        if shard not in done:
            done[shard] = metrics.read_shard_summary(storage, committed[shard])
    summaries = [done[s] for s in range(plan.shards)]
    # a photo's K rows (styles_per_image) count once; summaries written before "photos" existed hold one row a photo
    photos = sum(int(s.get("photos", s["rows"])) for s in summaries)
    if photos != plan.rows:
        raise JobError(f"metrics hold {photos} photos for a manifest of {plan.rows}")
    counts = {k: sum(int(s.get(k, s["rows"] if k == "new" else 0)) for s in summaries) for k in ("new", "changed")}
    counts["unchanged"] = sum(int(s.get("unchanged", 0)) for s in summaries)
    counts["deleted"] = dry_run_counts(config, storage, plan)["deleted"]  # before the earlier files go
    # the new generation is whole: the earlier ones' files go, so metrics/ read as one dataset is the current view
    for generation, files in listing.items():
        if generation != plan.generation:
            for key in files.values():
                storage.delete(key)
    for key in storage.list(layout.SHARDS_PREFIX + "/"):  # shard files: each generation's hold all its rows
        parsed = layout.parse_shard_key(key, layout.CONTAINER_FILE)
        if parsed is not None and parsed[0] != plan.generation:
            storage.delete(key)
    incremental.write_index(storage, plan.generation, committed, summaries)
    for key in storage.list(layout.GENERATIONS_PREFIX + "/"):
        if key != layout.index_key(plan.generation):
            storage.delete(key)
    for key in storage.list(layout.ATTEMPTS_PREFIX + "/"):  # markers of abandoned generations: evidence no more
        parsed = layout.parse_shard_key(key, layout.ATTEMPT_FILE)
        if parsed is not None and parsed[0] != plan.generation:
            storage.delete(key)
    storage.prune(layout.ATTEMPTS_PREFIX)
    pruned = incremental.prune_outputs(storage, sorted(committed.values())) if config.prune else 0
    summary = metrics.summarize(
        summaries,
        config=config.public_dict(),
        wall_seconds=wall,
        processed=sum(int(s.get("processed", s["rows"])) for s in fresh) if fresh else processed,
        extra={
            "shards": plan.shards,
            "shard_rows": plan.shard_rows,
            "output": storage.root_uri,
            "generation": plan.generation,
            **counts,
            "pruned": pruned,
            "output_format": config.output_format,
            "shard_files": plan.shards if config.output_format != "files" else 0,
        },
    )
    write_dataset_card(config, storage, plan, sorted(committed.values()))
    storage.put(layout.SUCCESS_KEY, metrics.summary_bytes(summary))
    return summary


def write_dataset_card(config: JobConfig, storage: Storage, plan: Plan, metrics_keys: list[str]) -> None:
    """``dataset.json`` and ``README.md`` (``pipeline.card``), just before ``_SUCCESS``."""
    from pipeline import card
    from pipeline.models.fetch import combined_sha256, weights_digests

    digests = weights_digests(config.stylizer, config.weights, config.storage_options or None)  # {}: recorded as null
    document = card.build_card(
        config,
        storage,
        metrics_keys,
        generation=plan.generation,
        shards=plan.shards,
        weights=digests,
        weights_sha256=combined_sha256(digests),
    )
    card.write_card(storage, document)
