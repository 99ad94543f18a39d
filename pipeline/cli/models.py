"""`stylize models list | show`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="The registered stylizers and their weights.", no_args_is_help=True)


@app.command("list")
def list_command(
    checkpoints: Annotated[
        str | None, typer.Option(help="Also list trained checkpoints (*.safetensors) under this path or URI prefix.")
    ] = None,
    sources: Annotated[bool, typer.Option("--sources", help="Also list every published weight source.")] = False,
) -> None:
    """Every registered stylizer, its family, and whether its weights are available here."""
    from pipeline.models import list_models

    table = Table("name", "family", "style", "weights", "where / how to get them")
    for card in list_models():
        ok, where = card.availability()
        table.add_row(card.name, card.family, card.style_kind, "[green]yes[/]" if ok else "[red]no[/]", where)
    console = Console()
    console.print(table)
    if sources:
        listed = Table("stylizer", "weight source", "licence", title="weight sources")
        listed.add_column("where from", overflow="fold")  # URLs: wrap, never cut
        for card in list_models():
            for source in card.weight_sources:
                listed.add_row(card.name, source.name, source.licence, source.where)
        console.print(listed)
    if checkpoints:
        from pipeline.checkpoints import find_checkpoints

        found = find_checkpoints(checkpoints)
        ckpt = Table(
            "checkpoint (use as --weights)", "stylizer", "step", "style", title=f"checkpoints under {checkpoints}"
        )
        for item in found:
            ckpt.add_row(item.uri, item.stylizer, str(item.step), item.style)
        console.print(ckpt if found else f"no checkpoints under {checkpoints}")


@app.command("show")
def show_command(name: Annotated[str, typer.Argument(help="A registered stylizer name.")]) -> None:
    """One stylizer's card: paper, contract, preprocessing, and each weight source with its licence."""
    from pipeline.models import get_card

    card = get_card(name)
    ok, where = card.availability()
    low, high = card.input_range
    kind = "feed-forward" if card.feed_forward else "optimisation"
    masks = "native" if card.native_masks else "composited"
    lines = [
        f"{card.name}: {card.paper}",
        f"family {card.family}, {kind}, styles: {card.style_kind}, masks: {masks}",
        f"input: (B,3,H,W) float in [{low:g},{high:g}]; {card.preprocessing}",
        f"weights here: {'yes' if ok else 'no'} ({where})",
    ]
    table = Table("weight source", "licence")
    table.add_column("where from", overflow="fold")  # URLs: wrap, never cut
    for source in card.weight_sources:
        table.add_row(source.name, source.licence, source.where)
    console = Console()
    for line in lines:
        console.print(line, markup=False, highlight=False)
    if card.weight_sources:
        console.print(table)
