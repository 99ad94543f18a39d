"""AdaIN: published pytorch-AdaIN checkpoint layout, parity with its forward, and the controls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError, InputError, WeightsError
from pipeline.models import Style, create, get_card, vgg
from pipeline.models.adain import DECODER_CONVS, build_decoder
from pipeline.models.decoder_ckpt import save_checkpoint
from tests.helpers_ff import (
    blue_stripes_style,
    one_line,
    red_smooth_style,
    ref_adain,
    reference_decoder,
    smooth_image,
    write_published_adain,
)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A directory in the published layout (decoder.pth, vgg_normalised.pth) + the reference modules."""
    return write_published_adain(tmp_path_factory.mktemp("adain"), vgg_seed=1, decoder_seed=2)


@pytest.fixture(scope="module")
def model(published):
    return create("adain", weights=str(published[0]))


def reference(enc, dec, content, style, alpha=1.0):
    """pytorch-AdaIN test.py style_transfer(), unclamped."""
    f_c, f_s = enc(content), enc(style)
    feat = ref_adain(f_c, f_s)
    return dec(feat * alpha + f_c * (1 - alpha))


def test_decoder_layout_matches_published_indices():
    keys = set(build_decoder().state_dict())
    assert keys == set(reference_decoder().state_dict())
    assert {int(k.split(".")[0]) for k in keys} == set(DECODER_CONVS)


def test_published_checkpoint_parity(model, published):
    _, enc, dec = published
    content, style = smooth_image(3, 64, 64, batch=2), smooth_image(4, 48, 80)
    for alpha in (1.0, 0.6):
        ref = reference(enc, dec, content, style, alpha)
        inside = ((ref > 0) & (ref < 1)).float().mean().item()
        assert inside > 0.9, f"calibration left only {inside:.0%} of values unclamped; parity would be vacuous"
        out = model(content, [Style(image=style)], alpha=alpha)
        assert (out - ref.clamp(0, 1)).abs().max().item() < 1e-4


def test_odd_sizes_are_padded_like_reflect_then_cropped(model, published):
    _, enc, dec = published
    content, style = smooth_image(5, 37, 53, batch=2), smooth_image(6, 29, 41)
    out = model(content, [Style(image=style)])
    assert out.shape == content.shape
    assert out.min().item() >= 0 and out.max().item() <= 1
    padded = F.pad(content, (0, 3, 0, 3), mode="reflect")  # to 40x56
    ref = reference(enc, dec, padded, style)[..., :37, :53].clamp(0, 1)
    assert (out - ref).abs().max().item() < 1e-4


def test_weighted_styles_match_original_interpolation(model, published):
    _, enc, dec = published
    content = smooth_image(7, 64, 64)
    s1, s2 = red_smooth_style(64, 64), blue_stripes_style(64, 64)
    w = [0.25, 0.75]
    f_c = enc(content)
    feat = w[0] * ref_adain(f_c, enc(s1)) + w[1] * ref_adain(f_c, enc(s2))  # test.py interpolation_weights
    ref = dec(feat).clamp(0, 1)
    out = model(content, [Style(image=s1, weight=1.0), Style(image=s2, weight=3.0)])
    assert (out - ref).abs().max().item() < 1e-4


def test_alpha_zero_reconstructs_and_distance_grows_with_alpha(model, published):
    _, enc, dec = published
    content, style = smooth_image(8, 64, 64), blue_stripes_style(40, 56)
    recon = dec(enc(content)).clamp(0, 1)
    dists = [(model(content, [Style(image=style)], alpha=a) - recon).abs().mean().item() for a in (0, 0.25, 0.5, 1)]
    assert dists[0] < 1e-5
    assert all(b > a for a, b in zip(dists, dists[1:], strict=False)), dists


def _decoder_input(model, content, styles, masks=None):
    captured = {}
    handle = model.decoder.register_forward_pre_hook(lambda _m, args: captured.setdefault("t", args[0]))
    try:
        model(content, styles, masks=masks)
    finally:
        handle.remove()
    return captured["t"]


def test_masked_regions_take_their_own_style_statistics(model):
    content = smooth_image(9, 64, 64)
    style_a, style_b = red_smooth_style(48, 48), blue_stripes_style(56, 40)
    masks = torch.zeros(1, 2, 64, 64)
    masks[:, 0, :, :32] = 1
    masks[:, 1, :, 32:] = 1
    t = _decoder_input(model, content, [Style(image=style_a), Style(image=style_b)], masks)
    assert t.shape[-2:] == (8, 8)
    stats = {k: vgg.mean_std(model.encode(s)) for k, s in (("a", style_a), ("b", style_b))}

    def dist(region, key):
        mean, std = vgg.mean_std(region)
        return ((mean - stats[key][0]).norm() + (std - stats[key][1]).norm()).item()

    left, right = t[..., :4], t[..., 4:]
    # not exact: channels that are all zero in a region keep std ~sqrt(eps) instead of the style's
    assert dist(left, "a") < 0.1 * dist(left, "b")
    assert dist(right, "b") < 0.1 * dist(right, "a")
    # and the style statistics really differ, so the check above means something
    assert dist(left, "b") > 1.0


def test_full_mask_equals_unmasked(model):
    content, style = smooth_image(10, 64, 64), red_smooth_style(40, 40)
    plain = model(content, [Style(image=style)])
    masked = model(content, [Style(image=style)], masks=torch.ones(1, 1, 64, 64))
    assert (plain - masked).abs().max().item() < 1e-5


def test_bad_masks_and_tiny_images_raise(model):
    content, style = smooth_image(11, 32, 32), red_smooth_style(32, 32)
    with pytest.raises(ConfigError, match=r"\(1, 3, 32, 32\)"):
        model(content, [Style(image=style), Style(image=style)], masks=torch.ones(1, 3, 32, 32))
    with pytest.raises(InputError, match="at least"):
        model(content, [Style(image=red_smooth_style(8, 8))])


def test_own_safetensors_roundtrip(model, tmp_path):
    path = tmp_path / "adain.safetensors"
    save_checkpoint(path, {"decoder": model.decoder}, model.encoder, {"encoder": "bundled"})
    again = create("adain", weights=str(path))
    content, style = smooth_image(12, 40, 48), blue_stripes_style(32, 32)
    diff = (again(content, [Style(image=style)]) - model(content, [Style(image=style)])).abs().max().item()
    assert diff < 1e-6


def test_default_location_and_availability(published, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path))
    ok, where = get_card("adain").availability()
    assert not ok and "releases/download/v0.0.0/decoder.pth" in where
    with pytest.raises(WeightsError, match="stylize train adain") as err:
        create("adain")
    assert one_line(err.value)
    (tmp_path / "adain").mkdir()
    for name in ("decoder.pth", "vgg_normalised.pth"):
        (tmp_path / "adain" / name).write_bytes((published[0] / name).read_bytes())
    assert get_card("adain").availability()[0]
    assert isinstance(create("adain"), nn.Module)


def test_missing_and_wrong_layouts_raise_one_line(published, tmp_path):
    with pytest.raises(WeightsError) as err:
        create("adain", weights=str(tmp_path / "nowhere"))
    assert one_line(err.value)
    # a whole Net state dict saved as decoder.pth: keys carry a prefix
    dec = torch.load(published[0] / "decoder.pth", weights_only=True)
    (tmp_path / "prefixed").mkdir()
    torch.save({f"decoder.{k}": v for k, v in dec.items()}, tmp_path / "prefixed" / "decoder.pth")
    vgg_file = published[0] / "vgg_normalised.pth"
    (tmp_path / "prefixed" / "vgg_normalised.pth").write_bytes(vgg_file.read_bytes())
    with pytest.raises(WeightsError, match="do not fit") as err:
        create("adain", weights=str(tmp_path / "prefixed"))
    assert one_line(err.value)
    # a VGG that is not in any layout we read
    (tmp_path / "badvgg").mkdir()
    torch.save(dec, tmp_path / "badvgg" / "decoder.pth")
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "badvgg" / "vgg_normalised.pth")
    with pytest.raises(WeightsError, match="unrecognised VGG") as err:
        create("adain", weights=str(tmp_path / "badvgg"))
    assert one_line(err.value)
    # a safetensors file without decoder.* keys
    from safetensors.torch import save_file

    save_file({"transform.x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(WeightsError, match=r"decoder\.\*") as err:
        create("adain", weights=str(tmp_path / "x.safetensors"))
    assert one_line(err.value)


def test_uri_prefix_with_optional_encoder(published, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path))
    fs = fsspec.filesystem("memory")
    for name in ("decoder.pth", "vgg_normalised.pth"):
        fs.pipe(f"/stylize-test/adain/{name}", (published[0] / name).read_bytes())
    model = create("adain", weights="memory://stylize-test/adain/")
    assert model.encoder.source.endswith("encoder")  # vgg_normalised.pth found next to the decoder
    content, style = smooth_image(13, 32, 32), red_smooth_style(32, 32)
    assert model(content, [Style(image=style)]).shape == content.shape
    fs.rm("/stylize-test/adain", recursive=True)


def test_explicit_encoder_weights_for_a_bare_decoder(published, tmp_path):
    (tmp_path / "decoder.pth").write_bytes((published[0] / "decoder.pth").read_bytes())
    model = create("adain", weights=str(tmp_path), encoder_weights=str(published[0] / "vgg_normalised.pth"))
    _, enc, dec = published
    content, style = smooth_image(14, 32, 40), blue_stripes_style(32, 32)
    ref = reference(enc, dec, content, style).clamp(0, 1)
    assert (model(content, [Style(image=style)]) - ref).abs().max().item() < 1e-4


def test_a_style_is_encoded_once_across_batches(model, monkeypatch):
    """A batch job reuses one style: its features are computed on the first batch only."""
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: calls.append(tuple(x.shape)) or encode(x))
    style = Style(image=torch.rand(1, 3, 40, 40))
    first = model(torch.rand(2, 3, 32, 32), [style])
    model(torch.rand(2, 3, 32, 32), [style])
    assert calls.count((1, 3, 40, 40)) == 1 and calls.count((2, 3, 32, 32)) == 2
    same = Style(image=style.image.clone())  # equal pixels in another tensor: the cache knows them by a hash
    model(torch.rand(2, 3, 32, 32), [same])
    assert calls.count((1, 3, 40, 40)) == 1
    other = Style(image=1 - style.image)  # other pixels are encoded afresh
    again = model(torch.zeros(2, 3, 32, 32), [other])
    assert calls.count((1, 3, 40, 40)) == 2 and first.shape == again.shape
