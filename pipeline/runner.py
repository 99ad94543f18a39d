"""The Ray Data plan for one batch job, with resume and the ``_SUCCESS`` marker.

The only module that imports Ray. The plan::

    manifest (driver: row index, shard, style)  -> drop rows of committed shards
      -> decode      (CPU tasks, worker.decode_rows)
      -> stylize, encode + write (actor pool: one loaded stylizer per actor, worker.Stylist, then
         worker.encode_rows in the actor, so the raw output pixels never cross the object store)
      -> driver: collect metric rows per shard; a complete shard's metrics Parquet is written
         atomically, and that file is the shard's commit marker
    -> _SUCCESS (summary JSON), written last

Resume: shards are fixed runs of ``shard_rows`` manifest rows (recorded in ``_plan.json`` with a
manifest fingerprint, so a rerun cuts the same shards). A rerun skips shards that have a metrics
file and redoes the rest; outputs live under keys derived from the image id, so redone work
overwrites instead of duplicating. A kill at any moment therefore ends, after a rerun, with
exactly one metrics row per manifest row.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import metrics, worker
from pipeline.errors import JobError, ManifestError

DEFAULT_SHARD_ROWS = 256
MAX_BLOCKS = 2000
PLAN_KEY = "_plan.json"
SUCCESS_KEY = "_SUCCESS"
METRICS_PREFIX = "metrics"
_SHARD_FILE = re.compile(r"shard-(\d+)\.parquet$")

# what travels between the stages: metric fields plus the pixels of the current image
INFLIGHT_SCHEMA = pa.schema(
    [
        (f.name, f.type if not pa.types.is_integer(f.type) else pa.int64())
        for f in metrics.METRICS_SCHEMA
        if f.name != "finished_at"
    ]
    + [("pixels", pa.large_binary()), ("ph", pa.int64()), ("pw", pa.int64())]
)
FINAL_SCHEMA = pa.schema([f for f in INFLIGHT_SCHEMA if f.name not in ("pixels", "ph", "pw")]).append(
    pa.field("finished_at", pa.float64())
)

Progress = Callable[[dict[str, Any]], None]


def shard_key(shard: int) -> str:
    return f"{METRICS_PREFIX}/shard-{shard:05d}.parquet"


def open_storage(config: Any) -> Any:
    from pipeline.storage import Storage

    return Storage(config.output, getattr(config, "storage_options", None) or None)


def manifest_fingerprint(table: pa.Table) -> str:
    h = hashlib.sha256()
    for image_id, uri in zip(table.column("image_id").to_pylist(), table.column("uri").to_pylist(), strict=True):
        h.update(f"{image_id}\x00{uri}\n".encode())
    return h.hexdigest()


def load_plan(storage: Any, table: pa.Table, shard_rows: int | None) -> dict[str, Any]:
    """The shard plan of this OUTPUT: reused on rerun, refused if the manifest changed."""
    fingerprint = manifest_fingerprint(table)
    if storage.exists(PLAN_KEY):
        plan = json.loads(storage.get(PLAN_KEY))
        if plan.get("manifest_sha256") != fingerprint:
            raise JobError(
                f"{storage.uri(PLAN_KEY)} belongs to a run over a different manifest "
                f"({plan.get('rows')} rows); use a new output or delete the old one"
            )
        return plan
    rows = max(1, int(shard_rows or DEFAULT_SHARD_ROWS))
    plan = {"manifest_sha256": fingerprint, "rows": table.num_rows, "shard_rows": rows}
    plan["shards"] = (table.num_rows + rows - 1) // rows
    storage.put(PLAN_KEY, json.dumps(plan, indent=2).encode())
    return plan


def committed_shards(storage: Any) -> set[int]:
    done = set()
    for key in storage.list(METRICS_PREFIX):
        m = _SHARD_FILE.search(str(key))
        if m:
            done.add(int(m.group(1)))
    return done


def shard_sizes(plan: dict[str, Any]) -> dict[int, int]:
    rows, size = int(plan["rows"]), int(plan["shard_rows"])
    return {s: min(size, rows - s * size) for s in range(int(plan["shards"]))}


def job_table(table: pa.Table, config: Any, plan: dict[str, Any]) -> pa.Table:
    """The work table: image_id, uri, row, shard, style (one spec per row, see worker.assign_styles)."""
    n = table.num_rows
    ids = [str(v) for v in table.column("image_id").to_pylist()]
    column = None
    style_column = getattr(config, "style_column", None)
    if style_column:
        if style_column not in table.column_names:
            raise ManifestError(f"style_column {style_column!r} is not in the manifest (columns: {table.column_names})")
        column = table.column(style_column).to_pylist()
    styles = worker.assign_styles(ids, config, column)
    rows = pa.array(range(n), type=pa.int64())
    return pa.table(
        {
            "image_id": pa.array(ids, type=pa.string()),
            "uri": pa.array([str(u) for u in table.column("uri").to_pylist()], type=pa.string()),
            "row": rows,
            "shard": pc.divide(rows, pa.scalar(int(plan["shard_rows"]), pa.int64())),
            "style": pa.array(styles, type=pa.string()),
        }
    )


def collect_metrics(storage: Any) -> pa.Table:
    tables = [metrics.read_table(storage.get(shard_key(s))) for s in sorted(committed_shards(storage))]
    if not tables:
        return metrics.to_table([])
    return pa.concat_tables(tables, promote_options="default")


# --- Ray -----------------------------------------------------------------------------------------


def repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def ensure_ray(address: str | None = None) -> bool:
    """Connect to ``address`` / ``$RAY_ADDRESS`` or start an embedded local Ray; True if started here."""
    import ray

    from pipeline.submit import EXCLUDES

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    env = {}
    if os.environ.get(worker.PLUGINS_ENV):
        env[worker.PLUGINS_ENV] = os.environ[worker.PLUGINS_ENV]
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        # inside `ray job submit`: the job's runtime_env already ships this code to the workers
        ray.init(address=address or None, log_to_driver=False)
    elif address:
        runtime_env = {"working_dir": repo_root(), "excludes": EXCLUDES, "env_vars": env}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        # Ray workers start in a session directory: make this package importable there too
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root(), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(
            address="local",  # never attach to a cluster some `ray start` left on this machine
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


def _rows(batch: pa.Table) -> list[dict[str, Any]]:
    return batch.to_pylist()


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)


class _Decode:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.ledger = worker.Ledger(open_storage(config))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _table(worker.decode_rows(_rows(batch), self.config, self.ledger), INFLIGHT_SCHEMA)


class _Stylize:
    """The actor: stylize, then encode and write in place, so raw output pixels never cross the object store."""

    def __init__(self, config: Any, threads: int) -> None:
        self.stylist = worker.Stylist(config, threads=threads)
        self.storage = open_storage(config)
        self.ledger = worker.Ledger(self.storage)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = self.stylist(_rows(batch), self.ledger)
        return _table(worker.encode_rows(rows, self.stylist.config, self.storage), FINAL_SCHEMA)


def _decode_task(batch: pa.Table, config: Any) -> pa.Table:
    return _Decode(config)(batch)


def _blocks(table: pa.Table, batch_size: int) -> list[pa.Table]:
    rows = max(batch_size, -(-table.num_rows // MAX_BLOCKS))
    rows = -(-rows // batch_size) * batch_size
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)]


def build_dataset(work: pa.Table, config: Any, *, local: bool) -> Any:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False

    batch_size = max(1, int(config.batch_size))
    actors = max(1, int(config.actors))
    cpus = float(config.cpus_per_actor or 1)
    gpus = float(config.gpus_per_actor or 0)
    total_cpus = int(ray.cluster_resources().get("CPU", 1))
    # an embedded Ray owns this machine: give torch the cores; on a cluster stick to the reservation
    threads = max(1, total_cpus // actors) if local and gpus == 0 else max(1, int(cpus))
    codec_cpus = 0.5 if local else 1.0
    # Crashes: Ray Data restarts dead actors and retries their tasks without limit, and Ray retries a
    # task whose process died 3 times; worker.Ledger turns a repeat offender into a failed row first.

    ds = ray.data.from_arrow(_blocks(work, batch_size))
    ds = ds.map_batches(
        _decode_task,
        fn_kwargs={"config": config},
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=codec_cpus,
    )
    return ds.map_batches(
        _Stylize,
        fn_constructor_kwargs={"config": config, "threads": threads},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=gpus,
    )


def check_can_start(config: Any) -> None:
    """Fail in the driver, with one line, on what would otherwise kill every actor at start-up."""
    from pipeline.errors import WeightsError
    from pipeline.models import get_card

    worker.import_plugins()
    card = get_card(config.stylizer)  # ModelNotFound lists the known names
    if not getattr(config, "weights", None):
        available, how = card.availability()
        if not available:
            raise WeightsError(f"stylizer {config.stylizer!r} has no weights here: {how}")
    if getattr(config, "metrics", False):
        from pipeline.models.vgg import encoder_availability

        available, how = encoder_availability(getattr(config, "encoder_weights", None) or "auto")
        if not available:
            raise WeightsError(f"quality metrics need VGG weights: {how}; or set metrics=false")


def check_manifest(table: pa.Table, path: str) -> None:
    """Refuse what breaks the whole job (columns, duplicate ids); a bad row only fails that row."""
    from pipeline.manifest import duplicate_ids, validate

    problems = validate(table.slice(0, 0))  # the column checks alone
    dupes = duplicate_ids(table) if not problems else {}
    problems += [f"duplicate image_id {k!r} ({n} rows)" for k, n in sorted(dupes.items())[:3]]
    if problems:
        more = f" (+{len(dupes) - 3} more duplicate ids)" if len(dupes) > 3 else ""
        raise ManifestError(f"{path}: " + "; ".join(problems[:3]) + more)


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "public_dict"):
        return config.public_dict()
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(vars(config))


def run(
    config: Any,
    *,
    progress: Progress | None = None,
    shard_rows: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the job; returns the ``_SUCCESS`` summary."""
    from pipeline.manifest import read_manifest

    start = time.perf_counter()
    storage = open_storage(config)
    table = read_manifest(config.manifest, getattr(config, "storage_options", None) or None)
    check_manifest(table, config.manifest)
    plan = load_plan(storage, table, shard_rows)
    sizes = shard_sizes(plan)
    done = committed_shards(storage)
    total = table.num_rows
    state = {"total": total, "done": sum(sizes[s] for s in done if s in sizes), "failed": 0, "processed": 0}
    state["rate"] = 0.0
    pending = [s for s in sizes if s not in done]
    if pending:
        work = job_table(table, config, plan)
        work = work.filter(pc.is_in(work.column("shard"), pa.array(pending, type=pa.int64())))
        if progress:
            progress(dict(state))
        check_can_start(config)
        started_here = ensure_ray(address)
        _execute(work, config, storage, sizes, state, progress, local=started_here or _is_local())
    elif storage.exists(SUCCESS_KEY):
        return json.loads(storage.get(SUCCESS_KEY))

    missing = [s for s in sizes if s not in committed_shards(storage)]
    if missing:
        raise JobError(f"shards {missing[:5]} did not commit; rerun the job to finish them")
    for key in storage.list(worker.Ledger(storage).prefix):
        storage.delete(key)
    table = collect_metrics(storage)
    if table.num_rows != total:
        raise JobError(f"metrics hold {table.num_rows} rows for a manifest of {total}")
    wall = time.perf_counter() - start
    summary = metrics.summarize(
        table,
        config=_config_dict(config),
        wall_seconds=wall,
        processed=state["processed"],
        extra={"shards": len(sizes), "shard_rows": plan["shard_rows"], "output": storage.root_uri},
    )
    storage.put(SUCCESS_KEY, metrics.summary_bytes(summary))
    return summary


def _is_local() -> bool:
    import ray

    return len(ray.nodes()) == 1 and not os.environ.get("RAY_ADDRESS")


def _execute(
    work: pa.Table,
    config: Any,
    storage: Any,
    sizes: dict[int, int],
    state: dict[str, Any],
    progress: Progress | None,
    *,
    local: bool,
) -> None:
    """Stream the plan; commit each shard's metrics as soon as all its rows are in."""
    ds = build_dataset(work, config, local=local)
    pending: dict[int, dict[int, dict[str, Any]]] = {}
    t0 = time.perf_counter()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            shard = int(row["shard"])
            rows = pending.setdefault(shard, {})
            if row["row"] not in rows:  # a retried task may deliver a row twice
                rows[row["row"]] = row
                state["processed"] += 1
                state["done"] += 1
                state["failed"] += row["status"] != "ok"
            if len(rows) == sizes[shard]:
                ordered = [rows[k] for k in sorted(rows)]
                storage.put(shard_key(shard), metrics.table_bytes(metrics.to_table(ordered)))
                del pending[shard]
        elapsed = time.perf_counter() - t0
        state["rate"] = state["processed"] / elapsed if elapsed > 0 else 0.0
        if progress:
            progress(dict(state))
