"""The one device resolver: what it accepts, what config accepts (the same), and what it picks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pipeline import devices
from pipeline.config import JobConfig
from pipeline.devices import check_device, resolve_device
from pipeline.errors import ConfigError
from pipeline.train.config import TrainConfig

GOOD = ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"]
BAD = ["", "gpu", "tpu", "CPU", " cpu", "cpu ", "cuda:", "cuda:x", "cuda:-1", "cuda0", "mps:0", "meta", "auto\n"]


@pytest.mark.parametrize("name", GOOD)
def test_known_names_pass(name: str) -> None:
    assert check_device(name) == name


@pytest.mark.parametrize("name", BAD)
def test_unknown_names_are_one_line(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_device(name)
    assert "\n" not in str(err.value) and "auto, cpu, cuda, cuda:N or mps" in str(err.value)


@pytest.mark.parametrize("name", GOOD + BAD)
def test_configs_accept_exactly_what_the_resolver_accepts(name: str) -> None:
    ok = name in GOOD
    for build in (
        lambda: JobConfig(manifest="m.parquet", output="out", device=name),
        lambda: TrainConfig(stylizer="johnson", content_manifest="c.txt", output="out", style="s.png", device=name),
    ):
        if ok:
            assert build().device == name
        else:
            with pytest.raises(ConfigError, match="device"):
                build()


def test_check_device_needs_no_torch() -> None:
    code = "import sys, pipeline.devices as d; d.check_device('cuda:1'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _machine(monkeypatch: pytest.MonkeyPatch, *, cuda: int = 0, mps: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(devices, "_mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "want"),
    [(0, False, "cpu"), (0, True, "mps"), (1, True, "cuda"), (2, False, "cuda")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, want: str) -> None:
    _machine(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto").type == want
    assert resolve_device(None).type == want


@pytest.mark.parametrize(
    ("cuda", "mps", "name", "message"),
    [
        (0, False, "cuda", "no CUDA GPU is visible"),
        (0, True, "cuda:0", "no CUDA GPU is visible"),
        (1, False, "cuda:1", "has 1 CUDA GPU"),
        (1, False, "mps", "MPS"),
        (0, False, "tpu", "unknown device 'tpu'"),
    ],
)
def test_missing_devices_are_one_line(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, name: str, message: str
) -> None:
    _machine(monkeypatch, cuda=cuda, mps=mps)
    with pytest.raises(ConfigError, match=message) as err:
        resolve_device(name)
    assert "\n" not in str(err.value)


def test_present_devices_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=2, mps=True)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_inference_and_training_share_it() -> None:
    from pipeline import shard
    from pipeline.train import loop

    assert shard.resolve_device is resolve_device and loop.resolve_device is resolve_device
