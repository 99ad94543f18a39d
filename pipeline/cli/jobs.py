"""`stylize run | submit | status | logs | stop | demo`: batch jobs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

DEMO_DIR = Path("stylize-demo")
DEMO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field")
DEMO_STYLES = ("3", "7", "12", "19", "3:0.5,19:0.5")

ConfigArg = Annotated[Path | None, typer.Argument(help="Job config YAML (optional; flags and --set fill it).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Job config YAML (same as CONFIG).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set batch_size=8. Repeat.")]
ManifestOpt = Annotated[str | None, typer.Option(help="Manifest Parquet (path or URI).")]
OutputOpt = Annotated[str | None, typer.Option(help="Output root (folder or s3://bucket/prefix).")]
StylizerOpt = Annotated[str | None, typer.Option(help="Registered stylizer name.")]
StyleOpt = Annotated[str | None, typer.Option(help="Style spec for every image: 7, 3:0.5,12:0.5, starry.jpg.")]
AddressOpt = Annotated[
    str | None, typer.Option(help="Ray dashboard address, http://HEAD:8265 (default: $RAY_ADDRESS).")
]


def _config(path: Path | None, overrides: list[str] | None, **flags: Any) -> Any:
    from pipeline.config import load_config

    return load_config(str(path) if path else None, list(overrides or []), **{k: v for k, v in flags.items() if v})


def run_with_progress(config: Any, *, label: str = "stylizing", held: Any = None) -> dict[str, Any]:
    """``runner.run`` under one progress bar (images, failed, images/s, ETA) on stderr.

    Ray's own output goes to its session log files (``raysession``); anything Ray still writes to this
    process's stdout or stderr while the job runs (an embedded Ray's or a cluster's) lands in
    ``OUTPUT/_logs/driver.log`` on a local output, or the temp folder, so a successful run shows only the
    bar and the summary line.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline import runner

    console = Console(file=_terminal(), stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f} images/s"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=console, transient=False)
    task = bar.add_task(label, total=None, failed=0, rate=0.0)

    def update(state: dict[str, Any]) -> None:
        if not bar.live.is_started:  # shown from the first update: a run refused its lease prints one line only
            bar.start()
        bar.update(task, total=state["total"], completed=state["done"], failed=state["failed"], rate=state["rate"])

    with _output_to_log(config):
        try:
            return runner.run(config, progress=update, held=held)
        finally:
            if bar.live.is_started:
                bar.stop()


def _terminal() -> Any:
    """A handle on the real stderr that outlives the redirect of file descriptor 2."""
    import os
    import sys

    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (OSError, ValueError, AttributeError):  # no real stderr (tests capturing it): use what there is
        return sys.stderr


@contextlib.contextmanager
def _output_to_log(config: Any) -> Iterator[None]:
    """Send file descriptors 1 and 2 to a log file for the job's duration: Ray's C++ core prints on 2, and
    the driver's error listener prints what the cluster reports (``(raylet)`` lines: a node marked dead, a
    worker killed) on 1, whether or not ``log_to_driver`` is set."""
    import os
    import sys
    import tempfile

    from pipeline.storage import Storage

    storage = Storage(config.output, config.storage_options or None)
    folder = storage._path("_logs") if storage.local else tempfile.gettempdir()
    try:
        os.makedirs(folder, exist_ok=True)
        streams = [(sys.stdout, sys.stdout.fileno()), (sys.stderr, sys.stderr.fileno())]
    except (OSError, ValueError, AttributeError):
        yield
        return
    with open(os.path.join(folder, "driver.log"), "ab") as log:
        saved = []
        for stream, fd in streams:
            stream.flush()
            saved.append(os.dup(fd))
            os.dup2(log.fileno(), fd)
        try:
            yield
        finally:
            for (stream, fd), copy in zip(streams, saved, strict=True):
                stream.flush()
                os.dup2(copy, fd)
                os.close(copy)


def _print_summary(summary: dict[str, Any], output: str) -> None:
    fill = f", batch fill {summary['batch_fill']:.2f}" if summary.get("batch_fill") is not None else ""
    typer.echo(
        f"{summary['rows']} rows: {summary['ok']} ok, {summary['failed']} failed; "
        f"{summary.get('processed_this_run', 0)} processed in {summary.get('wall_seconds', 0):.1f}s "
        f"({summary.get('images_per_second') or 0:.2f} images/s{fill}) -> {output}"
    )


def _print_dry_run(cfg: Any) -> None:
    """The plan and, against what the output already holds, the rows new, changed, unchanged and deleted."""
    from pipeline.runner import dry_run_counts, plan_job

    storage, plan = plan_job(cfg, write=False)
    pending = plan.pending
    typer.echo(
        f"{plan.rows} rows in {plan.shards} shards of {plan.shard_rows}: {plan.shards - len(pending)} done, "
        f"{len(pending)} pending ({plan.pending_rows()} rows to stylize with {cfg.stylizer}, "
        f"batch {cfg.batch_size}, {cfg.actors or 'auto'} actor(s)) -> {cfg.output}"
    )
    counts = dry_run_counts(cfg, storage, plan)
    typer.echo(
        f"generation {plan.generation}: {counts['new']} new, {counts['changed']} changed, "
        f"{counts['unchanged']} unchanged, {counts['deleted']} deleted; {counts['to_process']} to stylize"
        + (f" (rerun={plan.rerun})" if plan.rerun != "new" else "")
        + (f"; rows are photos, {cfg.styles_per_image} styles each" if cfg.styles_per_image > 1 else "")
    )


def run(
    config: ConfigArg = None,
    config_opt: ConfigOpt = None,
    set_: SetOpt = None,
    manifest: ManifestOpt = None,
    output: OutputOpt = None,
    stylizer: StylizerOpt = None,
    style: StyleOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (shards done/pending); start nothing.")
    ] = False,
    wait_for_lease: Annotated[
        bool,
        typer.Option("--wait-for-lease", help="If another run is writing OUTPUT, wait for it instead of stopping."),
    ] = False,
) -> None:
    """Run a batch job here: embedded local Ray, or the cluster at $RAY_ADDRESS. Reruns resume.
    One run at a time per output: a second one stops (exit 8) or waits with --wait-for-lease."""
    cfg = _config(config or config_opt, set_, manifest=manifest, output=output, stylizer=stylizer, style=style)
    if wait_for_lease:
        cfg.wait_for_lease = True
    if dry_run:
        _print_dry_run(cfg)
        return
    summary = run_with_progress(cfg)
    _print_summary(summary, cfg.output)


def submit(
    config: ConfigArg = None,
    config_opt: ConfigOpt = None,
    set_: SetOpt = None,
    address: AddressOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends; print its logs.")] = False,
    python: Annotated[str, typer.Option(help="Python on the cluster that runs the entrypoint.")] = "python",
    manifest: ManifestOpt = None,
    output: OutputOpt = None,
    stylizer: StylizerOpt = None,
    style: StyleOpt = None,
) -> None:
    """Submit a batch job to a Ray cluster through the Jobs API; the id is derived from the config.

    A config whose storage_options hold credentials is refused: the cluster brings its own
    (node environment, instance role, or a Kubernetes secret as in configs/rayjob.yaml).
    """
    from pipeline import submit as jobs_api
    from pipeline.errors import JobError

    cfg = _config(config or config_opt, set_, manifest=manifest, output=output, stylizer=stylizer, style=style)
    job_id, new = jobs_api.submit(cfg, address=address, python=python)
    typer.echo(f"{'submitted' if new else 'already submitted'} {job_id}")
    if wait:
        state = jobs_api.wait(job_id, address)
        typer.echo(jobs_api.logs(job_id, address))
        typer.echo(f"{job_id} {state}")
        if state != "SUCCEEDED":
            raise JobError(f"job {job_id} ended {state}; see `stylize logs {job_id}`")


def status(job: Annotated[str, typer.Argument(help="Submission id.")], address: AddressOpt = None) -> None:
    """Show a submitted job's status."""
    from pipeline import submit as jobs_api

    typer.echo(json.dumps(jobs_api.info(job, address), indent=2, default=str))


def logs(job: Annotated[str, typer.Argument(help="Submission id.")], address: AddressOpt = None) -> None:
    """Print a submitted job's logs."""
    from pipeline import submit as jobs_api

    typer.echo(jobs_api.logs(job, address))


def stop(job: Annotated[str, typer.Argument(help="Submission id.")], address: AddressOpt = None) -> None:
    """Stop a submitted job (a rerun with the same config resumes it)."""
    from pipeline import submit as jobs_api

    stopped = jobs_api.stop(job, address)
    typer.echo(f"{job} {'stopping' if stopped else 'was not running'}")


# --- demo ----------------------------------------------------------------------------------------


def write_demo_photos(folder: Path) -> list[Path]:
    """scikit-image's bundled sample photos as JPEG/PNG files (no download)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(DEMO_PHOTOS):
        array = getattr(data, name)()
        if array.ndim == 2:
            array = array[..., None].repeat(3, -1)
        path = folder / f"{name}.{'png' if i % 3 == 2 else 'jpg'}"
        if not path.exists():
            options = {"quality": 92} if path.suffix == ".jpg" else {}
            Image.fromarray(array[..., :3]).save(path, **options)
        paths.append(path)
    return paths


def demo(
    folder: Annotated[Path | None, typer.Argument(help="Photos to stylize (default: scikit-image samples).")] = None,
    out: Annotated[Path, typer.Option(help="Where everything goes.")] = DEMO_DIR,
    max_side: Annotated[int, typer.Option(help="Cap the longer side (px) so the demo is quick on a CPU.")] = 512,
) -> None:
    """Stylize a folder (or scikit-image's sample photos) locally with dumoulin; write outputs and a report."""
    from pipeline.config import JobConfig
    from pipeline.manifest import build_manifest
    from pipeline.report import write_report
    from pipeline.runner import open_storage

    out = out.resolve()
    inputs = folder.resolve() if folder else out / "inputs"
    if folder is None:
        write_demo_photos(inputs)
    manifest = out / "manifest.parquet"
    build_manifest(str(inputs), str(manifest))
    styles = out / "styles.txt"
    styles.write_text("\n".join(DEMO_STYLES) + "\n")
    cfg = JobConfig(
        manifest=str(manifest),
        output=str(out / "output"),
        stylizer="dumoulin",
        style_manifest=str(styles),
        style_seed=0,
        max_side=max_side,
        batch_size=2,
    )
    summary = run_with_progress(cfg, label="demo")
    report = write_report(open_storage(cfg))
    _print_summary(summary, cfg.output)
    typer.echo(f"inputs:  {inputs}\noutputs: {out / 'output' / 'images'}\nmetrics: {out / 'output' / 'metrics'}")
    typer.echo(f"report:  {report}")


def attach(app: typer.Typer) -> None:
    """Register the job commands on the top-level app."""
    app.command("run")(run)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("stop")(stop)
    app.command("demo")(demo)
