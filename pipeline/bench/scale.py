"""Style-scale benchmark: does a large photo look as stylized as a small one, with full-size detail?

``python -m pipeline.bench.scale --stylizer ghiasi`` stylizes each photo (``--content``, repeat; default
the shared set's Content.jpg and chicago.jpg beside scikit-image's astronaut) with each painting
(``--style``, repeat; default Starry, la_muse, wave, udnie and Composition-VII from the shared set) at
several longer sides (default 512, 1024, 3072), with ``style_scale`` ``native`` and with the default,
through ``controls.stylize``, and prints one JSON row per (stylizer, photo, style, size, mode):

- ``style_dist``: the job metrics' Gram style distance (``metrics.QualityScorer``: its encoder, layers and
  normalisation) to the painting, with output and painting both seen at a 256 px viewing size made by
  ``view`` (lower: closer to the painting). Families without a style image (dumoulin's built-in styles)
  have none; ``growth``: its relative change from the photo's smallest size (the first ``--size``);
- ``enlarged_growth``: the instrument's own error, the ``growth`` of the smallest size's result enlarged
  to this size with a Catmull-Rom cubic: the same picture, so it should read ~0;
- ``growth_metrics_view``: ``growth`` with the job metrics' own view (the package's antialiased bilinear
  resize) instead of ``view``; printed beside it because that view is not neutral to enlargement (below);
- ``look_dist``: the same Gram distance, but to the smallest size's result of the same stylizer and style:
  how far the picture seen whole is from the small photo's look (0 at 512), for every family;
- ``edge_corr``: Pearson correlation of the luminance gradient magnitudes of output and photo at full size;
- ``s_per_image``: seconds of the ``controls.stylize`` call;
- ``sharpness``: the detail measure, the mean luminance gradient magnitude (forward differences of
  BT.601 luma in [0,1]) at full size; ``detail``: ``detail_ratio`` of the output against the output of
  the same photo at 1024 px (same mode), enlarged to full size with torch's bicubic (the issue's "detail
  of a 1024-px output enlarged bicubically"), for sizes above 1024; ``photo_detail`` the same ratio for
  the photo itself (its 1024 px copy enlarged), the real detail there was to carry.

Then ``worst`` rows, one per stylizer and mode: the largest style distance growth and the smallest
detail ratio at the largest size over every photo and painting (the worst case, not the mean), with the
largest ``|enlarged_growth|`` and ``growth_metrics_view`` beside them.

Why ``view`` is an antialiased cubic and not the job metrics' bilinear: the Gram distance at 256 px
reacts to how the downscale treats texture near the view's pixel scale. Measured with ghiasi over 4
photos x 11 paintings (docs/benchmarks.md, session 9), the 512 px result merely enlarged 6x with
Catmull-Rom read up to +7.4 % with the bilinear view (Lanczos-3: +9.7 %, bilinear: -15 %) although the
picture is the same; with the cubic view the Catmull-Rom and Lanczos-3 enlargements read within 1.2 % and
2 %. A bound of 10 % on the growth can only be checked with the second.

The photos are resized to each size with Lanczos from their own pixels. The shared photos are 512 px and
the astronaut 512 px, so above 512 they are enlargements that hold no real detail (their own detail
ratio is ~1.0: nothing for any upsampler to carry). ``--detail-photo`` (default ``collages``) therefore
adds ``real_detail`` rows: ``real_detail_photo(v)`` (three collages of real photos, 3072 px on the longer
side, landscape, portrait and 16:9, each tile at or below its own resolution, so every pixel holds real
detail) at 512, 1024 and 3072 px with each painting, and the detail ratio and style distances there;
``collage`` takes the first only, ``none`` skips them.
``--crops OUT.png`` also writes a side-by-side crop of the first stylizer's largest photo, native vs default.
Asserts nothing; CPU threads as torch picks them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline import imaging
from pipeline.devices import resolve_device
from pipeline.metrics import QualityScorer
from pipeline.models import controls, create
from pipeline.models.base import Style, Stylizer
from pipeline.scale import DEFAULT_STYLE_SCALE

VIEW_SIDE = 256  # the common viewing size of the style distances
JOHNSON_CANDY = "docs/training/johnson-candy.safetensors"
ROOT = Path(__file__).resolve().parents[2]
# the shared set (benchmarks only; tests never): ../shared beside the checkout, else shared/ inside it
SHARED = next((p for p in (ROOT.parent / "shared", ROOT / "shared") if (p / "eval").is_dir()), ROOT.parent / "shared")
PHOTOS = ("eval/content/Content.jpg", "eval/content/chicago.jpg")
PAINTINGS = ("Starry", "la_muse", "wave", "udnie", "Composition-VII")
DETAIL_SIZE = 1024  # the detail ratio's reference: the 1024 px output enlarged bicubically
COLLAGES = ((3072, 2304), (2304, 3072), (3072, 1728))  # width, height of real_detail_photo(variant)
COLLAGE_TILE = 384
COLLAGE_NAMES = ("collage", "collage-portrait", "collage-16x9")


def load(path: str | None) -> Image.Image:
    """An RGB picture: a file, or scikit-image's astronaut for ``None`` / ``"astronaut"``."""
    if path and path != "astronaut":
        return Image.open(path).convert("RGB")
    from skimage import data

    return Image.fromarray(data.astronaut())


def photo(path: str | Image.Image | None, side: int) -> torch.Tensor:
    """(1,3,H,W) in [0,1] with longer side ``side``: the picture (``load``), Lanczos-resized."""
    img = path if isinstance(path, Image.Image) else load(path)
    w, h = img.size
    scale = side / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


def _detail_sources() -> list[np.ndarray]:
    """scikit-image's photos at least ``COLLAGE_TILE`` px on their shorter side, as RGB uint8 arrays."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.rocket(), data.retina(), data.hubble_deep_field()]
    photos += [data.camera(), data.brick(), data.grass(), data.gravel(), data.immunohistochemistry()]
    photos += [data.stereo_motorcycle()[0], data.cell(), data.moon()]
    return [np.repeat(a[..., None], 3, 2) if a.ndim == 2 else a for a in photos]


def real_detail_photo(variant: int = 0) -> Image.Image:
    """A collage of real photos (scikit-image's colour and grey photos) whose every pixel holds a camera's
    detail, at a size no photo of this machine has: each tile a square crop brought down to
    ``COLLAGE_TILE`` px, never enlarged. ``variant`` 0, 1, 2: 3072x2304 landscape, 2304x3072 portrait and
    3072x1728 (16:9), each with its own order of the photos and its own crops (a large photo gives two
    finer crops, from opposite corners, which corners depending on the variant), mirrored on every other
    pass round the list. Variant 0 is the collage of the session 8 figures."""
    width, height = COLLAGES[variant]
    sources = _detail_sources()
    sources = sources[:10] if variant == 0 else sources[3 * variant :] + sources[: 3 * variant]
    tile = COLLAGE_TILE
    tiles = []
    for rgb in sources:
        h, w = rgb.shape[:2]
        side = min(h, w) // 2 if min(h, w) >= 2 * tile else min(h, w)
        corners = [(0, 0), (h - side, w - side)] if variant != 1 else [(0, w - side), (h - side, 0)]
        for y, x in sorted(set(corners)):
            crop = Image.fromarray(np.ascontiguousarray(rgb[y : y + side, x : x + side]))
            tiles.append(crop.resize((tile, tile), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (width, height))
    for k, (y, x) in enumerate((y, x) for y in range(0, height, tile) for x in range(0, width, tile)):
        img = tiles[k % len(tiles)]
        canvas.paste(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if (k // len(tiles)) % 2 else img, (x, y))
    return canvas


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) -> (B,1,H-1,W-1) magnitude of the luminance's forward differences."""
    y = imaging.luminance(x)
    dx, dy = y[..., :-1, 1:] - y[..., :-1, :-1], y[..., 1:, :-1] - y[..., :-1, :-1]
    return (dx * dx + dy * dy).sqrt()


def edge_correlation(out: torch.Tensor, content: torch.Tensor) -> float:
    a, b = gradient_magnitude(out).flatten().double(), gradient_magnitude(content).flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))


def sharpness(x: torch.Tensor) -> float:
    """The detail measure: mean luminance gradient magnitude at the picture's own size."""
    return float(gradient_magnitude(x).mean())


def detail_ratio(out: torch.Tensor, smaller: torch.Tensor) -> float:
    """``sharpness(out)`` over the sharpness of ``smaller`` (the same photo's output at a smaller size)
    enlarged to ``out``'s size with torch's bicubic (clamped to [0,1]): how much more detail the
    full-size output carries than an enlargement of the smaller one."""
    enlarged = F.interpolate(smaller, size=out.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    return sharpness(out) / sharpness(enlarged)


def load_stylizer(name: str, device: torch.device) -> Stylizer:
    # johnson: the candy network trained in this repository (docs/training); the others' bundled weights
    return create(name, device=device, weights=JOHNSON_CANDY if name == "johnson" else None).eval()


def styles_for(model: Stylizer, style_path: str | None, index: int) -> tuple[list[Style], str, torch.Tensor | None]:
    """The styles to run, a label, and the painting the style distance is measured against (if any)."""
    if model.style_kind == "index":
        return [Style(index=index)], str(index), None
    painting = photo(style_path, 512) if style_path else None
    label = Path(style_path or "").stem
    if model.style_kind == "fixed":
        return [Style()], label, painting  # johnson's style is in its weights; its training painting measures it
    if painting is None:
        raise SystemExit(f"{model.name} needs --style")
    return [Style(image=painting)], label, painting


def view(x: torch.Tensor, side: int = VIEW_SIDE) -> torch.Tensor:
    """``x`` (B,3,H,W) seen whole: longer side ``side`` with torch's antialiased bicubic (the Catmull-Rom
    kernel stretched over the scale, as Pillow's BICUBIC reduce), which sees a smooth enlargement of a
    picture as that picture (module docstring). Never enlarges."""
    if max(x.shape[-2:]) <= side:
        return x
    size = imaging.max_side_size(tuple(x.shape[-2:]), side)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def enlarge(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` enlarged to ``size`` with the Catmull-Rom cubic: the same picture, only bigger."""
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def distance(
    scorer: QualityScorer, out: torch.Tensor, target: torch.Tensor, key: str, *, metrics_view: bool = False
) -> float:
    """The metrics' Gram style distance of ``out`` to ``target``, both seen through ``view``, or with
    ``metrics_view`` through the scorer's own resize (the job metrics' figure)."""
    if metrics_view:
        return scorer.score_batch(out, out, [f"{key}|metrics"], [[Style(image=target)]])[0]["style_distance"]
    seen = view(out)
    return scorer.score_batch(seen, seen, [f"{key}|view"], [[Style(image=view(target))]])[0]["style_distance"]


def _emit(rows: list[dict[str, object]], row: dict[str, object]) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _pair_rows(
    args: argparse.Namespace,
    scorer: QualityScorer,
    model: Stylizer,
    picture: Image.Image,
    photo_label: str,
    styles: list[Style],
    label: str,
    painting: torch.Tensor | None,
    sizes: list[int],
    crops: Path | None = None,
) -> list[dict[str, object]]:
    """The rows of one (stylizer, photo, style) at each size and mode."""
    rows: list[dict[str, object]] = []
    reference: torch.Tensor | None = None
    base: dict[str, float] = {}  # style distances at the smallest size (each view), which growth is measured from
    at_detail_size: dict[str, torch.Tensor] = {}  # the outputs at DETAIL_SIZE, by mode, and the photo
    for side in sizes:
        content = photo(picture, side).to(model.device)
        native: torch.Tensor | None = None
        for mode in ("native", args.style_scale):
            if mode != "native" and side <= args.style_scale:
                continue  # the same call as native: the style scale only acts above it
            if mode == "native" and args.native_up_to and side > args.native_up_to:
                continue  # native at full size is the slow case; --native-up-to skips it
            t0 = time.perf_counter()
            out = controls.stylize(model, content, styles, style_scale=mode)
            seconds = time.perf_counter() - t0
            reference = out if reference is None else reference
            native = out if mode == "native" else native
            key = "native" if mode == "native" else "default"
            dists: dict[str, float] = {}
            if painting is not None:
                dists["view"] = distance(scorer, out, painting, label)
                dists["metrics_view"] = distance(scorer, out, painting, label, metrics_view=True)
                dists["enlarged"] = distance(scorer, enlarge(reference, tuple(out.shape[-2:])), painting, label)
            dist = dists.get("view")
            row: dict[str, object] = {
                "stylizer": model.name,
                "photo": photo_label,
                "style": label,
                "size": side,
                "style_scale": mode if side > args.style_scale else f"{mode} (= both)",
                "style_dist": None if dist is None else round(dist, 4),
                "growth": None,
                "enlarged_growth": None,
                "growth_metrics_view": None,
                "look_dist": round(distance(scorer, out, reference, f"{model.name}-{label}-{photo_label}"), 4),
                "edge_corr": round(edge_correlation(out, content), 4),
                "s_per_image": round(seconds, 2),
                "sharpness": round(sharpness(out), 5),
            }
            if dists:
                base = base or {"view": dists["view"], "metrics_view": dists["metrics_view"]}
                row["growth"] = round(dists["view"] / base["view"] - 1, 4)
                row["enlarged_growth"] = round(dists["enlarged"] / base["view"] - 1, 4)
                row["growth_metrics_view"] = round(dists["metrics_view"] / base["metrics_view"] - 1, 4)
            if side == DETAIL_SIZE:
                at_detail_size |= {key: out, "photo": content}
            elif side > DETAIL_SIZE and key in at_detail_size:
                row["detail"] = round(detail_ratio(out, at_detail_size[key]), 4)
                # the same ratio for the photo itself: what real detail there was to carry
                row["photo_detail"] = round(detail_ratio(content, at_detail_size["photo"]), 4)
            if crops and mode != "native" and side == max(sizes):
                native = (
                    native if native is not None else controls.stylize(model, content, styles, style_scale="native")
                )
                write_crops(crops, content, native, out)
            _emit(rows, row)
    return rows


def worst(rows: list[dict[str, object]], size: int, what: str) -> list[dict[str, object]]:
    """Per stylizer and mode: the largest growth and the smallest detail ratio at ``size``."""
    out = []
    for name, mode in sorted({(r["stylizer"], r["style_scale"]) for r in rows if r["size"] == size}):
        own = [r for r in rows if r["size"] == size and (r["stylizer"], r["style_scale"]) == (name, mode)]
        grown = [r for r in own if r.get("growth") is not None]
        detailed = [r for r in own if r.get("detail") is not None]
        row: dict[str, object] = {"worst": what, "stylizer": name, "size": size, "style_scale": mode, "pairs": len(own)}
        if grown:
            top = max(grown, key=lambda r: float(r["growth"]))  # type: ignore[arg-type]
            row |= {"max_growth": top["growth"], "at": f"{top['photo']} x {top['style']}"}
            # the instrument's largest error, and the job metrics' view of the same outputs
            row["max_abs_enlarged_growth"] = max(abs(float(r["enlarged_growth"])) for r in grown)  # type: ignore[arg-type]
            top_metrics = max(grown, key=lambda r: float(r["growth_metrics_view"]))  # type: ignore[arg-type]
            row |= {
                "max_growth_metrics_view": top_metrics["growth_metrics_view"],
                "metrics_view_at": f"{top_metrics['photo']} x {top_metrics['style']}",
            }
        if detailed:
            low = min(detailed, key=lambda r: float(r["detail"]))  # type: ignore[arg-type]
            row |= {"min_detail": low["detail"], "detail_at": f"{low['photo']} x {low['style']}"}
            row["photo_detail"] = low.get("photo_detail")  # that photo's own ratio: the detail it had
        out.append(row)
    return out


def bench(args: argparse.Namespace) -> list[dict[str, object]]:
    device = resolve_device(args.device)
    scorer = QualityScorer.load(args.encoder_weights, device=device, side=VIEW_SIDE)
    pictures = [(Path(p).stem if p else "astronaut", load(p)) for p in args.content]
    rows: list[dict[str, object]] = []
    detail_rows: list[dict[str, object]] = []
    variants = {"collages": range(len(COLLAGES)), "collage": range(1), "none": range(0)}[args.detail_photo]
    collages = [(COLLAGE_NAMES[v], real_detail_photo(v)) for v in variants]
    detail_side = max(max(COLLAGES[v]) for v in variants) if collages else 0
    for name in args.stylizer:
        model = load_stylizer(name, device)
        # an image-conditioned family takes the paintings; dumoulin its built-in indices; johnson one painting
        choices = args.style if model.style_kind != "index" else [None] * len(args.index)
        for i, style_path in enumerate(choices if model.style_kind != "fixed" else [args.johnson_style]):
            styles, label, painting = styles_for(model, style_path, args.index[i % len(args.index)])
            for j, (photo_label, picture) in enumerate(pictures):
                crops = args.crops if (name, i, j) == (args.stylizer[0], 0, 0) else None
                rows += _pair_rows(args, scorer, model, picture, photo_label, styles, label, painting, args.size, crops)
            # default mode only (native at 3072 px is minutes a call); 512 px is the "= both" row
            only_default = argparse.Namespace(**{**vars(args), "native_up_to": args.style_scale})
            for collage_label, collage in collages:
                sizes = [min(args.size), DETAIL_SIZE, detail_side]
                detail_rows += _pair_rows(
                    only_default, scorer, model, collage, collage_label, styles, label, painting, sizes
                )
    summary: list[dict[str, object]] = []
    for row in worst(rows, max(args.size), "photos") + worst(detail_rows, detail_side, "real_detail"):
        _emit(summary, row)
    return rows + detail_rows + summary


def write_crops(path: Path, content: torch.Tensor, native: torch.Tensor, default: torch.Tensor) -> None:
    """A 3-panel PNG: the same 512 px crop (near the centre) of the photo, native and the default."""
    h, w = content.shape[-2:]
    side = min(512, h, w)
    top, left = (h - side) // 3, (w - side) // 2
    panels = [x[0, :, top : top + side, left : left + side] for x in (content, native, default)]
    gap = torch.ones(3, side, 8)
    strip = torch.cat([panels[0], gap, panels[1], gap, panels[2]], -1)
    array = (strip.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(array)
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)  # a 256-colour PNG: ~220 KB, not 600
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stylizer", action="append", help="ghiasi, dumoulin, johnson, ... (repeat)")
    parser.add_argument("--style", action="append", default=[], help="painting for image-conditioned families")
    parser.add_argument("--index", action="append", type=int, help="dumoulin built-in style (repeat; default 0)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder (eval/content, eval/style)")
    parser.add_argument("--johnson-style", help="johnson's painting (default: the shared set's candy.jpg)")
    parser.add_argument("--size", action="append", type=int, help="photo longer sides (default 512 1024 3072)")
    parser.add_argument("--style-scale", type=int, default=DEFAULT_STYLE_SCALE)
    parser.add_argument(
        "--content", action="append", help="photo or 'astronaut' (repeat; default: shared set's 2 + astronaut)"
    )
    parser.add_argument(
        "--detail-photo", choices=("collages", "collage", "none"), default="collages", help="real-detail rows"
    )
    parser.add_argument("--encoder-weights", default="hed-vgg16", help="VGG that measures the distances")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--native-up-to", type=int, help="skip native rows above this size (they are slow)")
    parser.add_argument("--crops", type=Path, help="write native-vs-default crops of the largest photo here")
    args = parser.parse_args(argv)
    args.stylizer = args.stylizer or ["ghiasi"]
    args.size = args.size or [512, 1024, 3072]
    args.content = args.content or [*(str(args.shared / p) for p in PHOTOS if (args.shared / p).exists()), "astronaut"]
    args.style = args.style or [str(args.shared / "eval" / "style" / f"{p}.jpg") for p in PAINTINGS]
    args.johnson_style = args.johnson_style or str(args.shared / "eval" / "style" / "candy.jpg")
    args.index = args.index or [0]
    bench(args)


if __name__ == "__main__":
    main()
