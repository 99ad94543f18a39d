"""The ``stylize`` command: one Typer sub-app per concern.

Every ``StylizeError`` becomes one line on stderr and its ``exit_code``; nothing else is caught,
so a real bug still shows its traceback.
"""

from __future__ import annotations

import sys

import typer

from pipeline.cli import bench, gallery, image, jobs, manifest, models, report, train
from pipeline.errors import StylizeError

app = typer.Typer(
    name="stylize",
    help="Neural style transfer for single images and whole archives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("image")(image.image)
app.add_typer(models.app, name="models")
app.add_typer(manifest.app, name="manifest")
jobs.attach(app)  # run, submit, status, logs, stop, demo
app.command("report")(report.report)
app.add_typer(bench.app, name="bench")
app.add_typer(train.app, name="train")
app.command("gallery")(gallery.gallery)


def main() -> None:
    try:
        app()
    except StylizeError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
