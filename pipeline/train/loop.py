"""One worker's training run (no Ray here: ``launch.py`` runs it in-process or on Ray Train).

``train_loop(config)`` builds the family's ``Task`` (``registry.create``), resumes from the newest
checkpoint under ``output`` (weights, optimizer state and the step continue), then steps until
``steps``, writing a checkpoint (rank 0) every ``checkpoint_every`` steps and at the end. On a GPU
the forward passes run under ``torch.autocast`` (bf16 where supported, else fp16 with a
``GradScaler``); the losses are computed in float32. On CPU everything is float32.

Training data is drawn by counter (``data.ImageSampler``) and the model is seeded, so a run killed
and resumed at step ``s`` ends with the same weights and optimizer state as one never interrupted
(cyclegan's image pool of past fakes excepted: it restarts empty).
Progress leaves through two callbacks, ``on_step`` (every step) and ``note`` (one-off lines); this
module never prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, JobError, WeightsError
from pipeline.manifest import read_uri_list
from pipeline.models import vgg
from pipeline.train import registry
from pipeline.train.config import TrainConfig
from pipeline.train.data import ImageSampler, Prefetcher, shard
from pipeline.train.plots import sample_grid
from pipeline.train.store import (
    CheckpointStore,
    base_metadata,
    check_resume,
    load_optimizer_state,
    model_key,
    optimizer_state,
    trained_encoder,
)
from pipeline.train.task import Task

OnStep = Callable[[int, dict[str, float]], None]
Note = Callable[[str], None]

# seed streams of the samplers: training content, training styles, and the fixed sample-grid inputs
CONTENT, STYLE, GRID = 0, 1, 7919


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32. Mixed precision is for GPUs only."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def encoder_metadata(encoder: vgg.VGGEncoder) -> dict[str, str]:
    """What the stylizer needs to load the same VGG: its source id (or file) and a digest of a file."""
    meta = {"encoder": encoder.source, "encoder_arch": encoder.arch}
    if encoder.source not in vgg.ENCODER_SOURCES:
        from pipeline.models.weights import local_path, sha256_of, split_sha256

        meta["encoder_sha256"] = sha256_of(local_path(split_sha256(encoder.source)[0]))
    return meta


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") else net


def check_init_from(config: TrainConfig) -> None:
    """Refuse an ``--init-from`` checkpoint trained with another encoder: a decoder only inverts its own."""
    from pipeline.models.weights import read_metadata

    assert config.init_from
    saved = trained_encoder(read_metadata(config.init_from))
    if saved not in (None, config.encoder_weights):
        raise ConfigError(
            f"--init-from {config.init_from} was trained with encoder {saved!r}, "
            f"not {config.encoder_weights!r}; a decoder only inverts its own encoder"
        )


def warm_start(net: nn.Module, task: Task, config: TrainConfig) -> int:
    """Copy the tensors that ``config.init_from`` shares with ``net``; returns how many.

    The use: a SANet run starting from a trained AdaIN decoder (same layout, same encoder) skips the
    long phase where the decoder learns to invert VGG. Resuming an existing run takes precedence.
    """
    from pipeline.models.weights import load_into, load_state_dict

    check_init_from(config)
    assert config.init_from
    picked = task.net_state(load_state_dict(config.init_from))
    if not picked:
        raise WeightsError(f"--init-from {config.init_from} shares no tensors with {config.stylizer}")
    load_into(net, picked, what=f"--init-from {config.init_from}", partial=True)
    return len(picked)


def _quiet(*_: Any) -> None:
    pass


def train_loop(
    config_dict: dict[str, Any],
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    on_step: OnStep | None = None,
    note: Note | None = None,
) -> dict[str, Any]:
    """One worker's run; returns a summary (on rank 0 it names the final checkpoint)."""
    config = TrainConfig(**config_dict).resolved()
    assert config.steps and config.batch_size and config.lr is not None
    on_step = on_step or _quiet
    note = note if note is not None and rank == 0 else _quiet
    device = device or resolve_device(config.device)
    if config.cpus_per_worker:
        # more threads than free cores makes CPU training many times slower, not faster
        torch.set_num_threads(config.cpus_per_worker)
    torch.manual_seed(config.seed + rank)
    task = registry.create(config, device)
    dtype = amp_dtype(config.precision, device)
    task.amp = partial(torch.autocast, device_type=device.type, dtype=dtype) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = task.net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=task.adam_betas)
    store = CheckpointStore(config.output, config.stylizer)

    start = 0
    resumed = store.latest()
    if resumed is not None:
        check_resume(resumed.metadata, config, store.uri("checkpoints"))
        from pipeline.models.weights import load_into

        load_into(net, task.net_state(resumed.model), what=f"resumed {config.stylizer}")
        load_optimizer_state(optimizer, scaler, resumed.optimizer, resumed.optimizer_meta)
        start = resumed.step
        note(f"resuming {config.stylizer} from step {start} ({store.uri('checkpoints')})")
    elif config.init_from:
        loaded = warm_start(net, task, config)
        note(f"initialised {loaded} of {len(net.state_dict())} tensors from {config.init_from}")
    if wrap is not None:
        net = wrap(net)

    content_uris = read_uri_list(config.content_manifest, allowed_schemes=config.allowed_schemes)
    style_uris = (
        read_uri_list(config.style_manifest, allowed_schemes=config.allowed_schemes) if config.style_manifest else []
    )

    def sampler(uris: list[str], name: str, stream: int, size: int, drawn: int = 0) -> ImageSampler:
        return ImageSampler(
            uris,
            image_size=size,
            resize_to=config.resize_to if name == "content" else max(config.style_size or 0, size),
            seed=(config.seed, rank, stream),
            start=drawn,  # a resumed run continues the sequence of crops where the checkpoint left it
            cache_images=config.cache_images,
            allowed_schemes=config.allowed_schemes,
            name=name,
            flip=task.random_flip,
        )

    drawn = start * config.batch_size
    contents = sampler(shard(content_uris, rank, world_size), "content", CONTENT, config.image_size, drawn)
    styles = None
    if style_uris:
        styles = sampler(shard(style_uris, rank, world_size), "style", STYLE, config.image_size, drawn)
    grid_content = grid_style = None
    if rank == 0:  # the same sample grid inputs at every checkpoint
        grid_content = sampler(content_uris, "content", GRID, config.image_size).batch(config.samples)
        fixed_style = task.sample_style()
        grid_style = (
            fixed_style
            if fixed_style is not None
            else sampler(style_uris, "style", GRID, config.image_size).batch(config.samples)
        )

    prefetch = Prefetcher([contents, styles if task.needs_style_batches else None], config.batch_size)
    rows: list[dict[str, float]] = []
    last_uri = None
    step = start
    t_last = time.perf_counter()
    try:
        for step in range(start + 1, config.steps + 1):
            lr = task.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            content, style = prefetch.next()
            content = content.to(device, non_blocking=True)
            style = style.to(device, non_blocking=True) if style is not None else None
            terms = task.losses(net, content, style)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            values = {k: float(v.detach()) for k, v in terms.items()}
            if not math.isfinite(values["total"]) and not scaler.is_enabled():
                raise JobError(f"{config.stylizer} loss became {values['total']} at step {step}; lower --lr")
            now = time.perf_counter()
            rows.append({"step": step, **values, "lr": lr, "seconds": now - t_last})
            t_last = now
            on_step(step, values)
            if step % config.checkpoint_every == 0 or step == config.steps:
                if rank == 0:
                    skipped = {"skipped_content": contents.skipped}
                    if styles is not None:
                        skipped["skipped_style"] = styles.skipped
                    last_uri = save(
                        store, task, net, optimizer, scaler, config, step, rows, grid_content, grid_style, skipped
                    )
                    note(f"checkpoint {last_uri}")
                rows = []
    finally:
        prefetch.close()
    summary: dict[str, Any] = {"step": step, "skipped_content": contents.skipped, "skip_reasons": contents.reasons}
    if styles is not None:
        summary.update(skipped_style=styles.skipped, skip_reasons=contents.reasons + styles.reasons)
    if rank == 0:
        if last_uri is None and step == start and start > 0:
            last_uri = store.uri(model_key(config.stylizer, start))
        if last_uri is not None:
            summary["checkpoint"] = store.finish(step)
            summary["last_step_checkpoint"] = last_uri
            summary["losses"] = {k: v for k, v in store.loss_rows(step)[-1].items() if k not in ("step",)}
    return summary


def save(
    store: CheckpointStore,
    task: Task,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    config: TrainConfig,
    step: int,
    rows: list[dict[str, float]],
    grid_content: Tensor | None,
    grid_style: Tensor | None,
    skipped: dict[str, int],
) -> str:
    model = unwrap(net)
    losses = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("step", "lr", "seconds")}
    encoder = task.encoder
    source, arch = (encoder.source, encoder.arch) if encoder is not None else ("none", "none")
    meta = base_metadata(config, step=step, encoder=source, encoder_arch=arch, losses=losses)
    if encoder is not None:
        meta.update(encoder_metadata(encoder))
    meta.update(task.metadata())
    meta["skipped"] = json.dumps(skipped)  # bad manifest rows this worker skipped
    grid = None
    if grid_content is not None and grid_style is not None:
        device = next(model.parameters()).device
        out = task.stylize(model, grid_content.to(device), grid_style.to(device))
        grid = sample_grid(grid_content, grid_style.cpu(), out.cpu())
    return store.save(
        step,
        model=task.export(model),
        metadata=meta,
        optimizer=optimizer_state(optimizer, scaler),
        loss_rows=rows,
        grid=grid,
    )
