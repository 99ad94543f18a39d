"""`stylize models list`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.models import list_models

app = typer.Typer(help="The registered stylizers and their weights.", no_args_is_help=True)


@app.command("list")
def list_command(
    checkpoints: Annotated[
        str | None, typer.Option(help="Also list trained checkpoints (*.safetensors) under this path or URI prefix.")
    ] = None,
) -> None:
    """Every registered stylizer, its family, and whether its weights are available here."""
    table = Table("name", "family", "style", "weights", "where / how to get them")
    for card in list_models():
        ok, where = card.availability()
        table.add_row(card.name, card.family, card.style_kind, "[green]yes[/]" if ok else "[red]no[/]", where)
    console = Console()
    console.print(table)
    if checkpoints:
        from pipeline.checkpoints import find_checkpoints

        found = find_checkpoints(checkpoints)
        ckpt = Table(
            "checkpoint (use as --weights)", "stylizer", "step", "style", title=f"checkpoints under {checkpoints}"
        )
        for item in found:
            ckpt.add_row(item.uri, item.stylizer, str(item.step), item.style)
        console.print(ckpt if found else f"no checkpoints under {checkpoints}")
