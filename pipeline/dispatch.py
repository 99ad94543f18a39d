"""The work of a batch job on Ray actors that may die: an explicit dispatch loop.

Work units (a long video's segments first, then shards) wait in a queue; each live actor runs one at a
time. The driver waits on the running units with a timeout, so it sees, every ``POLL_SECONDS``:

* a unit that finished: its summary is kept (a shard's) and the actor takes the next unit;
* an actor that died (its process, or its node): the unit goes back to the front of the queue for any
  live actor, the dead actor is dropped, and a replacement starts once the cluster has room. Actors are
  never restarted by Ray (``max_restarts=0``): a restart would wait for a CPU that a surviving actor
  holds, and the pool shrinks instead. A unit that keeps killing actors is bounded twice: the shard's
  attempt marker makes each retry go one image at a time and fail a repeat culprit (``pipeline.shard``),
  and after ``max_retries + 2`` deaths of one unit that the marker does not blame on an image (a crash
  outside any image, a lost node between images) the run fails naming it;
* a unit that raised: ``MachineError`` stops the run at once; a plain ``StorageError`` is retried up to
  ``shard_retries`` times; anything else fails the run. Each is one line;
* no unit finished and no actor's progress counter moved for ``stall_timeout`` seconds (a running
  segment's claim heartbeat counts too): the run fails naming the units it waited for. A rerun resumes.

The pool starts at ``min_actors`` and grows one actor at a time to its size while units wait and the
cluster has room (``ray.available_resources``). On a cluster with ``actors`` unset its size is what
fits in the cluster's resources now, so it follows an autoscaling cluster.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline import layout
from pipeline.config import JobConfig
from pipeline.errors import JobError, LeaseError, MachineError, StorageError, StylizeError
from pipeline.plan import Plan

Progress = Callable[[dict[str, Any]], None]
POLL_SECONDS = 0.5
START_FAILURES = 3  # actors that die before taking any work, in a row, before the run gives up


@dataclass
class Unit:
    """One shard or one video segment, as the driver dispatches it."""

    name: str  # "shard 3", "segment 12.0": what one-line errors call it
    method: str  # the actor method that runs it
    args: tuple[Any, ...]
    shard: int | None = None  # the shard number (progress reports name it); None for a segment
    deaths: int = 0
    storage_errors: int = 0
    segment: tuple[int, int] | None = None  # (row, index) of a segment


@dataclass
class Slot:
    """One actor: starting (``ping`` pending), idle, or running ``unit`` (``ref`` pending)."""

    actor: Any
    ping: Any = None
    unit: Unit | None = None
    ref: Any = None
    probe: Any = None  # an outstanding ``progress`` call
    report: tuple[int, int, int] = field(default=(-1, 0, 0))


def work_units(plan: Plan) -> list[Unit]:
    """Segments first: every segment is running or done before the shard that joins them waits."""
    units = [
        Unit(f"segment {s.row}.{s.index}", "run_segment", (s.row, s.index, s.start, s.stop), segment=(s.row, s.index))
        for s in plan.pending_segments
    ]
    for shard in plan.pending:
        start, count = plan.shard_range(shard)
        units.append(Unit(f"shard {shard}", "run", (shard, start, count), shard=shard))
    return units


def actor_class() -> Any:
    import ray

    from pipeline.shard import ShardWorker

    # no restarts, no task retries: a dead actor's unit is requeued by the driver for any live actor
    @ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
    class ShardActor:
        """One loaded stylizer; ``run`` owns a shard, ``progress`` answers while it runs."""

        def __init__(self, config_json: str, threads: int) -> None:
            self.worker = ShardWorker(JobConfig.model_validate_json(config_json), threads=threads)

        def run(self, shard: int, start: int, count: int) -> dict[str, Any]:
            return self.worker.run(shard, start, count)

        def run_segment(self, row: int, index: int, start: int, stop: int | None) -> dict[str, Any]:
            return self.worker.run_segment(row, index, start, stop)

        def progress(self) -> tuple[int, int, int]:
            return self.worker.progress

    return ShardActor


def fits(config: JobConfig) -> int:
    """How many actors the cluster's resources hold now (GPUs / gpus_per_actor, else CPUs / cpus_per_actor)."""
    import ray

    total = ray.cluster_resources()
    if config.gpus_per_actor:
        return int(total.get("GPU", 0) // config.gpus_per_actor)
    if config.cpus_per_actor:
        return int(total.get("CPU", 0) // config.cpus_per_actor)
    return int(total.get("CPU", 1)) or 1


def pool_size(config: JobConfig, local: bool, units: int) -> tuple[int, int]:
    """(most actors, threads per actor). An embedded Ray owns this machine: without GPUs it runs one
    actor per core by default, as many as there are units, sharing the cores (measured faster than
    one actor with all cores: the Python side of each shard runs in parallel too). On a cluster,
    ``actors`` unset fills what the cluster holds, each actor with its reserved CPUs as threads."""
    import ray

    if local and not config.gpus_per_actor:
        total = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(config.actors or total, units))
        return actors, max(1, total // actors)
    return max(1, min(config.actors or fits(config), units)), max(1, int(config.cpus_per_actor or 1))


def _room_for_one(config: JobConfig) -> bool:
    import ray

    free = ray.available_resources()
    return free.get("CPU", 0) >= (config.cpus_per_actor or 0) and free.get("GPU", 0) >= (config.gpus_per_actor or 0)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _cause(exc: BaseException) -> BaseException:
    """The exception a task raised inside the actor, out of Ray's ``RayTaskError`` wrapper."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    with contextlib.suppress(Exception):
        return exc.as_instanceof_cause()  # type: ignore[attr-defined]
    return exc


class Dispatch:
    """One run of the loop over ``plan``'s pending units; ``run()`` returns the shards' summaries."""

    def __init__(
        self,
        config: JobConfig,
        plan: Plan,
        state: dict[str, Any],
        *,
        local: bool,
        progress: Progress | None = None,
        lease: Any = None,
        metrics: Any = None,
        storage: Any = None,
    ) -> None:
        self.config, self.plan, self.state = config, plan, state
        self.local, self.progress, self.lease, self.metrics, self.storage = local, progress, lease, metrics, storage
        self.queue: collections.deque[Unit] = collections.deque(work_units(plan))
        self.outstanding = len(self.queue)
        self.most, self.threads = pool_size(config, local, self.outstanding)
        self.actor_cls = actor_class().options(num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor)
        self.payload = config.model_dump_json()
        self.slots: list[Slot] = []
        self.summaries: list[dict[str, Any]] = []
        self.start_failures = 0
        self.last_progress = time.monotonic()

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        import ray

        t0 = time.perf_counter()
        try:
            first = min(self.config.min_actors or self.most, self.most, self.outstanding)
            self.slots = [self._spawn() for _ in range(first)]
            while self.outstanding:
                if self.lease is not None and self.lease.lost.is_set():
                    raise LeaseError(f"another run took over the lease on {self.config.output}; stopping this one")
                self._grow()
                self._assign()
                refs = [r for s in self.slots for r in (s.ref, s.ping) if r is not None]
                if refs:
                    ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                    self._collect(set(ready))
                else:
                    time.sleep(POLL_SECONDS)
                self._probe()
                self._report(time.perf_counter() - t0)
                self._check_stall()
        finally:
            for slot in self.slots:
                with contextlib.suppress(Exception):
                    ray.kill(slot.actor)
        return self.summaries

    def _spawn(self) -> Slot:
        actor = self.actor_cls.remote(self.payload, self.threads)
        return Slot(actor, ping=actor.progress.remote())  # answers once __init__ (the model load) is done

    def _grow(self) -> None:
        """One more actor while units wait, the pool is under its size and the cluster has room; never
        more than one starting at a time (resources show up as taken only once it is placed)."""
        idle = sum(s.ping is None and s.unit is None for s in self.slots)
        if len(self.queue) <= idle or any(s.ping is not None for s in self.slots):
            return
        most = self.most if self.local or self.config.actors else max(1, fits(self.config))
        if len(self.slots) < min(most, self.outstanding) and _room_for_one(self.config):
            self.slots.append(self._spawn())

    def _assign(self) -> None:
        for slot in self.slots:
            if slot.ping is None and slot.unit is None and self.queue:
                unit = self.queue.popleft()
                slot.unit, slot.report = unit, (-1, 0, 0)
                slot.ref = getattr(slot.actor, unit.method).remote(*unit.args)

    def _collect(self, ready: set[Any]) -> None:
        import ray

        for slot in list(self.slots):
            if slot.ping is not None and slot.ping in ready:
                try:
                    ray.get(slot.ping)
                    slot.ping = None
                    self.start_failures = 0
                except ray.exceptions.RayError as exc:
                    self._drop(slot)
                    self.start_failures += 1
                    if self.start_failures >= START_FAILURES:
                        raise JobError(f"actors keep dying as they start: {_first_line(_cause(exc))}") from None
            elif slot.ref is not None and slot.ref in ready:
                unit, ref = slot.unit, slot.ref
                slot.unit = slot.ref = None
                assert unit is not None
                try:
                    summary = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    self._failed(unit, _cause(exc))
                except ray.exceptions.RayError as exc:  # the actor, its worker or its node died
                    self._died(unit, exc)
                    self._drop(slot)
                else:
                    self._done(unit, summary)

    def _done(self, unit: Unit, summary: dict[str, Any]) -> None:
        self.outstanding -= 1
        self.last_progress = time.monotonic()
        if unit.shard is None:
            return  # a segment: its video's row is counted when its shard commits
        self.summaries.append(summary)
        self.state["processed"] += summary["rows"]
        self.state["committed_failed"] = self.state.get("committed_failed", 0) + summary["failed"]
        if self.metrics is not None:
            self.metrics.shard(summary)

    def _died(self, unit: Unit, exc: BaseException) -> None:
        if not self._blamed_on_an_image(unit):
            unit.deaths += 1
        cap = self.config.max_retries + 2
        if unit.deaths > cap:
            raise JobError(
                f"{unit.name} lost its actor {unit.deaths} times outside any image "
                f"(more than max_retries + 2 = {cap}); last: {_first_line(exc)}"
            )
        self.queue.appendleft(unit)  # first in line: a shard that joins a video may be waiting for it
        self.last_progress = time.monotonic()  # a death is news: the survivors get a full stall_timeout

    def _blamed_on_an_image(self, unit: Unit) -> bool:
        """The shard's attempt marker names the image it was on: the crash ledger charges that image and
        bounds it (``max_retries``), so this death does not count against the unit."""
        if unit.shard is None or self.storage is None:
            return False
        with contextlib.suppress(StylizeError, ValueError, TypeError, AttributeError):
            marker = self.storage.read_if_exists(layout.attempt_key(unit.shard, self.plan.generation))
            return marker is not None and bool(json.loads(marker).get("suspect"))
        return False

    def _failed(self, unit: Unit, cause: BaseException) -> None:
        if isinstance(cause, MachineError):
            raise MachineError(_first_line(cause)) from None
        if isinstance(cause, StorageError):
            unit.storage_errors += 1
            if unit.storage_errors > self.config.shard_retries:
                raise StorageError(
                    f"{unit.name} failed {unit.storage_errors} times with a storage error "
                    f"(shard_retries={self.config.shard_retries}): {_first_line(cause)}"
                ) from None
            self.queue.appendleft(unit)
            return
        what = _first_line(cause)
        if not isinstance(cause, StylizeError):
            what = f"{type(cause).__name__}: {what}"
        raise JobError(f"{unit.name} failed: {what}") from None

    def _drop(self, slot: Slot) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(slot.actor)
        self.slots.remove(slot)

    # --- progress ----------------------------------------------------------------------------------

    def _probe(self) -> None:
        """Ask each running actor for its counters (answered on its second thread); read the answers that came."""
        import ray

        for slot in self.slots:
            if slot.probe is None and slot.unit is not None:
                slot.probe = slot.actor.progress.remote()
        probes = [s.probe for s in self.slots if s.probe is not None]
        ready = set(ray.wait(probes, num_returns=len(probes), timeout=0)[0]) if probes else set()
        for slot in self.slots:
            if slot.probe is None or slot.probe not in ready:
                continue
            try:
                report = tuple(ray.get(slot.probe))
            except ray.exceptions.RayError:
                report = slot.report  # a dead actor shows up on its unit's ref
            slot.probe = None
            if slot.unit is not None and report[0] == slot.unit.shard and report != slot.report:
                slot.report = report  # type: ignore[assignment]
                self.last_progress = time.monotonic()

    def _report(self, elapsed: float) -> None:
        state = self.state
        running = [s.report for s in self.slots if s.unit is not None and s.report[0] == s.unit.shard]
        moving = state["processed"] + sum(r[1] for r in running)
        state.update(
            done=state["start_done"] + moving,
            failed=state.get("committed_failed", 0) + sum(r[2] for r in running),
            rate=moving / elapsed if elapsed > 0 else 0.0,
        )
        if self.progress:
            self.progress(dict(state))
        if self.metrics is not None:
            self.metrics.update(state)

    def _check_stall(self) -> None:
        idle = time.monotonic() - self.last_progress
        if idle <= self.config.stall_timeout:
            return
        if self._segment_beating():
            self.last_progress = time.monotonic()
            return
        waiting = [s.unit.name for s in self.slots if s.unit is not None] + [u.name for u in self.queue]
        shown = ", ".join(waiting[:8]) + (f" and {len(waiting) - 8} more" if len(waiting) > 8 else "")
        raise JobError(
            f"no progress for {idle:.0f}s (stall_timeout={self.config.stall_timeout:g}); waited for {shown}; "
            "rerun the same command to resume"
        )

    def _segment_beating(self) -> bool:
        """A segment reports no counters; its claim's heartbeat (``pipeline.video_job``) says it is alive."""
        if self.storage is None:
            return False
        now = time.time()
        for seg in self.plan.pending_segments:
            with contextlib.suppress(StylizeError, ValueError, TypeError):
                claim = self.storage.read_if_exists(layout.segment_key(seg.row, seg.index, "claim"))
                if claim is not None and now - float(json.loads(claim).get("at", 0)) < self.config.stall_timeout:
                    return True
        return False
