"""Benchmarks that print numbers: model-only throughput per stylizer and size on one device, and
output quality against a reference (e.g. the published SANet outputs in ``eval/reference-sanet``).

A benchmark asserts nothing. Weights do not change the arithmetic, so a
family whose weights are not installed here is timed with randomly initialised weights and
the row says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.errors import WeightsError
from pipeline.gallery import load_image
from pipeline.metrics import QualityScorer
from pipeline.models import controls, create, get_card
from pipeline.models.base import Style, Stylizer


@dataclass(frozen=True)
class BenchRow:
    stylizer: str
    size: int
    batch: int
    images_per_s: float
    seconds_per_image: float
    device: str
    weights: str
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def bench_image(size: int, batch: int = 1) -> torch.Tensor:
    """A real photo (scikit-image's astronaut when installed, else a smooth synthetic one) at size x size."""
    try:
        from skimage import data

        base = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1)[None].float() / 255
    except ImportError:
        ys, xs = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
        base = torch.stack([ys, xs, (ys + xs) / 2])[None]
    img = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", antialias=True)
    return img.expand(batch, -1, -1, -1).contiguous()


def default_styles(model: Stylizer) -> list[Style]:
    if model.style_kind == "index":
        return [Style(index=0)]
    if model.style_kind == "fixed":
        return [Style()]
    ys, xs = torch.meshgrid(torch.linspace(0, 6, 256), torch.linspace(0, 6, 256), indexing="ij")
    stripes = torch.stack(
        [torch.sin(xs * 3) * 0.5 + 0.5, torch.cos(ys * 2) * 0.5 + 0.5, torch.sin(xs + ys) * 0.5 + 0.5]
    )
    return [Style(image=stripes[None])]


def load_for_bench(
    name: str, device: torch.device, random_init: Callable[[str], Stylizer] | None, **options: object
) -> tuple[Stylizer, str]:
    """The named model with real weights if present, else random weights (for speed only)."""
    try:
        model = create(name, device=device, **options)
        return model, "installed"
    except WeightsError:
        if random_init is None:
            raise
        return random_init(name).to(device).eval(), "random-init (speed only)"


def time_stylizer(
    model: Stylizer, styles: list[Style], size: int, *, batch: int = 1, repeats: int = 3, warmup: int = 1
) -> float:
    """Seconds per image for ``repeats`` timed calls after ``warmup`` untimed ones."""
    content = bench_image(size, batch).to(model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        controls.stylize(model, content, styles, tile_pixels=None)
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        controls.stylize(model, content, styles, tile_pixels=None)
    sync()
    return (time.perf_counter() - started) / (repeats * batch)


def bench_models(
    names: Iterable[str],
    sizes: Iterable[int],
    *,
    device: torch.device,
    batch: int = 1,
    repeats: int = 3,
    gatys_steps: int = 10,
    random_init: Callable[[str], Stylizer] | None = None,
) -> Iterable[BenchRow]:
    """Yield one row per (stylizer, size); gatys is timed at ``gatys_steps`` optimisation steps."""
    for name in names:
        card = get_card(name)
        options: dict[str, object] = {} if card.feed_forward else {"steps": gatys_steps}
        model, weights = load_for_bench(name, device, random_init, **options)
        styles = default_styles(model)
        note = "" if card.feed_forward else f"{gatys_steps} optimisation steps"
        for size in sizes:
            reps = 1 if not card.feed_forward or size >= 1024 else repeats
            per_image = time_stylizer(model, styles, size, batch=batch, repeats=reps, warmup=0 if reps == 1 else 1)
            yield BenchRow(name, size, batch, 1 / per_image, per_image, str(device), weights, note)


def random_init(name: str) -> Stylizer:
    """The named feed-forward family with random weights in its published architecture (speed only)."""
    from pipeline.models import adain, animegan, cyclegan, johnson, sanet, vgg, wct

    if name == "johnson":
        return johnson.Johnson(johnson.TransformerNet())
    if name == "cyclegan":  # the published style_* generators' size: 9 blocks at ngf 64
        return cyclegan.CycleGAN(cyclegan.ResnetGenerator(64, 9))
    if name == "animegan":
        return animegan.AnimeGAN(animegan.Generator())
    encoder = vgg.VGGEncoder("vgg19", last="relu5_1" if name == "sanet" else "relu4_1", padding="reflect")
    if name == "adain":
        return adain.AdaIN(encoder, adain.build_decoder())
    if name == "wct":
        return wct.WCT(encoder, adain.build_decoder())
    if name == "sanet":
        return sanet.SANet(encoder, sanet.Transform(), adain.build_decoder())
    raise WeightsError(f"no random-weight variant of {name}")


# --- quality against a reference ------------------------------------------------------------------


@dataclass(frozen=True)
class QualityRow:
    content: str
    style: str
    source: str  # "ours", "reference" or "photo" (the unchanged content: the scale of the numbers)
    style_distance: float
    content_distance: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def reference_for(folder: Path, content: str, style: str) -> Path | None:
    """``<content stem>_stylized_<style stem>.*`` in ``folder`` (the layout of the published SANet outputs)."""
    matches = sorted(folder.glob(f"{Path(content).stem}_stylized_{Path(style).stem}.*"))
    return matches[0] if matches else None


def quality_rows(
    model: Stylizer,
    contents: Iterable[str],
    styles: Iterable[str],
    scorer: QualityScorer,
    *,
    max_side: int = 384,
    style_side: int = 256,
    reference: Path | None = None,
) -> Iterator[QualityRow]:
    """Style and content distance (``pipeline.metrics``) of the model's output for every content x style pair,
    of the unchanged photo, and of a reference output for the same pair where ``reference`` has one."""
    # loaded once: the same Style objects let the model's and the scorer's style caches hit
    style_list = [(path, Style(image=load_image(path, style_side))) for path in styles]
    for content_path in contents:
        content = load_image(content_path, max_side)
        for style_path, style in style_list:
            spec = Path(style_path).stem
            outputs = {"photo": content, "ours": controls.stylize(model, content.to(model.device), [style]).cpu()}
            found = reference_for(reference, content_path, style_path) if reference else None
            if found is not None:
                outputs["reference"] = load_image(str(found), max_side)
            for source, out in outputs.items():
                score = scorer.score(out, content, spec, [style])
                yield QualityRow(
                    Path(content_path).stem, spec, source, score["style_distance"], score["content_distance"]
                )
