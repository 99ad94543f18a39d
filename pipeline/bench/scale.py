"""Style-scale benchmark: does a large photo look as stylized as a small one, with full-size detail?

``python -m pipeline.bench.scale --stylizer ghiasi --stylizer dumoulin --style PAINTING.jpg`` stylizes one
photo at several longer sides (default 512, 1024, 2048, 4096) with ``style_scale`` ``native`` and with the
default, through ``controls.stylize``, and prints one row per (stylizer, style, size, mode):

- ``style_dist``: the job metrics' Gram style distance (``metrics.QualityScorer``) to the painting, with
  output and painting both at a 256 px viewing size (lower: closer to the painting). Families without a
  style image (dumoulin's built-in styles) have none;
- ``look_dist``: the same Gram distance, but to the 512 px result of the same stylizer and style: how far
  the picture seen whole is from the small photo's look (0 at 512), for every family;
- ``edge_corr``: Pearson correlation of the luminance gradient magnitudes of output and photo at full size;
- ``s_per_image``: seconds of the ``controls.stylize`` call;
- ``sharpness``: mean luminance gradient magnitude at full size, and ``bicubic_sharpness`` the same for the
  working-size result enlarged with a plain bicubic resize (rows where the style scale applies).

The photo is scikit-image's astronaut (512 px) unless ``--content`` is given; larger sizes are enlarged
from it with Lanczos, so they hold no more real detail than the 512 px photo (the benchmark says so).
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


def photo(path: str | None, side: int) -> torch.Tensor:
    """(1,3,H,W) in [0,1] with longer side ``side``: the file, or scikit-image's astronaut, Lanczos-resized."""
    if path:
        img = Image.open(path).convert("RGB")
    else:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    w, h = img.size
    scale = side / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


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
    return float(gradient_magnitude(x).mean())


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


def distance(scorer: QualityScorer, out: torch.Tensor, target: torch.Tensor, key: str) -> float:
    """The metrics' Gram style distance of ``out`` to ``target`` (both brought to the scorer's side)."""
    return scorer.score_batch(out, out, [key], [[Style(image=target)]])[0]["style_distance"]


def bench(args: argparse.Namespace) -> list[dict[str, object]]:
    device = resolve_device(args.device)
    scorer = QualityScorer.load(args.encoder_weights, device=device, side=VIEW_SIDE)
    rows: list[dict[str, object]] = []
    for name in args.stylizer:
        model = load_stylizer(name, device)
        # an image-conditioned family takes the paintings; dumoulin its built-in indices; johnson one painting
        choices = args.style if model.style_kind != "index" else [None] * len(args.index)
        for i, style_path in enumerate(choices if model.style_kind != "fixed" else [args.johnson_style]):
            styles, label, painting = styles_for(model, style_path, args.index[i % len(args.index)])
            reference: torch.Tensor | None = None
            for side in args.size:
                content = photo(args.content, side).to(device)
                native: torch.Tensor | None = None
                for mode in ("native", args.style_scale):
                    if mode != "native" and side <= args.style_scale:
                        continue  # the same call as native: the style scale only acts above it
                    if mode == "native" and args.native_up_to and side > args.native_up_to:
                        continue  # native at full size is the slow case; --native-up-to skips it
                    t0 = time.perf_counter()
                    out = controls.stylize(model, content, styles, style_scale=mode)
                    seconds = time.perf_counter() - t0
                    if reference is None:
                        reference = out
                    if mode == "native":
                        native = out
                    row: dict[str, object] = {
                        "stylizer": name,
                        "style": label,
                        "size": side,
                        "style_scale": mode if side > args.style_scale else f"{mode} (= both)",
                        "style_dist": round(distance(scorer, out, painting, label), 4)
                        if painting is not None
                        else None,
                        "look_dist": round(distance(scorer, out, reference, f"{name}-{label}-512"), 4),
                        "edge_corr": round(edge_correlation(out, content), 4),
                        "s_per_image": round(seconds, 2),
                        "sharpness": round(sharpness(out), 5),
                    }
                    if mode != "native":
                        work = controls.working_size(tuple(content.shape[-2:]), mode)
                        assert work is not None
                        small = controls.stylize(model, imaging.resize(content, work), styles, style_scale="native")
                        bicubic = F.interpolate(small, size=content.shape[-2:], mode="bicubic", align_corners=False)
                        row["bicubic_sharpness"] = round(sharpness(bicubic.clamp(0, 1)), 5)
                        if args.crops and name == args.stylizer[0] and i == 0 and side == max(args.size):
                            if native is None:
                                native = controls.stylize(model, content, styles, style_scale="native")
                            write_crops(args.crops, content, native, out)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


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
    parser.add_argument("--johnson-style", default="/work/shared/eval/style/candy.jpg", help="johnson's painting")
    parser.add_argument("--size", action="append", type=int, help="photo longer sides (default 512 1024 2048 4096)")
    parser.add_argument("--style-scale", type=int, default=DEFAULT_STYLE_SCALE)
    parser.add_argument("--content", help="photo (default: scikit-image's astronaut)")
    parser.add_argument("--encoder-weights", default="hed-vgg16", help="VGG that measures the distances")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--native-up-to", type=int, help="skip native rows above this size (they are slow)")
    parser.add_argument("--crops", type=Path, help="write native-vs-default crops of the largest photo here")
    args = parser.parse_args(argv)
    args.stylizer = args.stylizer or ["ghiasi", "dumoulin", "johnson"]
    args.size = args.size or [512, 1024, 2048, 4096]
    args.index = args.index or [0]
    bench(args)


if __name__ == "__main__":
    main()
