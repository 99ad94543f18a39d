"""The training loop and its Ray Train wiring.

``train_loop(config)`` is one worker's whole run: build the family's ``Task``, resume from the
newest checkpoint under ``output`` (the step continues), then step until ``steps``, writing a
checkpoint (rank 0) every ``checkpoint_every`` steps and at the end. It runs as is in-process
(``--workers 0``) or, through ``run``, as a Ray Train ``TorchTrainer`` with ``workers`` data-parallel
workers: each reads its own shard of the manifests, ``prepare_model`` wraps the network in DDP,
``use_gpu`` is set when the cluster has GPUs. On a GPU the forward passes run under
``torch.autocast`` (bf16 where supported, else fp16 with a ``GradScaler``); the losses are
computed in float32. On CPU everything is float32.

A worker that dies is restarted by Ray Train (``max_failures``) and resumes from the last
checkpoint; so does a rerun of the same command after a killed job.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.codec import decode_image, to_tensor
from pipeline.errors import ConfigError, JobError, WeightsError
from pipeline.models import vgg
from pipeline.storage import read_source
from pipeline.train.common import (
    CheckpointStore,
    Task,
    TrainConfig,
    base_metadata,
    check_resume,
    load_optimizer_state,
    optimizer_state,
    sample_grid,
    trained_encoder,
)
from pipeline.train.data import ImageSampler, Prefetcher, read_uris, resize_shorter, shard

Report = Callable[[dict[str, Any]], None]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32. Mixed precision is for GPUs only."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def read_style_image(uri: str, size: int, allowed_schemes: list[str]) -> Tensor:
    """The johnson style image, shorter side ``size``, (1,3,h,w) in [0,1]."""
    array = decode_image(read_source(uri, allowed_schemes)).array
    return to_tensor(resize_shorter(array, size))


def load_task(config: TrainConfig, device: torch.device) -> Task:
    from pipeline.train.adain import AdaINTask
    from pipeline.train.johnson import JohnsonTask
    from pipeline.train.sanet import SANetTask

    last = {"johnson": "relu5_1", "adain": AdaINTask.encoder_last, "sanet": SANetTask.encoder_last}[config.stylizer]
    encoder = vgg.load_encoder(config.encoder_weights, last=last, device=device)
    if config.stylizer == "johnson":
        assert config.style and config.style_size
        style = read_style_image(config.style, config.style_size, config.allowed_schemes)
        missing = [n for n in (config.content_layers or []) + (config.style_layers or []) if n not in encoder.plan]
        if missing:
            raise ConfigError(f"{encoder.source} ({encoder.arch}) has no layers {missing}")
        return JohnsonTask(config, encoder, style)
    if config.stylizer == "adain":
        return AdaINTask(config, encoder)
    return SANetTask(config, encoder)


def encoder_metadata(encoder: vgg.VGGEncoder) -> dict[str, str]:
    """What the stylizer needs to load the same VGG: its source id (or file) and a digest of a file."""
    meta = {"encoder": encoder.source, "encoder_arch": encoder.arch}
    if encoder.source not in vgg.ENCODER_SOURCES:
        from pipeline.models.weights import local_path, sha256_of, split_sha256

        meta["encoder_sha256"] = sha256_of(local_path(split_sha256(encoder.source)[0]))
    return meta


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if hasattr(net, "module") else net


def net_state(task: Task, saved: dict[str, Tensor]) -> dict[str, Tensor]:
    """The trainable network's own keys from a saved checkpoint (inverse of ``task.export``)."""
    prefix = "decoder." if task.stylizer == "adain" else ""
    own = task.net.state_dict()
    return {k: saved[prefix + k] for k in own if prefix + k in saved}


def warm_start(net: nn.Module, task: Task, config: TrainConfig) -> int:
    """Copy the tensors that ``config.init_from`` shares with ``net``; returns how many.

    The use: a SANet run starting from a trained AdaIN decoder (same layout, same encoder) skips the
    long phase where the decoder learns to invert VGG. Resuming an existing run takes precedence.
    """
    from pipeline.models.weights import load_into, load_state_dict, read_metadata

    assert config.init_from
    saved = trained_encoder(read_metadata(config.init_from))
    if saved not in (None, config.encoder_weights):
        raise ConfigError(
            f"--init-from {config.init_from} was trained with encoder {saved!r}, "
            f"not {config.encoder_weights!r}; a decoder only inverts its own encoder"
        )
    picked = net_state(task, load_state_dict(config.init_from))
    if not picked:
        raise WeightsError(f"--init-from {config.init_from} shares no tensors with {config.stylizer}")
    load_into(net, picked, what=f"--init-from {config.init_from}", partial=True)
    return len(picked)


def train_loop(
    config_dict: dict[str, Any],
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    report: Report | None = None,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """One worker's run; returns a summary (on rank 0 it names the final checkpoint)."""
    config = TrainConfig(**config_dict).resolved()
    assert config.steps and config.batch_size and config.lr is not None
    device = device or resolve_device(config.device)
    if config.cpus_per_worker:
        # more threads than free cores makes CPU training many times slower, not faster
        torch.set_num_threads(config.cpus_per_worker)
    torch.manual_seed(config.seed + rank)
    task = load_task(config, device)
    dtype = amp_dtype(config.precision, device)
    task.amp = partial(torch.autocast, device_type=device.type, dtype=dtype) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    net = task.net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    store = CheckpointStore(config.output, config.stylizer)

    start = 0
    resumed = store.latest()
    if resumed is not None:
        check_resume(resumed.metadata, config, store.uri("checkpoints"))
        from pipeline.models.weights import load_into

        load_into(net, net_state(task, resumed.model), what=f"resumed {config.stylizer}")
        load_optimizer_state(optimizer, scaler, resumed.optimizer, resumed.optimizer_meta)
        start = resumed.step
        if rank == 0:
            print(f"resuming {config.stylizer} from step {start} ({store.uri('checkpoints')})", flush=True)
    elif config.init_from:
        loaded = warm_start(net, task, config)
        if rank == 0:
            print(f"initialised {loaded} of {len(net.state_dict())} tensors from {config.init_from}", flush=True)
    if wrap is not None:
        net = wrap(net)

    content_uris = read_uris(config.content_manifest, config.allowed_schemes)
    style_uris = read_uris(config.style_manifest, config.allowed_schemes) if config.style_manifest else []

    def sampler(uris: list[str], name: str, rng: np.random.Generator, size: int) -> ImageSampler:
        return ImageSampler(
            uris,
            image_size=size,
            resize_to=config.resize_to if name == "content" else max(config.style_size or 0, size),
            rng=rng,
            cache_images=config.cache_images,
            allowed_schemes=config.allowed_schemes,
            name=name,
        )

    # a resumed run draws new crops, deterministically for its (seed, rank, start step)
    rng = np.random.default_rng([config.seed, rank, start])
    contents = sampler(shard(content_uris, rank, world_size), "content", rng, config.image_size)
    styles = sampler(shard(style_uris, rank, world_size), "style", rng, config.image_size) if style_uris else None
    fixed = np.random.default_rng([config.seed, 7919])  # the same sample grid inputs at every checkpoint
    grid_content = grid_style = None
    if rank == 0:
        grid_content = sampler(content_uris, "content", fixed, config.image_size).batch(config.samples)
        fixed_style = task.sample_style()
        grid_style = (
            fixed_style
            if fixed_style is not None
            else sampler(style_uris, "style", fixed, config.image_size).batch(config.samples)
        )

    prefetch = Prefetcher([contents, styles if task.needs_style_batches else None], config.batch_size)
    rows: list[dict[str, float]] = []
    last_uri = None
    step = start
    t_last = time.perf_counter()
    try:
        for step in range(start + 1, config.steps + 1):
            lr = config.lr / (1.0 + float(config.lr_decay or 0) * (step - 1))
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
            if on_step is not None:
                on_step(step, values)
            if step % config.log_every == 0 or step == config.steps:
                metrics = {"step": step, **values, "skipped_content": contents.skipped}
                if styles is not None:
                    metrics["skipped_style"] = styles.skipped
                if rank == 0:
                    shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
                    print(
                        f"[{config.stylizer}] step {step}/{config.steps} {shown} ({rows[-1]['seconds']:.2f}s)",
                        flush=True,
                    )
                if report is not None:
                    report(metrics)
            if step % config.checkpoint_every == 0 or step == config.steps:
                if rank == 0:
                    skipped = {"skipped_content": contents.skipped}
                    if styles is not None:
                        skipped["skipped_style"] = styles.skipped
                    last_uri = save(
                        store, task, net, optimizer, scaler, config, step, rows, grid_content, grid_style, skipped
                    )
                rows = []
    finally:
        prefetch.close()
    summary: dict[str, Any] = {"step": step, "skipped_content": contents.skipped, "skip_reasons": contents.reasons}
    if styles is not None:
        summary.update(skipped_style=styles.skipped, skip_reasons=contents.reasons + styles.reasons)
    if rank == 0:
        if last_uri is None and step == start and start > 0:
            last_uri = store.uri(f"checkpoints/{config.stylizer}-step{start:08d}.safetensors")
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
    meta = base_metadata(config, step=step, encoder=task.encoder.source, encoder_arch=task.encoder.arch, losses=losses)
    meta.update(encoder_metadata(task.encoder))
    meta.update(task.metadata())
    meta["skipped"] = json.dumps(skipped)  # bad manifest rows this worker skipped
    grid = None
    if grid_content is not None and grid_style is not None:
        device = next(model.parameters()).device
        out = task.stylize(model, grid_content.to(device), grid_style.to(device))
        grid = sample_grid(grid_content, grid_style.cpu(), out.cpu())
    uri = store.save(
        step,
        model=task.export(model),
        metadata=meta,
        optimizer=optimizer_state(optimizer, scaler),
        loss_rows=rows,
        grid=grid,
    )
    print(f"[{config.stylizer}] checkpoint {uri}", flush=True)
    return uri


# --- Ray Train ------------------------------------------------------------------------------------


def train_loop_per_worker(config_dict: dict[str, Any]) -> None:
    """The ``TorchTrainer`` entry: rank, device and DDP come from Ray Train."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    summary = train_loop(
        config_dict,
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        report=lambda m: ray.train.report(m),
        wrap=ray.train.torch.prepare_model,
    )
    del summary  # the driver reads the outcome from the final checkpoint (summary_from_store)


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` / ``$RAY_ADDRESS``, or start a local Ray that prints the workers' logs."""
    import ray

    if ray.is_initialized():
        return
    from pipeline.runner import repo_root

    path = os.pathsep.join(p for p in (repo_root(), os.environ.get("PYTHONPATH", "")) if p)
    env = {"env_vars": {"PYTHONPATH": path}}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=env)
    else:
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        # "local": a new cluster even when another one on this machine would be auto-detected
        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, runtime_env=env)


def run_name(config: TrainConfig) -> str:
    return f"stylize-train-{config.stylizer}-{hashlib.sha256(config.output.encode()).hexdigest()[:10]}"


def run(config: TrainConfig, *, address: str | None = None) -> dict[str, Any]:
    """Train: in this process for ``workers=0``, else on Ray Train; returns the final summary/metrics."""
    config = config.resolved()
    if config.workers == 0:
        return train_loop(config.model_dump(mode="json"))
    ensure_ray(address)
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if config.device.startswith("cuda") and gpus < config.workers:
        raise ConfigError(f"--device cuda with {config.workers} workers needs as many GPUs; the cluster has {gpus}")
    use_gpu = config.device.startswith("cuda") or (config.device == "auto" and gpus >= config.workers)
    cpus = config.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // config.workers)
    config = config.model_copy(update={"cpus_per_worker": cpus})
    storage = config.output if "://" in config.output else os.path.abspath(config.output)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(
            name=run_name(config),
            storage_path=f"{storage.rstrip('/')}/_ray",
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - TrainingFailedError wraps the worker's error
        raise JobError(f"training failed: {exc}") from exc
    return summary_from_store(config)


def summary_from_store(config: TrainConfig) -> dict[str, Any]:
    """The finished run as its final checkpoint records it (Ray Train keeps only checkpointed metrics)."""
    from pipeline.models.weights import read_metadata

    store = CheckpointStore(config.output, config.stylizer)
    final = store.uri(f"{config.stylizer}.safetensors")
    meta = read_metadata(final)
    summary: dict[str, Any] = {"step": int(meta["step"]), "checkpoint": final}
    summary["losses"] = json.loads(meta.get("losses", "{}"))
    summary.update(json.loads(meta.get("skipped", "{}")))
    return summary
