"""The one device resolver, shared by inference (``stylize image``, batch actors, benchmarks) and training.

``check_device`` is torch-free, so config validation (``JobConfig``, ``TrainConfig``) accepts exactly
the names ``resolve_device`` accepts without importing torch: ``auto``, ``cpu``, ``cuda``, ``cuda:N``
and ``mps``. ``resolve_device`` then checks the name against this machine.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(text: str) -> str:
    """``text`` if it names a device this package knows; else a one-line ``ConfigError``."""
    if not isinstance(text, str) or not _DEVICE.fullmatch(text):
        raise ConfigError(f"unknown device {text!r}; use {DEVICE_NAMES}")
    return text


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for ``spec``; ``auto`` (or None) is cuda, else mps, else cpu.

    A device this machine does not have is a one-line ``ConfigError`` that says what to use instead.
    """
    import torch

    name = check_device("auto" if spec is None else str(spec))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is visible; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' needs Apple-silicon torch with MPS available; use --device cpu")
    return torch.device(name)
