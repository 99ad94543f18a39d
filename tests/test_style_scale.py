"""The style scale: strokes keep their size relative to the photo, with full-size detail from the photo.

A stylizer whose output has a fixed stroke period in pixels (it multiplies the photo by a sinusoid of
``PERIOD`` px) goes through the real ``controls.stylize``; the period is measured back from the output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from pipeline import imaging, layout
from pipeline.config import JobConfig, load_config
from pipeline.errors import ConfigError, InputError
from pipeline.models import controls
from pipeline.models.base import Style, Stylizer
from pipeline.models.registry import ModelCard, ModelNotFound, get_card, register
from pipeline.models.upsample import guided_upsample
from pipeline.scale import DEFAULT_STYLE_SCALE, parse_style_scale
from tests.fakes import TintStylizer, solid

PERIOD = 16  # px: the test stylizer's stroke period at the size it is run at
RED, BLUE = solid((0.9, 0.1, 0.1)), solid((0.1, 0.1, 0.9))


class Stripes(Stylizer):
    """Vertical strokes of ``PERIOD`` px: ``content * (0.6 + 0.4 cos(2 pi x / PERIOD))``; records the sizes it saw."""

    name = "test-stripes"
    family = "test"
    style_kind = "index"
    per_sample_styles = True

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def transfer(self, content: torch.Tensor, styles: list[Style], *, alpha: float, masks: torch.Tensor | None):
        self.sizes.append(tuple(content.shape[-2:]))
        x = torch.arange(content.shape[-1], dtype=content.dtype)
        wave = 0.6 + 0.4 * torch.cos(2 * torch.pi * x / PERIOD)
        return alpha * content * wave + (1 - alpha) * content

    def transfer_each(self, content: torch.Tensor, styles: list[list[Style]], *, alpha: float) -> torch.Tensor:
        return self.transfer(content, styles[0], alpha=alpha, masks=None)


def _register() -> None:
    """Register ``test-stripes`` once, so the CLI and job tests can name it."""
    try:
        get_card(Stripes.name)
    except ModelNotFound:
        register(ModelCard(stylizer=Stripes, paper="test double", preprocessing="none", factory=lambda **_: Stripes()))


_register()


def smooth_photo(side: int) -> torch.Tensor:
    """A 4:3 landscape (1,3,3/4 side,side) of smooth colour ramps: nothing periodic of its own."""
    h = side * 3 // 4
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, side), indexing="ij")
    return torch.stack([0.3 + 0.5 * xs, 0.8 - 0.5 * ys, 0.4 + 0.2 * (xs * ys)])[None]


def measured_period(out: torch.Tensor) -> float:
    """The dominant horizontal period (px) of ``out``: the peak of the FFT of its column means."""
    profile = out[0].mean((0, 1)).double()
    spectrum = torch.fft.rfft(profile - profile.mean()).abs()
    spectrum[0] = 0
    return out.shape[-1] / int(spectrum.argmax())


@pytest.mark.parametrize("side", [512, 1024, 2048, 4096])
def test_the_stroke_period_scales_with_the_photo_by_default_and_stays_fixed_when_native(side: int) -> None:
    photo = smooth_photo(side)
    default = measured_period(controls.stylize(Stripes(), photo, [Style(index=0)], tile_pixels=None))
    native = measured_period(controls.stylize(Stripes(), photo, [Style(index=0)], style_scale="native"))
    # at or below the style scale the photo is stylized as it is; above it strokes grow with the photo
    expected = PERIOD * max(1.0, side / DEFAULT_STYLE_SCALE)
    assert default == pytest.approx(expected, rel=0.03), (side, default)
    assert native == pytest.approx(PERIOD, rel=0.03), (side, native)


def test_photos_at_or_below_the_style_scale_are_untouched_and_native_is_todays_path() -> None:
    photo = smooth_photo(DEFAULT_STYLE_SCALE)
    model = Stripes()
    assert torch.equal(controls.stylize(model, photo, [Style(index=0)]), model(photo, [Style(index=0)]))
    big = smooth_photo(1000)
    assert torch.equal(
        controls.stylize(model, big, [Style(index=0)], style_scale="native"), model(big, [Style(index=0)])
    )
    model.sizes.clear()
    controls.stylize(model, big, [Style(index=0)], style_scale=500)
    assert model.sizes == [(375, 500)]  # the network ran at the working size only


@pytest.mark.parametrize("bad", ["huge", 10, 0, -640, 40_000, True, 1.5, None, ""])
def test_bad_style_scales_are_one_line_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^style_scale must be 'native' or a longer side of 64 to 32768 px, got"):
        parse_style_scale(bad)
    with pytest.raises(ConfigError, match="style_scale"):
        controls.stylize(Stripes(), smooth_photo(64), [Style(index=0)], style_scale=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^invalid job config: style_scale: must be 'native' or .*\n?$"):
        JobConfig(manifest="m.parquet", output="out", style_scale=bad)


def test_style_scale_values_accepted_everywhere() -> None:
    assert [parse_style_scale(v) for v in ("native", " NATIVE ", "800", 800)] == ["native", "native", 800, 800]
    assert JobConfig(manifest="m", output="o").style_scale == DEFAULT_STYLE_SCALE
    assert load_config(None, ["style_scale=native"], manifest="m", output="o").style_scale == "native"
    assert load_config(None, ["style_scale=1500"], manifest="m", output="o").style_scale == 1500


# --- the edge-aware upsampler -----------------------------------------------------------------------


def _step(h: int, w: int, edge: int) -> torch.Tensor:
    img = torch.full((1, 3, h, w), 0.2)
    img[..., edge:] = 0.8
    return img


def _rise_width(row: torch.Tensor) -> int:
    """Pixels between 10% and 90% of a rising step's height along ``row`` (1-D)."""
    lo, hi = float(row[:8].mean()), float(row[-8:].mean())
    frac = (row - lo) / (hi - lo)
    return int(((frac > 0.1) & (frac < 0.9)).sum())


def test_guided_upsampling_keeps_a_step_edge_sharp_where_bicubic_blurs_it() -> None:
    """Stylized = a tone curve of the photo, at 1/4 size. Sharpness measure: the 10-90% rise width of the
    edge at full size (px), and the error against the full-size truth near the edge."""
    photo = _step(64, 1024, edge=517)  # not on the 4 px grid of the working size
    truth = 0.1 + 0.8 * photo
    low = 0.1 + 0.8 * imaging.resize(photo, (16, 256))
    guided = guided_upsample(low, photo)
    bicubic = F.interpolate(low, size=(64, 1024), mode="bicubic", align_corners=False).clamp(0, 1)
    row = slice(500, 540)
    guided_width, bicubic_width = _rise_width(guided[0, 0, 32, row]), _rise_width(bicubic[0, 0, 32, row])
    assert guided_width <= 1 and bicubic_width >= 4, (guided_width, bicubic_width)
    guided_err, bicubic_err = (guided - truth)[..., row].abs().mean(), (bicubic - truth)[..., row].abs().mean()
    assert guided_err < bicubic_err / 5, (float(guided_err), float(bicubic_err))


def test_guided_upsampling_is_the_identity_at_equal_sizes_and_bounded_in_bands() -> None:
    low = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    assert guided_upsample(low, torch.rand(2, 3, 40, 50)) is low
    guide = torch.rand(2, 3, 161, 203, generator=torch.Generator().manual_seed(1))
    whole = guided_upsample(low, guide, band_pixels=10**9)
    banded = guided_upsample(low, guide, band_pixels=7 * 203)  # 7 rows at a time
    assert whole.shape == (2, 3, 161, 203) and whole.min() >= 0 and whole.max() <= 1
    assert (whole - banded).abs().max() < 1e-5
    with pytest.raises(InputError, match="enlarges"):
        guided_upsample(guide, low)
    with pytest.raises(InputError, match="guide"):
        guided_upsample(low, guide[:1])


def test_strokes_that_ignore_the_photo_are_enlarged_not_blurred() -> None:
    """Where the output does not follow the photo (a ~ 0), the result is the plain cubic enlargement, not a
    box blur, and no photo texture is painted over it."""
    from pipeline.models.upsample import _band_up

    low = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    flat = torch.full((1, 3, 128, 128), 0.5)
    plain = _band_up(low, (128, 128), 0, 128, "cubic").clamp(0, 1)
    assert (guided_upsample(low, flat) - plain).abs().max() < 1e-5
    bicubic = F.interpolate(low, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    # as sharp as torch's bicubic but for its extra overshoot (0.95x); a 5x5 box blur first would keep 0.10x
    steps = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert steps(plain) > 0.9 * steps(bicubic), (float(steps(plain)), float(steps(bicubic)))


def test_the_enlargement_is_catmull_rom_it_reproduces_quadratics() -> None:
    """Keys' cubic with a = -0.5 is exact on quadratics; torch's bicubic (a = -0.75) is not (~2e-3 here)."""
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    quadratic = lambda y, x: 0.1 + 4e-4 * (x * x + 0.5 * y * y + 0.3 * x * y)  # noqa: E731
    centres = (torch.arange(128.0) + 0.5) / 4 - 0.5  # output pixel centres in input pixels
    big_y, big_x = torch.meshgrid(centres, centres, indexing="ij")
    out = guided_upsample(quadratic(ys, xs)[None, None], torch.full((1, 1, 128, 128), 0.5))
    inside = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # clear of the clamped border samples
    assert (out - quadratic(big_y, big_x))[inside].abs().max() < 1e-5


def test_an_enlargement_seen_whole_keeps_the_strokes_look() -> None:
    """Flat shapes with hard edges (a painting's strokes) enlarged 6x, then seen back at half the working
    size as the metrics see a picture: the same contrast as the result seen directly (the overshoot of
    torch's bicubic adds 2.8% of contrast and 0.010 of mean error here; Catmull-Rom 1.6% and 0.006)."""
    blocks = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    low = F.interpolate(blocks, size=(64, 64), mode="nearest") * 0.8 + 0.1
    seen = imaging.resize(guided_upsample(low, torch.full((1, 3, 384, 384), 0.5)), (32, 32))
    direct = imaging.resize(low, (32, 32))
    assert float(seen.std() / direct.std()) < 1.02
    assert float((seen - direct).abs().mean()) < 0.008


class Toned(Stylizer):
    """A stylizer that follows the photo: a tone curve of it plus flat strokes of ``PERIOD`` px."""

    name = "test-toned"
    family = "test"
    style_kind = "index"

    def transfer(self, content: torch.Tensor, styles: list[Style], *, alpha: float, masks: torch.Tensor | None):
        x = torch.arange(content.shape[-1], dtype=content.dtype)
        return (0.1 + 0.7 * content + 0.1 * torch.sign(torch.sin(2 * torch.pi * x / PERIOD))).clamp(0, 1)


def _textured(side: int) -> torch.Tensor:
    """A photo with real detail at every scale: smooth ramps plus pixel-level noise (not an enlargement)."""
    noise = torch.rand(1, 1, side * 3 // 4, side, generator=torch.Generator().manual_seed(4))
    return (0.8 * smooth_photo(side) + 0.2 * noise).clamp(0, 1)


def test_the_full_size_output_carries_the_photos_own_detail() -> None:
    """The benchmark's detail ratio at test sizes: the 3x photo's output against the 1x photo's output
    enlarged bicubically, both above the style scale. The photo's detail beyond the working size comes
    back (a plain enlargement of the working-size result gives ~1.0x)."""
    from pipeline.bench.scale import detail_ratio

    model, photo = Toned(), _textured(384)
    small_photo = imaging.resize(photo, (96, 128))  # a real downscale: the same scene, less detail
    small = controls.stylize(model, small_photo, [Style(index=0)], style_scale=64)
    large = controls.stylize(model, photo, [Style(index=0)], style_scale=64)
    ratio = detail_ratio(large, small)
    assert ratio >= 1.15, ratio
    working = controls.stylize(model, imaging.resize(photo, (48, 64)), [Style(index=0)])
    plain = F.interpolate(working, size=(288, 384), mode="bicubic", align_corners=False).clamp(0, 1)
    assert detail_ratio(plain, small) < 1.05, detail_ratio(plain, small)


# --- the other controls keep working above the style scale ---------------------------------------


def _noisy(h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(1, 3, 6, 8, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
    return (0.7 * low + 0.3 * torch.rand(1, 3, h, w, generator=gen)).clamp(0, 1)


def test_pixel_alpha_blends_with_the_full_size_photo() -> None:
    class Grey(TintStylizer):
        pixel_alpha = True

    photo = _noisy(480, 1280)
    out = controls.stylize(Grey(), photo, [Style(image=RED)], alpha=0.0)
    assert (out - photo).abs().max() < 1e-6  # the photo's own pixels, not its working-size copy enlarged
    half = controls.stylize(Grey(), photo, [Style(image=RED)], alpha=0.5)
    full = controls.stylize(Grey(), photo, [Style(image=RED)], alpha=1.0)
    assert (half - (0.5 * full + 0.5 * photo)).abs().max() < 1e-5


def test_masks_are_composited_at_full_size() -> None:
    photo = _noisy(480, 1280)
    masks = torch.zeros(1, 2, 480, 1280)
    masks[:, 0, :, :701], masks[:, 1, :, 701:] = 1, 1
    out = controls.stylize(TintStylizer(), photo, [Style(image=RED), Style(image=BLUE)], masks=masks)
    red_minus_blue = (out[0, 0] - out[0, 2]).mean(0)
    # the boundary is one pixel wide: full-size masks, not masks that went through the working size
    assert red_minus_blue[700] > 0.2 and red_minus_blue[701] < -0.2, red_minus_blue[698:704]


def test_luminance_preservation_keeps_the_full_size_chroma() -> None:
    photo = _noisy(480, 1280)
    kept = controls.stylize(TintStylizer(), photo, [Style(image=RED)], preserve_color="luminance")
    chroma = imaging.rgb_to_ycbcr(photo)[:, 1:]
    inside = ((kept > 0.001) & (kept < 0.999)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert (imaging.rgb_to_ycbcr(kept)[:, 1:] - chroma).abs()[inside].max() < 1e-4


def test_tiling_runs_at_the_working_size() -> None:
    model = Stripes()
    out = controls.stylize(model, smooth_photo(2048), [Style(index=0)], style_scale=1024, tile_pixels=300 * 300)
    assert out.shape[-2:] == (1536, 2048)
    assert len(model.sizes) > 4 and max(h * w for h, w in model.sizes) <= 300 * 300
    # each tile restarts the test stripes' phase, which moves the spectrum's peak a little
    assert measured_period(out) == pytest.approx(2 * PERIOD, rel=0.06)


def test_mixed_style_calls_use_the_style_scale() -> None:
    photo = smooth_photo(2560).expand(2, -1, -1, -1)
    model = Stripes()
    out = controls.stylize(model, photo, [[Style(index=0)], [Style(index=1)]], style_scale=640)
    assert model.sizes == [(480, 640)]
    assert measured_period(out[1:]) == pytest.approx(4 * PERIOD, rel=0.03)


def test_gatys_anchors_its_coarse_to_fine_schedule_at_the_working_side(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import gatys as g
    from pipeline.models.vgg import VGGEncoder

    assert g.schedule(2000, 3000, None, 640) == [(214, 320), (427, 640), (853, 1280), (1707, 2560), (2000, 3000)]
    assert g.schedule(2000, 3000, None) == g.pyramid(2000, 3000, None)  # native: today's pyramid
    assert g.schedule(300, 400, None, 640) == g.pyramid(300, 400, None)  # at or below the working side
    seen: list[tuple[tuple[int, int], int]] = []

    def record(self, image, content, style_images, weights, style_long, alpha):  # noqa: ANN001
        seen.append((tuple(image.shape[-2:]), style_long))
        return image

    monkeypatch.setattr(g.Gatys, "_optimise", record)
    model = g.Gatys(VGGEncoder("vgg16", last="relu5_1", source="random"), g.GatysOptions(style_size=64))
    controls.stylize(model, _noisy(300, 400), [Style(image=RED)], style_scale=128)
    # levels: the working size, then doubling; the style's size is set at the working side and scales with it
    assert seen == [((96, 128), 64), ((192, 256), 128), ((300, 400), 200)]
    seen.clear()
    controls.stylize(model, _noisy(300, 400), [Style(image=RED)], style_scale="native")
    assert seen == [((300, 400), 64)]  # today's behaviour: style_size at the full size


# --- the CLI option and the job key -----------------------------------------------------------------


def test_the_cli_option_reaches_the_controls(tmp_path: Path) -> None:
    from pipeline.cli import app

    photo = tmp_path / "photo.png"
    array = (smooth_photo(1280)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(photo)
    periods = {}
    for scale in ("native", "640"):
        out = tmp_path / f"out-{scale}.png"
        args = ["image", str(photo), "-o", str(out), "--stylizer", Stripes.name, "--style-scale", scale]
        result = CliRunner().invoke(app, [*args, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        pixels = torch.from_numpy(np.asarray(Image.open(out), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        assert pixels.shape[-2:] == (960, 1280)
        periods[scale] = measured_period(pixels)
    assert periods["native"] == pytest.approx(PERIOD, rel=0.03)
    assert periods["640"] == pytest.approx(2 * PERIOD, rel=0.03)
    bad = CliRunner().invoke(app, ["image", str(photo), "-o", str(tmp_path / "x.png"), "--style-scale", "big"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError) and "style_scale" in str(bad.exception)


def test_the_job_key_reaches_the_batch_worker(tmp_path: Path) -> None:
    from pipeline.shard import ShardWorker
    from tests.pipeline_helpers import encode, job_config, write_inputs, write_manifest

    array = (smooth_photo(1280)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    source = write_inputs(tmp_path / "in", {"p": encode(array)})["p"]
    manifest = write_manifest(tmp_path / "m.parquet", [("p", source)])
    periods = {}
    for scale in ("native", 640):
        config = job_config(manifest, tmp_path / f"out-{scale}", stylizer=Stripes.name, style="0", style_scale=scale)
        assert config.style_scale == scale
        worker = ShardWorker(config)
        try:
            worker.run(0, 0, 1)
        finally:
            worker.close()
        (row,) = pq.read_table(worker.storage.open(layout.shard_key(0))).to_pylist()
        assert row["status"] == "ok", row["error"]
        pixels = np.asarray(Image.open(row["output_uri"]), dtype=np.float32) / 255
        periods[scale] = measured_period(torch.from_numpy(pixels).permute(2, 0, 1)[None])
    assert periods["native"] == pytest.approx(PERIOD, rel=0.03)
    assert periods[640] == pytest.approx(2 * PERIOD, rel=0.03)


def test_video_frames_use_the_style_scale() -> None:
    from pipeline.video_render import frame_stylizer

    frame = (smooth_photo(1024)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    model = Stripes()
    by_default = frame_stylizer(model, [Style(index=0)])([frame])[0]
    native = frame_stylizer(model, [Style(index=0)], style_scale="native")([frame])[0]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    assert measured_period(as_tensor(native)) == pytest.approx(PERIOD, rel=0.05)
    assert measured_period(as_tensor(by_default)) == pytest.approx(PERIOD * 1024 / DEFAULT_STYLE_SCALE, rel=0.05)


@pytest.mark.parametrize("radius", [1, 2, 4])
def test_the_box_mean_cuts_windows_at_the_border_as_avg_pool_does(radius: int) -> None:
    from pipeline.models.upsample import _box

    x = torch.rand(2, 3, 19, 23)
    reference = F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    assert (_box(x, radius) - reference).abs().max() < 1e-6


def test_the_benchmarks_view_reads_an_enlarged_picture_as_the_same_picture() -> None:
    """bench.scale's style distance sees its pictures through ``view``: a 512 px ghiasi output merely
    enlarged 6x (Catmull-Rom) is the same picture, so its distance to the painting must not move. The job
    metrics' bilinear view moves it several times more (by up to 7 % on the shared paintings, which is why
    the benchmark does not use it for its 10 % bound)."""
    from skimage import data

    from pipeline.bench import scale as bench_scale
    from pipeline.metrics import QualityScorer
    from pipeline.models import create

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255

    scorer = QualityScorer.load("hed-vgg16", side=bench_scale.VIEW_SIDE)
    model = create("ghiasi").eval()
    photo = tensor(data.astronaut())
    for name, painting in (("coffee", tensor(data.coffee())), ("chelsea", tensor(data.chelsea()))):
        with torch.no_grad():
            out = controls.stylize(model, photo, [Style(image=painting)], style_scale="native")
        big = bench_scale.enlarge(out, (6 * out.shape[-2], 6 * out.shape[-1]))
        errors = {}
        for view in (False, True):
            base, seen = (bench_scale.distance(scorer, x, painting, name, metrics_view=view) for x in (out, big))
            errors[view] = seen / base - 1
        assert abs(errors[False]) < 0.006, (name, errors)
        assert abs(errors[True]) > 2 * abs(errors[False]), (name, errors)  # the test tells the two views apart
