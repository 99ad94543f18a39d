"""`stylize image`: one photo, no cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.errors import ConfigError, InputError
from pipeline.scale import DEFAULT_STYLE_SCALE, DEFAULT_TILE_PIXELS, parse_style_scale

if TYPE_CHECKING:  # torch and the models load when the command runs, not for every `stylize` call
    import torch

    from pipeline.models.base import Style


def _load_masks(paths: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """Grey mask images -> (1,K,H,W) in [0,1]; each must match the content's size exactly."""
    import numpy as np
    import torch

    from pipeline.codec import read_image

    masks = []
    for path in paths:
        decoded = read_image(str(path))
        if (decoded.width, decoded.height) != size:
            raise InputError(f"mask {path} is {decoded.width}x{decoded.height} but the content is {size[0]}x{size[1]}")
        masks.append(torch.from_numpy(decoded.array.astype(np.float32).mean(-1) / 255.0))
    return torch.stack(masks)[None]


def _masked_styles(
    mask_paths: list[Path], mask_specs: list[str], background: str | None, size: tuple[int, int]
) -> tuple[list[Style], torch.Tensor]:
    import torch

    from pipeline.styles import parse_style_spec

    if len(mask_paths) != len(mask_specs):
        raise ConfigError(f"give one --mask-style per --mask ({len(mask_paths)} masks, {len(mask_specs)} styles)")
    styles = []
    for spec in mask_specs + ([background] if background else []):
        parsed = parse_style_spec(spec)
        if len(parsed) != 1:
            raise ConfigError(f"a masked region takes one style, got {spec!r}")
        styles.append(parsed[0])
    masks = _load_masks(mask_paths, size)
    if background:
        masks = torch.cat([masks, (1 - masks.sum(1, keepdim=True)).clamp_min(0)], 1)
    return styles, masks


# options `stylize image` and `stylize video` share (one definition each)
StylizerOpt = Annotated[str, typer.Option(help="Registered stylizer name (see `stylize models list`).")]
StyleOpt = Annotated[
    str | None, typer.Option(help="Style spec: starry.jpg, starry.jpg:0.7,wave.jpg:0.3, 7 or 3:0.5,12:0.5.")
]
AlphaOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Content-style trade-off, 0 to 1.")]
PreserveColorOpt = Annotated[str, typer.Option("--preserve-color", help="none, luminance or histogram.")]
MaxSideOpt = Annotated[int | None, typer.Option(min=16, help="Cap the longer side (default: original size).")]
TilePixelsOpt = Annotated[int, typer.Option(help="Feed-forward models tile images above this many pixels.")]
EncoderWeightsOpt = Annotated[
    str, typer.Option(help="VGG weights: auto, torchvision-vgg19, torchvision-vgg16, hed-vgg16 or a path.")
]
WeightsOpt = Annotated[str | None, typer.Option(help="Checkpoint path or URI for the stylizer.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
EngineOpt = Annotated[
    str, typer.Option(help="auto (onnxruntime for dumoulin on CPU where installed), torch or onnxruntime.")
]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
StyleScaleOpt = Annotated[
    str,
    typer.Option(
        "--style-scale",
        help="Longer side (px) at which strokes are painted; larger pictures are stylized at it and upsampled "
        "edge-aware. native: at the picture's own size.",
    ),
]


def default_style(stylizer: str, style: str | None) -> str:
    """``--style`` or the stylizer's default (style 0 of an index set, nothing for a fixed style);
    image-conditioned families need one."""
    from pipeline.models import get_card

    if style is None:
        kind = get_card(stylizer).style_kind
        style = "0" if kind == "index" else ("" if kind == "fixed" else None)
    if style is None:
        raise ConfigError(f"{stylizer} needs --style (an image path or a mix like a.jpg:0.7,b.jpg:0.3)")
    return style


def image(
    content: Annotated[Path, typer.Argument(help="The photo to stylize.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the result (.jpg, .png, .webp).")],
    stylizer: StylizerOpt = "dumoulin",
    style: StyleOpt = None,
    alpha: AlphaOpt = 1.0,
    preserve_color: PreserveColorOpt = "none",
    mask: Annotated[list[Path] | None, typer.Option(help="A region mask (white = region); repeat.")] = None,
    mask_style: Annotated[list[str] | None, typer.Option(help="The style for the matching --mask; repeat.")] = None,
    max_side: MaxSideOpt = None,
    tile_pixels: TilePixelsOpt = DEFAULT_TILE_PIXELS,
    style_scale: StyleScaleOpt = str(DEFAULT_STYLE_SCALE),
    steps: Annotated[int | None, typer.Option(min=1, help="Optimisation steps (gatys).")] = None,
    encoder_weights: EncoderWeightsOpt = "auto",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    seed: SeedOpt = 0,
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 92,
) -> None:
    """Stylize one image and write it to --output."""
    import torch

    from pipeline.codec import encode_image, read_image, to_array, to_tensor
    from pipeline.devices import resolve_device
    from pipeline.imaging import fit, resize_masks
    from pipeline.models import controls, get_card
    from pipeline.models.base import Style
    from pipeline.models.engines import load_stylizer
    from pipeline.styles import parse_style_spec

    started = time.perf_counter()
    torch.manual_seed(seed)
    scale = parse_style_scale(style_scale)
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("jpg", "jpeg", "png", "webp"):
        raise ConfigError(f"--output must end in .jpg, .png or .webp, got {output.name!r}")
    card = get_card(stylizer)
    decoded = read_image(str(content))
    if mask:
        styles, masks = _masked_styles(mask, mask_style or [], style, (decoded.width, decoded.height))
    else:
        if mask_style:
            raise ConfigError("--mask-style needs a matching --mask")
        style = default_style(stylizer, style)
        styles = parse_style_spec(style) if style else [Style()]
        masks = None
    options: dict[str, int] = {}
    if not card.feed_forward:  # optimisation methods take their schedule from the command line
        options = {"seed": seed, **({"steps": steps} if steps else {})}
    model = load_stylizer(
        stylizer,
        device=resolve_device(device),
        engine=engine,
        weights=weights,
        encoder_weights=encoder_weights,
        **options,
    )
    # the one max-side fit that batch jobs use too, so both feed the model the same pixels
    pixels = fit(decoded.array, max_side)
    if masks is not None and masks.shape[-2:] != pixels.shape[:2]:
        masks = resize_masks(masks, pixels.shape[:2])
    out = controls.stylize(
        model,
        to_tensor(pixels),
        styles,
        alpha=alpha,
        preserve_color=preserve_color,  # type: ignore[arg-type]
        masks=masks,
        tile_pixels=tile_pixels,
        style_scale=scale,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(encode_image(to_array(out), fmt, quality))
    h, w = out.shape[-2:]
    typer.echo(f"wrote {output} ({w}x{h}, {stylizer}, {time.perf_counter() - started:.1f}s)")
