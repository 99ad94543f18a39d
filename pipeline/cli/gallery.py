"""`stylize gallery`: the docs' pictures, made by the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from PIL import Image

from pipeline.errors import ConfigError


def gallery(
    out: Annotated[Path, typer.Option(help="Folder for the JPEG sheets.")],
    content: Annotated[list[str], typer.Option(help="Content photo; repeat.")],
    style: Annotated[list[str], typer.Option(help="Style image; repeat.")],
    stylizer: Annotated[list[str] | None, typer.Option(help="Stylizers to draw (default: all with weights).")] = None,
    weights: Annotated[list[str] | None, typer.Option(help="NAME=URI checkpoints for stylizers; repeat.")] = None,
    controls: Annotated[bool, typer.Option(help="Also draw controls.jpg (the runtime controls sheet).")] = True,
    controls_model: Annotated[str, typer.Option(help="Stylizer for the controls sheet.")] = "ghiasi",
    max_side: Annotated[int, typer.Option(help="Longer side of each picture.")] = 384,
    steps: Annotated[int, typer.Option(help="Optimisation steps for gatys.")] = 200,
) -> None:
    """Write <family>.jpg contact sheets (and controls.jpg) into --out."""
    from pipeline import gallery as g
    from pipeline.models import get_card, list_models
    from pipeline.styles import parse_style_spec

    given = dict(w.split("=", 1) for w in (weights or []) if "=" in w)
    if len(given) != len(weights or []):
        raise ConfigError("--weights takes NAME=URI")
    names = stylizer or [c.name for c in list_models() if c.availability()[0] or c.name in given]
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        options = {} if get_card(name).feed_forward else {"steps": steps}
        sheet = g.family_sheet(name, content, style, max_side=max_side, weights=given.get(name), **options)
        Image.fromarray(sheet).save(out / f"{name}.jpg", quality=88)
        typer.echo(f"wrote {out / f'{name}.jpg'}")
    if not controls:
        return
    a, b = (parse_style_spec(s)[0] for s in style[:2])
    sheet = g.controls_sheet(controls_model, content[0], a, b, max_side=max_side)
    Image.fromarray(sheet).save(out / "controls.jpg", quality=88)
    typer.echo(f"wrote {out / 'controls.jpg'}")
