"""`stylize nightly SOURCE --output OUT`: the whole scheduled job in one command.

List the source (local folder, s3://, gs://), rebuild its manifest under the output
(``OUT/_manifest/manifest.parquet``), run incrementally over what the output already holds (only
new and changed photos are stylized; ``pipeline.incremental``), then write the report. The same
arguments every night: a cron, a RayCronJob or an Airflow operator calls it unchanged.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.jobs import ConfigArg, ConfigOpt, SetOpt, StyleOpt, StylizerOpt, _config, _print_summary

MANIFEST_KEY = "_manifest/manifest.parquet"


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
) -> None:
    """Stylize what is new or changed in SOURCE since the last night: list, manifest, incremental run, report."""
    from pipeline.cli.jobs import _print_dry_run, run_with_progress
    from pipeline.manifest import build_manifest

    manifest = f"{output.rstrip('/')}/{MANIFEST_KEY}"
    cfg = _config(config or config_opt, set_, manifest=manifest, output=output, stylizer=stylizer, style=style)
    stats = build_manifest(
        source,
        cfg.manifest,
        probe_size=probe,
        allowed_schemes=cfg.allowed_schemes,
        storage_options=cfg.storage_options or None,
    )
    typer.echo(f"listed {stats.listed} files: {stats.rows} to the manifest in {stats.seconds:.1f}s -> {cfg.manifest}")
    if dry_run:
        _print_dry_run(cfg)
        return
    from pipeline.runner import plan_job

    plan_job(cfg, write=False)  # a refused rerun (changed pixel settings) ends here, before the bar
    summary = run_with_progress(cfg, label="nightly")
    _print_summary(summary, cfg.output)
    typer.echo(
        f"generation {summary.get('generation', 0)}: {summary.get('new', 0)} new, {summary.get('changed', 0)} changed, "
        f"{summary.get('unchanged', 0)} unchanged, {summary.get('deleted', 0)} deleted"
        + (f", {summary['pruned']} outputs pruned" if summary.get("pruned") else "")
    )
    if report:
        from pipeline.report import write_report
        from pipeline.runner import open_storage

        typer.echo(f"report: {write_report(open_storage(cfg))}")


def attach(app: typer.Typer) -> None:
    app.command("nightly")(nightly)
