"""Trainer registry: ``register`` / ``create`` / ``list_trainers``, like ``pipeline.models``' registry.

Each family module (``pipeline/train/<name>.py``, one per ``FAMILIES`` entry) registers its ``Task``
class on import; they are imported on first use, so ``import pipeline.train.config`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from pipeline.errors import ConfigError
from pipeline.train.config import FAMILIES, TrainConfig

if TYPE_CHECKING:
    import torch

    from pipeline.train.task import Task

_REGISTRY: dict[str, type[Task]] = {}
T = TypeVar("T", bound="type[Task]")


def register(cls: T) -> T:
    """Class decorator: make ``cls`` the trainer of ``cls.stylizer`` (a ``FAMILIES`` name)."""
    if cls.stylizer not in FAMILIES:
        raise ValueError(f"{cls.__name__}.stylizer {cls.stylizer!r} is not in train.config.FAMILIES")
    if _REGISTRY.get(cls.stylizer, cls) is not cls:
        raise ValueError(f"trainer {cls.stylizer!r} registered twice")
    _REGISTRY[cls.stylizer] = cls
    return cls


def _load_all() -> None:
    for name in FAMILIES:
        if name not in _REGISTRY:
            importlib.import_module(f"pipeline.train.{name}")


def get_trainer(name: str) -> type[Task]:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"no trainer {name!r}; use one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_trainers() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def create(config: TrainConfig, device: torch.device) -> Task:
    """The family's ``Task`` for a resolved ``config``, its VGG loss network loaded on ``device``."""
    from pipeline.models import vgg

    cls = get_trainer(config.stylizer)
    encoder = None
    if cls.needs_encoder:
        encoder = vgg.load_encoder(config.encoder_weights, last=cls.encoder_last, device=device)
    return cls(config, encoder)
