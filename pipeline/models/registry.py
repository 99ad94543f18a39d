"""Model registry: ``register`` / ``create`` / ``list_models``.

Each entry is a ``ModelCard``: the family, where its weights come from, how inputs are
preprocessed, and a factory. Family modules register themselves on import; importing
``pipeline.models`` imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ModelNotFound
from pipeline.models.base import StyleKind, Stylizer


@dataclass(frozen=True)
class ModelCard:
    """Everything the CLI, the jobs and the docs need to know about one stylizer."""

    name: str
    family: str
    paper: str
    style_kind: StyleKind
    weight_sources: tuple[str, ...]
    preprocessing: str
    factory: Callable[..., Stylizer]
    # returns (available, where-or-how-to-get) without loading anything heavy
    availability: Callable[[], tuple[bool, str]] = field(default=lambda: (True, "no weights needed"))
    feed_forward: bool = True


_REGISTRY: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    if card.name in _REGISTRY:
        raise ValueError(f"stylizer {card.name!r} registered twice")
    _REGISTRY[card.name] = card
    return card


def get_card(name: str) -> ModelCard:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelNotFound(f"unknown stylizer {name!r}; known: {known}") from None


def list_models() -> list[ModelCard]:
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def create(name: str, **kwargs: Any) -> Stylizer:
    """Build the named stylizer with its weights loaded, in eval mode.

    Keyword arguments are the card's factory's: typically ``weights`` (a URI/path),
    ``encoder_weights`` (a VGG source id) and ``device``.
    """
    model = get_card(name).factory(**kwargs)
    return model.eval()
