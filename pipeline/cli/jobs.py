"""`stylize run | submit | status | logs | stop | demo`: batch jobs."""

from __future__ import annotations

import typer


def attach(app: typer.Typer) -> None:
    """Register the job commands on the top-level app."""
