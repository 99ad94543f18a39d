"""`stylize manifest` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="manifest", no_args_is_help=True)
