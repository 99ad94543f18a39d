"""Johnson TransformerNet: pytorch/examples checkpoint layout (old running_* keys too), 0-255 convention, alpha."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import ConfigError, InputError, WeightsError
from pipeline.models import Style, create, get_card
from tests.helpers_ff import calibrate_last_conv, kaiming_, one_line, smooth_image


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


class ConvLayer(torch.nn.Module):  # pytorch/examples transformer_net.py, transcribed
    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = torch.nn.InstanceNorm2d(channels, affine=True)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class UpsampleConvLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
        super().__init__()
        self.upsample = upsample
        if upsample:
            self.upsample_layer = torch.nn.Upsample(mode="nearest", scale_factor=upsample)
        self.reflection_pad = torch.nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        x_in = x
        if self.upsample:
            x_in = self.upsample_layer(x_in)
        return self.conv2d(self.reflection_pad(x_in))


class RefTransformerNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = torch.nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = torch.nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = torch.nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = torch.nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = torch.nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = torch.nn.ReLU()

    def forward(self, X):  # noqa: N803
        y = self.relu(self.in1(self.conv1(X)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res1(y)
        y = self.res2(y)
        y = self.res3(y)
        y = self.res4(y)
        y = self.res5(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


@pytest.fixture(scope="module")
def reference():
    net = kaiming_(RefTransformerNet(), seed=31).eval()
    # outputs in 0-255 like a trained pytorch/examples model, mostly inside the clamp range
    calibrate_last_conv(net, smooth_image(0, 64, 64) * 255, mean=127.5, std=50.0)
    return net


@pytest.fixture(scope="module")
def old_checkpoint(reference, tmp_path_factory):
    """A .pth as early PyTorch saved it: InstanceNorm running_mean/var buffers included."""
    state = dict(reference.state_dict())
    for key in [k for k in state if re.search(r"(^|\.)in\d+\.weight$", k)]:
        prefix = key[: -len("weight")]
        state[prefix + "running_mean"] = torch.zeros_like(state[key])
        state[prefix + "running_var"] = torch.ones_like(state[key])
    assert "in1.running_mean" in state and "res3.in2.running_var" in state
    path = tmp_path_factory.mktemp("johnson") / "candy.pth"
    torch.save(state, path)
    return path


def expected(net, content, alpha=1.0):
    """neural_style.py stylize(): 0-255 in, 0-255 out; then our [0,1] contract and pixel-space alpha."""
    out = net(content * 255) / 255
    return (alpha * out + (1 - alpha) * content).clamp(0, 1)


def test_old_pytorch_examples_checkpoint_loads_and_matches(reference, old_checkpoint):
    model = create("johnson", weights=str(old_checkpoint))
    content = smooth_image(1, 64, 64, batch=2)
    ref = expected(reference, content)
    assert ((ref > 0) & (ref < 1)).float().mean().item() > 0.9
    out = model(content, [Style()])
    assert (out - ref).abs().max().item() < 1e-4


def test_odd_sizes_batch_range_and_alpha(reference, old_checkpoint):
    model = create("johnson", weights=str(old_checkpoint))
    content = smooth_image(2, 37, 53, batch=2)
    out = model(content, [Style()])
    assert out.shape == content.shape
    assert out.min().item() >= 0 and out.max().item() <= 1
    assert (model(content, [Style()], alpha=0.0) - content).abs().max().item() < 1e-6
    padded = torch.nn.functional.pad(content, (0, 3, 0, 3), mode="reflect")  # to 40x56, multiples of 4
    for alpha in (1.0, 0.5):
        ref = expected(reference, padded, alpha)[..., :37, :53]
        assert (model(content, [Style()], alpha=alpha) - ref).abs().max().item() < 1e-4
    dists = [(model(content, [Style()], alpha=a) - content).abs().mean().item() for a in (0.0, 0.5, 1.0)]
    assert dists[0] < dists[1] < dists[2]


def test_safetensors_with_input_scale_metadata(reference, tmp_path):
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = tmp_path / "unit.safetensors"
    save_file(state, str(path), metadata={"input_scale": "1"})
    model = create("johnson", weights=str(path))
    content = smooth_image(3, 32, 48)
    assert (model(content, [Style()]) - reference(content).clamp(0, 1)).abs().max().item() < 1e-4
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"input_scale": "big"})
    with pytest.raises(WeightsError, match="input_scale") as err:
        create("johnson", weights=str(tmp_path / "bad.safetensors"))
    assert one_line(err.value)


def test_missing_and_wrong_weights_raise_one_line(reference, tmp_path):
    with pytest.raises(WeightsError, match="stylize train johnson") as err:
        create("johnson")
    assert one_line(err.value)
    assert not get_card("johnson").availability()[0]
    state = dict(reference.state_dict())
    state.pop("res5.conv2.conv2d.weight")
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="res5.conv2.conv2d.weight") as err:
        create("johnson", weights=str(tmp_path / "broken.pth"))
    assert one_line(err.value)


def test_fixed_style_rejects_mixing_and_tiny_inputs(old_checkpoint):
    model = create("johnson", weights=str(old_checkpoint))
    with pytest.raises(ConfigError):
        model(smooth_image(4, 32, 32), [Style(weight=0.5), Style(weight=0.5)])
    with pytest.raises(InputError, match="at least"):
        model(torch.rand(1, 3, 4, 30), [Style()])
