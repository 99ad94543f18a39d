"""`stylize report OUTPUT`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> fsspec options; a value that reads as JSON is taken as such (``anon=true``,
    ``client_kwargs={"region_name": "eu-west-1"}``), else as text."""
    from pipeline.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--storage-option must be key=value, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


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
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            help="fsspec option key=value for reading the output and the sources, repeatable (e.g. key=..., "
            "secret=..., endpoint_url=...). The job's own credentials are not stored with its output; without "
            "these the environment's are used."
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report for a finished job's OUTPUT (OUTPUT/report.html)."""
    from pipeline import layout
    from pipeline.errors import JobError
    from pipeline.report import write_report
    from pipeline.storage import Storage

    options = parse_options(storage_option or [])
    storage = Storage(output, options or None)
    if not storage.list(layout.METRICS_PREFIX + "/"):
        raise JobError(f"{output} holds no metrics/*.parquet; is it a job's output?")
    page = write_report(storage, sample=sample, seed=seed, worst=worst, worst_by=worst_by, storage_options=options)
    typer.echo(page)
