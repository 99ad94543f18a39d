"""`stylize manifest build | inspect`: make and look at the Parquet manifests batch jobs run over."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import manifest as mf
from pipeline.errors import ConfigError
from pipeline.storage import ALLOWED_SCHEMES

app = typer.Typer(help="Build and inspect image manifests (Parquet).", no_args_is_help=True)
_console = Console(stderr=True)


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _schemes(extra: list[str] | None) -> set[str]:
    return set(ALLOWED_SCHEMES) | {s.lower().removesuffix("://") for s in (extra or [])}


@app.command("build")
def build(
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write the manifest (.parquet, path or URI).")],
    src: Annotated[
        str | None, typer.Argument(help="Folder or URI to list recursively (local path, s3://bucket/prefix, gs://...).")
    ] = None,
    from_table: Annotated[
        str | None,
        typer.Option("--from-table", help="Instead of listing SRC, take URIs from this Parquet/CSV/TSV/.txt file."),
    ] = None,
    uri_column: Annotated[str, typer.Option(help="--from-table: column holding the URIs.")] = "uri",
    id_column: Annotated[
        str | None, typer.Option(help="--from-table: column holding image ids (default: image_id or from the URI).")
    ] = None,
    ext: Annotated[
        list[str] | None, typer.Option("--ext", help="Image extension to include (repeatable; default: common ones).")
    ] = None,
    probe: Annotated[bool, typer.Option(help="Read image headers for width/height (one small read per file).")] = True,
    batch_rows: Annotated[int, typer.Option(help="Rows per Parquet row group (bounds memory).")] = 10_000,
    allow_scheme: Annotated[
        list[str] | None, typer.Option(help="Also allow this URI scheme (repeatable), e.g. https for trusted lists.")
    ] = None,
    label_from: Annotated[
        str | None,
        typer.Option(
            "--label-from",
            help="Add a label column from each photo's folder: parent (its own folder, ImageFolder's "
            "root/<class>/<photo>) or top (the first folder under SRC).",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Add a label column from a CSV or Parquet table of image_id,label (ids not in it: null)."
        ),
    ] = None,
) -> None:
    """Write a manifest: one row per image (image_id, uri, size_bytes, width, height, mtime, etag[, label])."""
    if (src is None) == (from_table is None):
        raise ConfigError("give either SRC (a folder or URI to list) or --from-table FILE, not both or neither")
    if label_from and labels:
        raise ConfigError("give --label-from or --labels, not both")
    allowed = _schemes(allow_scheme)
    label_map = mf.read_labels(labels, allowed=allowed) if labels else None
    if from_table is not None:
        stats = mf.from_table(
            from_table,
            out,
            uri_column=uri_column,
            id_column=id_column,
            allowed_schemes=allowed,
            label_from=label_from,
            labels=label_map,
        )
    else:
        with Progress(
            SpinnerColumn(),
            TextColumn("listing {task.fields[src]}: {task.completed} files"),
            TimeElapsedColumn(),
            console=_console,
            transient=True,
        ) as progress:
            task = progress.add_task("list", total=None, src=src)
            stats = mf.build_manifest(
                src,
                out,
                extensions=[e if e.startswith(".") else f".{e}" for e in ext] if ext else mf.MEDIA_EXTENSIONS,
                probe_size=probe,
                batch_rows=batch_rows,
                allowed_schemes=allowed,
                progress=lambda n: progress.update(task, completed=n),
                label_from=label_from,
                labels=label_map,
            )
        if stats.unreadable_dirs:
            _console.print(f"[yellow]warning:[/] {stats.unreadable_dirs} folder(s) could not be listed")
        stats.problems = mf.validate(mf.read_manifest(out), allowed)
    typer.echo(
        f"wrote {stats.out}: {stats.rows} rows, {_size(stats.total_bytes)}"
        f" (listed {stats.listed}, skipped {stats.skipped}, ids cleaned {stats.renamed_ids}"
        + (f", size unknown {stats.unprobed}" if probe and from_table is None else "")
        + f") in {stats.seconds:.1f}s"
    )
    if label_from or labels or stats.classes:
        unlabeled = f", {stats.unlabeled} rows without a label" if stats.unlabeled else ""
        typer.echo(f"labels: {stats.classes} classes{unlabeled}")
    for problem in stats.problems[:20]:
        _console.print(f"[yellow]problem:[/] {problem}", markup=True, highlight=False)
    if len(stats.problems) > 20:
        _console.print(f"[yellow]... {len(stats.problems) - 20} more problem lines; see `stylize manifest inspect`")


@app.command("inspect")
def inspect(
    manifest: Annotated[str, typer.Argument(help="Manifest to summarise (.parquet, path or URI).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
    allow_scheme: Annotated[
        list[str] | None, typer.Option(help="Also allow this URI scheme (repeatable) when checking rows.")
    ] = None,
) -> None:
    """Rows, total size, extensions, size distribution and problems of a manifest."""
    info = mf.inspect(manifest, allowed_schemes=_schemes(allow_scheme))
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=manifest, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("rows", str(info["rows"]))
    table.add_row("total size", _size(info.get("total_bytes")))
    table.add_row("extensions", ", ".join(f"{k or '(none)'} {v}" for k, v in info["extensions"].items()))
    table.add_row("schemes", ", ".join(f"{k} {v}" for k, v in info["schemes"].items()))
    sizes = info.get("size_bytes", {})
    if "p50" in sizes:
        table.add_row(
            "file size",
            f"min {_size(sizes['min'])} / median {_size(sizes['p50'])} / p90 {_size(sizes['p90'])}"
            f" / max {_size(sizes['max'])}" + (f" ({sizes['unknown']} unknown)" if sizes["unknown"] else ""),
        )
    dims = info.get("dimensions", {})
    if dims.get("known"):
        table.add_row(
            "dimensions",
            f"{dims['known']} known; median {dims['median_megapixels']} MP, max {dims['max_megapixels']} MP",
        )
    extra = [c for c in info["columns"] if c not in {f.name for f in mf.SCHEMA}]
    if extra:
        table.add_row("extra columns", ", ".join(extra))
    problems = info["problems"]
    table.add_row("problems", str(len(problems)) if problems else "none")
    Console().print(table)
    for problem in problems[:20]:
        typer.echo(f"  {problem}")
