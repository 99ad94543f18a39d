"""WCT at relu4_1 on the AdaIN weights: parity with PytorchWCT's whiten_and_color, stability, controls."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.models import Style, create, vgg
from tests.helpers_ff import (
    blue_stripes_style,
    one_line,
    red_smooth_style,
    smooth_image,
    write_published_adain,
)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_published_adain(tmp_path_factory.mktemp("wct"), vgg_seed=11, decoder_seed=12)


@pytest.fixture(scope="module")
def model(published):
    return create("wct", weights=str(published[0]))


def ref_whiten_and_color(cF, sF):  # noqa: N803 - PytorchWCT util.py, transcribed
    cFSize = cF.size()  # noqa: N806
    c_mean = torch.mean(cF, 1).unsqueeze(1).expand_as(cF)
    cF = cF - c_mean
    contentConv = torch.mm(cF, cF.t()).div(cFSize[1] - 1) + torch.eye(cFSize[0]).double()  # noqa: N806
    c_u, c_e, c_v = torch.svd(contentConv, some=False)
    k_c = cFSize[0]
    for i in range(cFSize[0]):
        if c_e[i] < 0.00001:
            k_c = i
            break
    sFSize = sF.size()  # noqa: N806
    s_mean = torch.mean(sF, 1)
    sF = sF - s_mean.unsqueeze(1).expand_as(sF)
    styleConv = torch.mm(sF, sF.t()).div(sFSize[1] - 1)  # noqa: N806
    s_u, s_e, s_v = torch.svd(styleConv, some=False)
    k_s = sFSize[0]
    for i in range(sFSize[0]):
        if s_e[i] < 0.00001:
            k_s = i
            break
    c_d = (c_e[0:k_c]).pow(-0.5)
    whiten_cF = torch.mm(torch.mm(torch.mm(c_v[:, 0:k_c], torch.diag(c_d)), c_v[:, 0:k_c].t()), cF)  # noqa: N806
    s_d = (s_e[0:k_s]).pow(0.5)
    target = torch.mm(torch.mm(torch.mm(s_v[:, 0:k_s], torch.diag(s_d)), s_v[:, 0:k_s].t()), whiten_cF)
    return target + s_mean.unsqueeze(1).expand_as(target)


def reference(enc, dec, content, style, alpha=1.0):
    """PytorchWCT transform() at the relu4_1 level, per image, decoded by the AdaIN decoder."""
    out = []
    s = enc(style)[0].double()
    for c in enc(content):
        c = c.double()
        target = ref_whiten_and_color(c.view(c.shape[0], -1), s.view(s.shape[0], -1)).view_as(c)
        out.append((alpha * target + (1.0 - alpha) * c).float())
    return dec(torch.stack(out))


def test_parity_with_original_regulariser(published):
    _, enc, dec = published
    original = create("wct", weights=str(published[0]), eps=1.0)  # the original adds the identity
    content, style = smooth_image(1, 64, 64, batch=2), smooth_image(2, 48, 72)
    alpha = 0.7  # both the transformed and the content term count
    ref = reference(enc, dec, content, style, alpha)
    assert ((ref > 0) & (ref < 1)).float().mean().item() > 0.9
    out = original(content, [Style(image=style)], alpha=alpha)
    assert (out - ref.clamp(0, 1)).abs().max().item() < 1e-4


def test_default_eps_whitens_more_than_the_identity_regulariser(model, published):
    content, style = smooth_image(3, 64, 64), blue_stripes_style(64, 64)
    f_s = model.encode(style)
    original = create("wct", weights=str(published[0]), eps=1.0)
    t_small = _decoder_input(model, content, [Style(image=style)])
    t_eye = _decoder_input(original, content, [Style(image=style)])
    # colouring with the style covariance should reproduce its per-channel std; the identity damps it
    _, s_std = vgg.mean_std(f_s)
    err_small = (vgg.mean_std(t_small)[1] - s_std).norm().item()
    err_eye = (vgg.mean_std(t_eye)[1] - s_std).norm().item()
    assert err_small < err_eye


def test_shapes_range_batch_and_odd_sizes(model):
    content, style = smooth_image(4, 37, 53, batch=2), red_smooth_style(29, 61)
    out = model(content, [Style(image=style)])
    assert out.shape == content.shape
    assert out.min().item() >= 0 and out.max().item() <= 1
    assert torch.isfinite(out).all()


def test_degenerate_content_stays_finite(model):
    flat = torch.full((1, 3, 32, 32), 0.5)
    out = model(flat, [Style(image=blue_stripes_style(32, 32))])
    assert torch.isfinite(out).all()


def test_alpha_zero_reconstructs_and_distance_grows_with_alpha(model, published):
    _, enc, dec = published
    content, style = smooth_image(5, 64, 64), blue_stripes_style(40, 56)
    recon = dec(enc(content)).clamp(0, 1)
    dists = [(model(content, [Style(image=style)], alpha=a) - recon).abs().mean().item() for a in (0, 0.5, 1)]
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


def test_weighted_styles_mix_targets(model):
    content = smooth_image(6, 64, 64)
    a, b = red_smooth_style(48, 48), blue_stripes_style(40, 64)
    t_a = _decoder_input(model, content, [Style(image=a)])
    t_b = _decoder_input(model, content, [Style(image=b)])
    t_mix = _decoder_input(model, content, [Style(image=a, weight=2), Style(image=b, weight=1)])
    assert (t_mix - (2 * t_a + t_b) / 3).abs().max().item() < 1e-4


def test_masked_regions_take_their_own_style_statistics(model):
    content = smooth_image(7, 64, 64)
    style_a, style_b = red_smooth_style(48, 48), blue_stripes_style(56, 40)
    masks = torch.zeros(1, 2, 64, 64)
    masks[:, 0, :, :32] = 1
    masks[:, 1, :, 32:] = 1
    t = _decoder_input(model, content, [Style(image=style_a), Style(image=style_b)], masks)
    stats = {k: vgg.mean_std(model.encode(s)) for k, s in (("a", style_a), ("b", style_b))}

    def dist(region, key):
        mean, std = vgg.mean_std(region)
        return ((mean - stats[key][0]).norm() + (std - stats[key][1]).norm()).item()

    left, right = t[..., :4], t[..., 4:]
    assert dist(left, "a") < 0.5 * dist(left, "b")
    assert dist(right, "b") < 0.5 * dist(right, "a")
    # the region mean is the style mean exactly: whitening centres on the region's own mean
    assert (vgg.mean_std(left)[0] - stats["a"][0]).abs().max().item() < 1e-3


def test_missing_weights_point_to_adain(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="pytorch-AdaIN") as err:
        create("wct")
    assert one_line(err.value)
