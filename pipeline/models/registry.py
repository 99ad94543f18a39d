"""Model registry: ``register`` / ``create`` / ``list_models``.

Each entry is a ``ModelCard``: the ``Stylizer`` class, the paper, where its weights come from
(and under which licence), how inputs are preprocessed, and a factory. What the class already
declares (name, family, style kind, feed-forward, native masks, input range) is read from the
class, never repeated on the card. Family modules register themselves on import; importing
``pipeline.models`` imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ModelNotFound
from pipeline.models.base import StyleKind, Stylizer


@dataclass(frozen=True)
class WeightSource:
    """One place a stylizer's weights can come from; with ``file`` set, one published file.

    A published file lives in the cache as ``cache_dir()/<folder>/<file>`` (a zip: its ``members``,
    by base name, unpacked there) and a mirror serves it as ``<mirror>/<file>``. ``url`` is where a
    plain GET fetches it ("" when it must be downloaded by hand: ``stylize models import``).
    """

    name: str  # what it is: "decoder.pth + vgg_normalised.pth"
    where: str  # where it comes from: a URL, a package file, a command
    licence: str  # under which terms it is published ("yours" for what you train)
    file: str = ""  # the published file's name, in the cache and on a mirror
    folder: str = ""  # its cache sub-folder (the family's default location)
    url: str = ""  # the publisher's download URL
    size: int = 0  # bytes as published (from the parameter count where no listing gives it; for display)
    sha256: str | None = None  # where a publisher gives one; else the first download's digest is recorded
    members: tuple[str, ...] = ()  # a zip: the files it must hold, unpacked into the folder
    non_commercial: bool = False  # its licence is printed when it is fetched


def _no_weights() -> tuple[bool, str]:
    return True, "no weights needed"


@dataclass(frozen=True)
class ModelCard:
    """Everything the CLI, the jobs and the docs need to know about one stylizer."""

    stylizer: type[Stylizer]
    paper: str
    factory: Callable[..., Stylizer]
    weight_sources: tuple[WeightSource, ...] = ()
    # what happens to the [0,1] input inside the family (scales, padding, crops)
    preprocessing: str = ""
    # returns (available, where-or-how-to-get) without loading anything heavy
    availability: Callable[[], tuple[bool, str]] = _no_weights
    # one network per file (johnson, the GANs): the published network used without --weights;
    # "" for families that read their whole cache folder (adain, wct, sanet)
    default_network: str = ""

    @property
    def name(self) -> str:
        return self.stylizer.name

    @property
    def family(self) -> str:
        return self.stylizer.family

    @property
    def style_kind(self) -> StyleKind:
        return self.stylizer.style_kind

    @property
    def feed_forward(self) -> bool:
        return self.stylizer.feed_forward

    @property
    def native_masks(self) -> bool:
        return self.stylizer.native_masks

    @property
    def input_range(self) -> tuple[float, float]:
        return self.stylizer.input_range


_REGISTRY: dict[str, ModelCard] = {}


def register(card: ModelCard) -> ModelCard:
    if not card.name:
        raise ValueError(f"{card.stylizer.__name__} has no name")
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
