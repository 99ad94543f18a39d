"""`stylize models list | show | fetch | import`."""

from __future__ import annotations

from pathlib import Path
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
    """Every registered stylizer, its family, and whether its weights are ready, fetchable or to fetch by hand."""
    from pipeline.models import list_models
    from pipeline.models.fetch import status

    colours = {"ready": "green", "fetchable": "yellow", "manual": "red", "missing": "red"}
    table = Table("name", "family", "style", "weights")
    table.add_column("where / how to get them", overflow="fold")  # paths and commands: wrap, never cut
    for card in list_models():
        state, where = status(card)
        table.add_row(card.name, card.family, card.style_kind, f"[{colours[state]}]{state}[/]", where)
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


@app.command("fetch")
def fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Stylizers whose published weights to fetch.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch every stylizer's published weights.")] = False,
    to: Annotated[
        str | None,
        typer.Option(
            help="Also stage the files under this prefix (s3://bucket/weights/) for a cluster without egress."
        ),
    ] = None,
) -> None:
    """Download published weights into the cache ($STYLIZE_CACHE), from $STYLIZE_WEIGHTS_MIRROR when set."""
    from pipeline.errors import ConfigError
    from pipeline.models import get_card
    from pipeline.models.fetch import fetch, fetchable_names, is_installed, manual_files, manual_help, stage, status

    if all_ == bool(names):
        raise ConfigError("give stylizer names or --all, not both or neither")

    def say(line: str) -> None:
        typer.echo(line, err=True)

    chosen = fetchable_names() if all_ else list(names or [])
    for name in chosen:
        card = get_card(name)
        if all_ and status(card)[0] == "manual":
            typer.echo(f"{name}: skipped: {manual_help(card)}")
            continue
        fetched = fetch(name, say=say)
        if manual_files(card) and not all(is_installed(r) for r in manual_files(card)):
            say(f"{name}: also by hand: {manual_help(card)}")  # wct: its cascade's Torch7 files
        got = [r.file for r, new in fetched if new]
        kept = [r.file for r, new in fetched if not new]
        typer.echo(
            f"{name}: "
            + "; ".join(
                p for p in (got and f"fetched {', '.join(got)}", kept and f"already here: {', '.join(kept)}") if p
            )
        )
        if to:
            for uri in stage(name, to, say=say):
                typer.echo(f"{name}: staged {uri}")


@app.command("import")
def import_command(
    name: Annotated[str, typer.Argument(help="The stylizer (sanet: files from Yandex.Disk).")],
    directory: Annotated[Path, typer.Argument(help="The folder holding the hand-downloaded files.")],
) -> None:
    """Check hand-downloaded published files (layout, keys) and install them into the cache."""
    from pipeline.models.fetch import import_files

    for path in import_files(name, directory):
        typer.echo(f"{name}: installed {path}")
