"""`stylize video`: one video file, no cluster, with one progress bar and a one-line summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.image import (
    AlphaOpt,
    DeviceOpt,
    EncoderWeightsOpt,
    EngineOpt,
    MaxSideOpt,
    PreserveColorOpt,
    SeedOpt,
    StyleOpt,
    StyleScaleOpt,
    StylizerOpt,
    TilePixelsOpt,
    WeightsOpt,
    default_style,
)
from pipeline.errors import ConfigError
from pipeline.scale import DEFAULT_STYLE_SCALE, DEFAULT_TILE_PIXELS, parse_style_scale

OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")


def video(
    content: Annotated[Path, typer.Argument(help="The video to stylize (.mp4 .mov .mkv .webm .avi).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result (.mp4, .mov, .mkv).")],
    stylizer: StylizerOpt = "dumoulin",
    style: StyleOpt = None,
    consistency: Annotated[
        str, typer.Option(help="flow: blend with the flow-warped previous output; none: frame by frame.")
    ] = "flow",
    blend: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Weight of the warped previous output where visible.")
    ] = 0.5,
    alpha: AlphaOpt = 1.0,
    preserve_color: PreserveColorOpt = "none",
    max_side: MaxSideOpt = None,
    tile_pixels: TilePixelsOpt = DEFAULT_TILE_PIXELS,
    style_scale: StyleScaleOpt = str(DEFAULT_STYLE_SCALE),
    batch_size: Annotated[int, typer.Option(min=1, max=64, help="Frames per model call.")] = 4,
    codec: Annotated[str, typer.Option(help="FFmpeg video encoder: libx264, libx265, libvpx-vp9...")] = "libx264",
    crf: Annotated[int, typer.Option(min=0, max=63, help="Encoder quality (lower is better).")] = 18,
    pix_fmt: Annotated[str, typer.Option("--pix-fmt", help="Output pixel format.")] = "yuv420p",
    encoder_weights: EncoderWeightsOpt = "auto",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Stylize a video frame by frame, keep it steady with optical flow, and copy its audio."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.devices import resolve_device
    from pipeline.media.video import EncodeOptions, probe_video
    from pipeline.models.controls import COLOR_MODES
    from pipeline.models.engines import load_stylizer
    from pipeline.raysession import import_plugins
    from pipeline.styles import parse_style_spec
    from pipeline.temporal import check_consistency
    from pipeline.video_render import VideoSettings, frame_stylizer, render

    import_plugins()  # $STYLIZE_PLUGINS stylizers, as batch jobs see them
    started = time.perf_counter()
    torch.manual_seed(seed)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output must end in {', '.join(OUTPUT_SUFFIXES)}, got {output.name!r}")
    if preserve_color not in COLOR_MODES:
        raise ConfigError(f"--preserve-color must be one of {', '.join(COLOR_MODES)}, got {preserve_color!r}")
    check_consistency(consistency)
    scale = parse_style_scale(style_scale)
    settings = VideoSettings(
        consistency=consistency,
        blend=blend,
        batch_size=batch_size,
        max_side=max_side,
        encode=EncodeOptions(codec, crf, pix_fmt).check(),
    )
    info = probe_video(str(content), max_pixels=settings.max_pixels)  # bad input fails before the model loads
    from pipeline.models.base import Style

    spec = default_style(stylizer, style)
    styles = parse_style_spec(spec) if spec else [Style()]  # decoded once for the whole video
    model = load_stylizer(
        stylizer, device=resolve_device(device), engine=engine, weights=weights, encoder_weights=encoder_weights
    )
    stylize = frame_stylizer(
        model, styles, alpha=alpha, preserve_color=preserve_color, tile_pixels=tile_pixels, style_scale=scale
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TextColumn("{task.fields[fps]:.1f} frames/s"),
        TimeRemainingColumn(),
    )
    t0 = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(content.name, total=info.frames, fps=0.0)

        def progress(done: int) -> None:
            bar.update(task, completed=done, fps=done / max(time.perf_counter() - t0, 1e-9))

        result = render(str(content), str(output), stylize, settings, progress=progress)
    stats = result.stats
    ewarp = f"{stats.ewarp:.5f}" if stats.ewarp is not None else "n/a"
    fidelity = f"{stats.fidelity:.4f}" if stats.fidelity is not None else "n/a"
    notes = f"; {'; '.join(result.notes)}" if result.notes else ""
    typer.echo(
        f"wrote {output} ({result.width}x{result.height}, {stats.frames} frames at {info.frame_rate} fps, "
        f"{stylizer}, consistency {consistency}, E_warp {ewarp}, fidelity {fidelity}, "
        f"{stats.frames / max(result.seconds, 1e-9):.1f} frames/s, {time.perf_counter() - started:.1f}s{notes})"
    )
