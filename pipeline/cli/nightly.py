"""`stylize nightly SOURCE --output OUT`: the whole scheduled job in one command.

List the source (local folder, s3://, gs://), rebuild its manifest under the output
(``OUT/_manifest/manifest.parquet``), run incrementally over what the output already holds (only
new and changed photos are stylized; ``pipeline.incremental``), then write the report. The same
arguments every night: a cron, a RayCronJob or an Airflow operator calls it unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipeline.cli.jobs import ConfigArg, ConfigOpt, SetOpt, StyleOpt, StylizerOpt, _config, _print_summary

MANIFEST_KEY = "_manifest/manifest.parquet"
DRY_RUN_KEY = "_manifest/dry-run.parquet"


def nightly(
    source: Annotated[str, typer.Argument(help="Folder or URI to list (local, s3://, gs://).")],
    output: Annotated[str, typer.Option(help="Output root; results of earlier nights there are reused.")],
    config: ConfigArg = None,
    config_opt: ConfigOpt = None,
    set_: SetOpt = None,
    stylizer: StylizerOpt = None,
    style: StyleOpt = None,
    probe: Annotated[
        bool, typer.Option("--probe/--no-probe", help="Read each file's header for its size (manifest build).")
    ] = True,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write OUT/report.html afterwards.")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build the manifest, print what would be stylized; stylize nothing.")
    ] = False,
    wait_for_lease: Annotated[
        bool,
        typer.Option("--wait-for-lease", help="If another run is writing OUTPUT, wait for it instead of stopping."),
    ] = False,
) -> None:
    """Stylize what is new or changed in SOURCE since the last night: list, manifest, incremental run, report.
    The output's lease is held from the manifest's rebuild to the report, so a second night started while the
    first still runs stops (or waits, with --wait-for-lease) before it touches the first one's manifest."""
    from pipeline.cli.jobs import _print_dry_run, run_with_progress
    from pipeline.runner import open_storage

    # a dry run writes its own manifest, so it needs no lease and never replaces a running night's
    manifest = f"{output.rstrip('/')}/{DRY_RUN_KEY if dry_run else MANIFEST_KEY}"
    cfg = _config(config or config_opt, set_, manifest=manifest, output=output, stylizer=stylizer, style=style)
    if wait_for_lease:
        cfg.wait_for_lease = True
    if dry_run:
        _build(source, cfg, probe)
        _print_dry_run(cfg)
        return
    from pipeline import lease

    with lease.held(open_storage(cfg), cfg.lease_seconds, wait=cfg.wait_for_lease) as held:
        _build(source, cfg, probe)
        from pipeline.runner import plan_job

        plan_job(cfg, write=False)  # a refused rerun (changed pixel settings) ends here, before the bar
        summary = run_with_progress(cfg, label="nightly", held=held)
        _print_summary(summary, cfg.output)
        typer.echo(
            f"generation {summary.get('generation', 0)}: {summary.get('new', 0)} new, "
            f"{summary.get('changed', 0)} changed, {summary.get('unchanged', 0)} unchanged, "
            f"{summary.get('deleted', 0)} deleted"
            + (f", {summary['pruned']} outputs pruned" if summary.get("pruned") else "")
        )
        if report:
            from pipeline.report import write_report

            typer.echo(f"report: {write_report(open_storage(cfg))}")


def _build(source: str, cfg: Any, probe: bool) -> None:
    from pipeline.manifest import build_manifest

    stats = build_manifest(
        source,
        cfg.manifest,
        probe_size=probe,
        allowed_schemes=cfg.allowed_schemes,
        storage_options=cfg.storage_options or None,
    )
    typer.echo(f"listed {stats.listed} files: {stats.rows} to the manifest in {stats.seconds:.1f}s -> {cfg.manifest}")


def attach(app: typer.Typer) -> None:
    app.command("nightly")(nightly)
