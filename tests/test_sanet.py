"""SANet: GlebSBrykin/SANET checkpoint layout, parity with its Eval.py forward, chunked attention, controls."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.models import Style, create
from pipeline.models.decoder_ckpt import save_checkpoint
from pipeline.models.sanet import Transform, attention
from tests.helpers_ff import (
    RefTransform,
    blue_stripes_style,
    one_line,
    red_smooth_style,
    smooth_image,
    write_published_sanet,
)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_published_sanet(tmp_path_factory.mktemp("sanet"), seed=21)


@pytest.fixture(scope="module")
def model(published):
    return create("sanet", weights=str(published[0]))


def test_transform_keys_match_published_layout():
    published_keys = set(RefTransform(512).state_dict())
    assert set(Transform().state_dict()) == published_keys
    assert "sanet4_1.out_conv.weight" in published_keys and "merge_conv.bias" in published_keys


def test_published_checkpoint_parity_with_chunked_attention(model, published):
    _, ref = published
    content, style = smooth_image(3, 64, 64, batch=2), smooth_image(4, 48, 80)
    expected = ref(content, style)
    assert ((expected > 0) & (expected < 1)).float().mean().item() > 0.9
    out = model(content, [Style(image=style)])
    assert (out - expected.clamp(0, 1)).abs().max().item() < 1e-4
    # force many small chunks of query rows: same result
    for block in (model.transform.sanet4_1, model.transform.sanet5_1):
        block.max_bytes = 2048
    try:
        chunked = model(content, [Style(image=style)])
    finally:
        for block in (model.transform.sanet4_1, model.transform.sanet5_1):
            block.max_bytes = 256 * 2**20
    assert (chunked - out).abs().max().item() < 1e-5


def test_attention_chunks_equal_full_softmax():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 50, 8, generator=gen),
        torch.randn(1, 8, 30, generator=gen),
        torch.randn(1, 8, 30, generator=gen),
    )
    full = v @ torch.softmax(q @ k, -1).transpose(1, 2)
    assert (attention(q, k, v, max_bytes=2 * 30 * 4 * 7) - full).abs().max().item() < 1e-5  # 7 rows a chunk


def test_odd_sizes_batch_and_range(model):
    content, style = smooth_image(5, 37, 53, batch=2), blue_stripes_style(41, 29)
    out = model(content, [Style(image=style)])
    assert out.shape == content.shape
    assert out.min().item() >= 0 and out.max().item() <= 1
    assert out.std().item() > 0.01  # not a clamped constant


def _decoder_input(model, content, styles, masks=None, alpha=1.0):
    captured = {}
    handle = model.decoder.register_forward_pre_hook(lambda _m, args: captured.setdefault("t", args[0]))
    try:
        model(content, styles, masks=masks, alpha=alpha)
    finally:
        handle.remove()
    return captured["t"]


def test_alpha_interpolates_with_content_features(model, published):
    _, ref = published
    content, style = smooth_image(6, 64, 64), red_smooth_style(48, 48)
    c4, _ = ref.features(content)
    t1 = ref.transformed(content, style)
    t_half = _decoder_input(model, content, [Style(image=style)], alpha=0.4)
    assert (t_half - (0.4 * t1 + 0.6 * c4)).abs().max().item() < 1e-3
    recon = ref.decoder(c4).clamp(0, 1)
    dists = [(model(content, [Style(image=style)], alpha=a) - recon).abs().mean().item() for a in (0, 0.5, 1)]
    assert dists[0] < 1e-5
    assert dists[0] < dists[1] < dists[2], dists


def test_weighted_styles_and_masks_combine_transformed_features(model):
    content = smooth_image(7, 64, 64)
    a, b = red_smooth_style(48, 48), blue_stripes_style(56, 40)
    t_a = _decoder_input(model, content, [Style(image=a)])
    t_b = _decoder_input(model, content, [Style(image=b)])
    t_mix = _decoder_input(model, content, [Style(image=a, weight=1), Style(image=b, weight=3)])
    assert (t_mix - (t_a + 3 * t_b) / 4).abs().max().item() < 1e-4
    masks = torch.zeros(1, 2, 64, 64)
    masks[:, 0, :, :32] = 1
    masks[:, 1, :, 32:] = 1
    t_m = _decoder_input(model, content, [Style(image=a), Style(image=b)], masks=masks)
    assert (t_m[..., :4] - t_a[..., :4]).abs().max().item() < 1e-5
    assert (t_m[..., 4:] - t_b[..., 4:]).abs().max().item() < 1e-5
    assert (t_a - t_b).abs().mean().item() > 0.1  # the two styles really differ


def test_own_safetensors_roundtrip(model, tmp_path):
    path = tmp_path / "sanet.safetensors"
    save_checkpoint(path, {"decoder": model.decoder, "transform": model.transform}, model.encoder, {})
    again = create("sanet", weights=str(path))
    content, style = smooth_image(8, 32, 48), blue_stripes_style(32, 32)
    diff = (again(content, [Style(image=style)]) - model(content, [Style(image=style)])).abs().max().item()
    assert diff < 1e-6


def test_missing_and_wrong_layouts_raise_one_line(published, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsError, match="SANET") as err:
        create("sanet")
    assert one_line(err.value)
    d = tmp_path / "partial"
    d.mkdir()
    (d / "decoder.pth").write_bytes((published[0] / "decoder.pth").read_bytes())
    with pytest.raises(WeightsError, match="transformer.pth") as err:
        create("sanet", weights=str(d))
    assert one_line(err.value)
    state = torch.load(published[0] / "transformer.pth", weights_only=True)
    torch.save({k.replace("sanet4_1", "sanet4"): v for k, v in state.items()}, d / "transformer.pth")
    with pytest.raises(WeightsError, match="do not fit") as err:
        create("sanet", weights=str(d))
    assert one_line(err.value)
