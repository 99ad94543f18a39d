"""`stylize models list`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from pipeline.models import list_models

app = typer.Typer(help="The registered stylizers and their weights.", no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """Every registered stylizer, its family, and whether its weights are available here."""
    table = Table("name", "family", "style", "weights", "where / how to get them")
    for card in list_models():
        ok, where = card.availability()
        table.add_row(card.name, card.family, card.style_kind, "[green]yes[/]" if ok else "[red]no[/]", where)
    Console().print(table)
