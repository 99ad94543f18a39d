"""Starting a training run: check everything that can be checked here, then train in-process or on Ray Train.

``run(config)`` first makes local paths absolute (Ray workers start in another directory) and
checks the inputs (``preflight``): the manifests read and have rows, the johnson style image
decodes, the encoder and ``--init-from`` files exist, the output is writable and holds no other
family's run. Only then is Ray started, so a typo is one ``error:`` line, not a Ray traceback.

With ``workers=0`` the loop runs in this process. Otherwise it runs as a Ray Train ``TorchTrainer``
with ``workers`` data-parallel workers: each reads its own shard of the manifests,
``prepare_model`` wraps the network in DDP, ``use_gpu`` is set when the cluster has GPUs. Ray's own
output stays in its session logs (``raysession.ensure_ray``: ``log_to_driver=False``); rank 0 sends
its progress to a small relay actor that this process polls into the progress display. A worker
that dies is restarted by Ray Train (``max_failures``) and resumes from the last checkpoint; so
does a rerun of the same command after a killed job.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.errors import (
    ConfigError,
    DecodeError,
    JobError,
    ManifestError,
    StorageError,
    StylizeError,
    WeightsError,
)
from pipeline.raysession import ensure_ray
from pipeline.train.config import TrainConfig
from pipeline.train.progress import StepLog

WRITE_CHECK = "_write_check"  # a key written and deleted once to prove the output is writable


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with every local path made absolute: Ray workers do not share this process's cwd."""
    from pipeline.models.vgg import ENCODER_SOURCES

    def fix(value: str | None) -> str | None:
        if value is None or not _is_local(value):
            return value
        return os.path.abspath(os.path.expanduser(value.removeprefix("file://")))

    update: dict[str, Any] = {
        k: fix(getattr(config, k)) for k in ("content_manifest", "style_manifest", "style", "output", "init_from")
    }
    if config.encoder_weights not in ENCODER_SOURCES:
        path, _, digest = config.encoder_weights.partition("#")
        update["encoder_weights"] = fix(path) + (f"#{digest}" if digest else "")
    return config.model_copy(update=update)


def _check_exists(uri: str, what: str) -> None:
    from pipeline.models.weights import split_sha256
    from pipeline.storage import open_fs

    fs, path = open_fs(split_sha256(uri)[0])
    try:
        found = fs.isfile(path)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot check {what} {uri}: {type(exc).__name__}: {exc}") from None
    if not found:
        raise WeightsError(f"{what} not found: {uri}")


def preflight(config: TrainConfig) -> None:
    """Raise the ``StylizeError`` that training would hit at its start, before any Ray worker exists."""
    from pipeline.codec import decode_image
    from pipeline.manifest import read_uri_list
    from pipeline.models.vgg import ENCODER_SOURCES
    from pipeline.storage import Storage, read_source
    from pipeline.train.loop import check_init_from
    from pipeline.train.store import CheckpointStore, check_resume

    for name, manifest in (("content", config.content_manifest), ("style", config.style_manifest)):
        if manifest is not None and not read_uri_list(manifest, allowed_schemes=config.allowed_schemes):
            raise ManifestError(f"the {name} manifest {manifest} lists no images")
    if config.style:
        try:
            decode_image(read_source(config.style, config.allowed_schemes))
        except StorageError as exc:
            raise StorageError(f"style image: {exc}") from None
        except DecodeError as exc:
            raise DecodeError(f"style image {config.style}: {exc}") from None
    if config.encoder_weights not in ENCODER_SOURCES:
        _check_exists(config.encoder_weights, "encoder weights")
    storage = Storage(config.output)
    try:
        storage.put(WRITE_CHECK, b"")
        storage.delete(WRITE_CHECK)
    except StorageError as exc:
        raise StorageError(f"the output {config.output} is not writable: {exc}") from None
    store = CheckpointStore(config.output, config.stylizer)
    latest = store.latest_metadata()  # ConfigError when it holds another family's checkpoints
    if latest is not None:
        check_resume(latest, config, store.uri("checkpoints"))
    elif config.init_from:  # a resumed run ignores --init-from
        _check_exists(config.init_from, "--init-from checkpoint")
        check_init_from(config)


def _runs_here(address: str | None) -> bool:
    """True when training runs on this machine's devices: in-process or on an embedded local Ray."""
    return not (address or os.environ.get("RAY_ADDRESS") or "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ)


def run(config: TrainConfig, *, address: str | None = None, progress: StepLog | None = None) -> dict[str, Any]:
    """Train: in this process for ``workers=0``, else on Ray Train; returns the final summary."""
    config = absolute_paths(config.resolved())
    if _runs_here(address) or config.workers == 0:
        from pipeline.devices import resolve_device

        resolve_device(config.device)  # a device this machine lacks is one line, before anything starts
    preflight(config)
    progress = progress or StepLog(config.stylizer, config.steps or 0, every=config.log_every)
    try:
        if config.workers == 0:
            from pipeline.train.loop import train_loop

            return train_loop(config.model_dump(mode="json"), on_step=progress.step, note=progress.note)
        return _run_ray(config, address, progress)
    finally:
        progress.close()


# --- Ray Train ------------------------------------------------------------------------------------


class Relay:
    """A Ray actor holding rank 0's progress events until the driver takes them."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def put(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events


def worker_entry(relay: Any, use_gpu: bool) -> Callable[[dict[str, Any]], None]:
    """The ``TorchTrainer`` entry: rank, device and DDP come from Ray Train; progress goes to ``relay``."""

    def entry(config_dict: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        from pipeline.devices import resolve_device
        from pipeline.train.loop import train_loop

        ctx = ray.train.get_context()
        rank = ctx.get_world_rank()
        # without a reserved GPU Ray Train's device is the CPU; --device mps is this worker's own choice
        device = ray.train.torch.get_device() if use_gpu else resolve_device(config_dict["device"])
        train_loop(
            config_dict,
            rank=rank,
            world_size=ctx.get_world_size(),
            device=device,
            wrap=ray.train.torch.prepare_model if ctx.get_world_size() > 1 else None,
            # stamped here: the driver takes events in batches, so its own clock would misjudge steps/s
            on_step=(lambda step, values: relay.put.remote(("step", step, values, time.time()))) if rank == 0 else None,
            note=lambda text: relay.put.remote(("note", text)),
        )
        # the driver reads the outcome from the final checkpoint (summary_from_store)

    return entry


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: Ray Train's worker failures, Ray's task errors, ``__cause__``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += list((getattr(err, "worker_failures", None) or {}).values())
        todo += [getattr(err, a, None) for a in ("_base_exc", "cause", "controller_failure", "__cause__")]


def worker_error(exc: BaseException) -> StylizeError:
    """The one-line error for a failed ``fit()``: the worker's own ``StylizeError`` when there is one."""
    ours = [err for err in _causes(exc) if isinstance(err, StylizeError)]
    for err in ours:
        if type(err).__module__.startswith("pipeline."):  # the worker's exception itself, unpickled
            return err
    if ours:  # only Ray's wrapper, which subclasses it but prints a traceback: rebuild a plain one
        base = next(c for c in type(ours[0]).__mro__ if c.__module__.startswith("pipeline."))
        lines = [line for line in str(ours[0]).splitlines() if line.strip()]
        return base(lines[-1] if lines else base.__name__)
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return JobError(f"training failed: {lines[-1] if lines else type(exc).__name__}")


def run_name(config: TrainConfig) -> str:
    return f"stylize-train-{config.stylizer}-{hashlib.sha256(config.output.encode()).hexdigest()[:10]}"


def _run_ray(config: TrainConfig, address: str | None, progress: StepLog) -> dict[str, Any]:
    started = ensure_ray(address)
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if config.device.startswith("cuda") and gpus < config.workers:
            raise ConfigError(f"--device cuda with {config.workers} workers needs as many GPUs; the cluster has {gpus}")
        use_gpu = config.device.startswith("cuda") or (config.device == "auto" and 0 < config.workers <= gpus)
        cpus = config.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // config.workers)
        config = config.model_copy(update={"cpus_per_worker": cpus})
        relay = ray.remote(num_cpus=0)(Relay).remote()
        trainer = TorchTrainer(
            worker_entry(relay, use_gpu),
            train_loop_config=config.model_dump(mode="json"),
            scaling_config=ScalingConfig(
                num_workers=config.workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(
                name=run_name(config),
                storage_path=f"{config.output.rstrip('/')}/_ray",
                failure_config=FailureConfig(max_failures=config.max_failures),
            ),
        )
        done = threading.Event()

        def relay_events() -> None:
            while True:
                finished = done.wait(0.5)
                try:
                    events = ray.get(relay.take.remote())
                except Exception:  # noqa: BLE001 - progress is best effort; fit() reports the outcome
                    return
                for kind, *args in events:
                    if kind == "step":
                        progress.step(*args)
                    else:
                        progress.note(*args)
                if finished:
                    return

        poller = threading.Thread(target=relay_events, name="train-progress", daemon=True)
        poller.start()
        try:
            trainer.fit()
        except Exception as exc:  # noqa: BLE001 - TrainingFailedError wraps the worker's error
            raise worker_error(exc) from None
        finally:
            done.set()
            poller.join(timeout=10)
        return summary_from_store(config)
    finally:
        if started:
            ray.shutdown()  # an embedded Ray ends with the command, its logs stay in its session dir


def summary_from_store(config: TrainConfig) -> dict[str, Any]:
    """The finished run as its final checkpoint records it (Ray Train keeps only checkpointed metrics)."""
    from pipeline.models.weights import read_metadata
    from pipeline.train.store import CheckpointStore

    store = CheckpointStore(config.output, config.stylizer)
    final = store.uri(f"{config.stylizer}.safetensors")
    meta = read_metadata(final)
    summary: dict[str, Any] = {"step": int(meta["step"]), "checkpoint": final}
    rows = store.loss_rows(summary["step"])  # the last step's losses, as an in-process run reports them
    summary["losses"] = {k: v for k, v in rows[-1].items() if k != "step"} if rows else json.loads(meta["losses"])
    summary.update(json.loads(meta.get("skipped", "{}")))
    return summary
