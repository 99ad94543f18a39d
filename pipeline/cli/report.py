"""`stylize report OUTPUT`."""

from __future__ import annotations

from typing import Annotated

import typer


def report(
    output: Annotated[str, typer.Argument(help="A job's output root (folder or s3://bucket/prefix).")],
    max_thumbs: Annotated[int, typer.Option(help="Pairs of thumbnails on the contact sheet.")] = 48,
) -> None:
    """Write a self-contained HTML report for a finished job's OUTPUT (OUTPUT/report.html)."""
    from pipeline.errors import JobError
    from pipeline.report import write_report
    from pipeline.runner import METRICS_PREFIX
    from pipeline.storage import Storage

    storage = Storage(output)
    if not storage.list(METRICS_PREFIX + "/"):
        raise JobError(f"{output} holds no metrics/*.parquet; is it a job's output?")
    typer.echo(write_report(storage, max_thumbs=max_thumbs))
