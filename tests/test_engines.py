"""The onnxruntime engine for dumoulin gives the torch port's output, and refuses what it cannot run."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import create
from pipeline.models.base import Style
from pipeline.models.engines import OnnxNet, load_stylizer, resolve_engine, with_engine

pytest.importorskip("onnxruntime")


def test_onnxruntime_engine_matches_the_torch_port() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 61, 83)  # odd sizes: the Stylizer pads to the network's multiple either way
    torch_model = create("dumoulin", device="cpu")
    ort_model = with_engine(create("dumoulin", device="cpu"), "onnxruntime", threads=1)
    styles = [[Style(index=7)], [Style(index=3, weight=0.5), Style(index=12, weight=0.5)]]
    with torch.inference_mode():
        a, b = torch_model(x, styles[0], alpha=0.7), ort_model(x, styles[0], alpha=0.7)
        each_a, each_b = torch_model.forward_each(x, styles), ort_model.forward_each(x, styles)
    assert a.shape == b.shape == x.shape
    assert (a - b).abs().max() < 1e-3
    assert (each_a - each_b).abs().max() < 1e-3
    assert (each_a[1] - a[1]).abs().max() > 0.01  # the second image really got its own style


def test_small_images_run_as_one_batch_with_the_same_pixels() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 24, 40)  # below OnnxNet.BATCH_PIXELS: one call for the batch
    torch_model = create("dumoulin", device="cpu")
    ort_model = with_engine(create("dumoulin", device="cpu"), "onnxruntime", threads=1)
    with torch.inference_mode():
        batched = ort_model(x, [Style(index=7)])
        assert ort_model.net._batched is not None
        one_by_one = torch.cat([ort_model(x[i : i + 1], [Style(index=7)]) for i in range(4)])
        reference = torch_model(x, [Style(index=7)])
    assert (batched - one_by_one).abs().max() < 1e-6
    assert (batched - reference).abs().max() < 1e-3


def test_engine_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine("auto", "dumoulin", cpu) == "onnxruntime"
    assert resolve_engine("auto", "dumoulin", cpu, custom_weights=True) == "torch"
    assert resolve_engine("auto", "dumoulin", cuda) == "torch"
    assert resolve_engine("auto", "ghiasi", cpu) == "torch"
    assert resolve_engine("torch", "dumoulin", cpu) == "torch"
    with pytest.raises(ConfigError, match="onnxruntime runs dumoulin"):
        resolve_engine("onnxruntime", "ghiasi", cpu)


def test_load_stylizer_is_create_then_the_resolved_engine() -> None:
    cpu = torch.device("cpu")
    auto = load_stylizer("dumoulin", device=cpu)
    assert isinstance(auto.net, OnnxNet)  # auto on CPU: onnxruntime for dumoulin's bundled weights
    assert not isinstance(load_stylizer("dumoulin", device=cpu, engine="torch").net, OnnxNet)
    with pytest.raises(ConfigError, match="onnxruntime runs dumoulin"):
        load_stylizer("ghiasi", device=cpu, engine="onnxruntime")
