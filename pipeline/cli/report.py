"""`stylize report OUTPUT`."""

from __future__ import annotations

from typing import Annotated

import typer


def report(
    output: Annotated[str, typer.Argument(help="A job's output root (folder or s3://bucket/prefix).")],
    sample: Annotated[
        int, typer.Option(min=0, help="Random ok images on the contact sheet (original beside output).")
    ] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the contact sheet's sample.")] = 0,
    worst: Annotated[int, typer.Option(min=0, help="Worst ok images to show, by --worst-by.")] = 8,
    worst_by: Annotated[
        str, typer.Option(help="Metric column for the worst images (highest first), e.g. style_distance.")
    ] = "content_distance",
) -> None:
    """Write a self-contained HTML report for a finished job's OUTPUT (OUTPUT/report.html)."""
    from pipeline.errors import JobError
    from pipeline.report import METRICS_PREFIX, write_report
    from pipeline.storage import Storage

    storage = Storage(output)
    if not storage.list(METRICS_PREFIX + "/"):
        raise JobError(f"{output} holds no metrics/*.parquet; is it a job's output?")
    typer.echo(write_report(storage, sample=sample, seed=seed, worst=worst, worst_by=worst_by))
