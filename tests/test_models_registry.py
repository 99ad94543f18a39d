"""The model cards: derived from each Stylizer class (one source of truth), with structured weight sources."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models import ModelCard, Stylizer, WeightSource, get_card, list_models, register

BUILT_IN = ("adain", "dumoulin", "gatys", "ghiasi", "johnson", "sanet", "wct")


def test_built_in_families_are_registered() -> None:
    assert set(BUILT_IN) <= {card.name for card in list_models()}


@pytest.mark.parametrize("name", BUILT_IN)
def test_card_fields_come_from_the_stylizer_class(name: str) -> None:
    card = get_card(name)
    cls = card.stylizer
    assert issubclass(cls, Stylizer) and cls.name == name
    assert (card.family, card.style_kind, card.feed_forward, card.native_masks, card.input_range) == (
        cls.family,
        cls.style_kind,
        cls.feed_forward,
        cls.native_masks,
        cls.input_range,
    )
    assert card.input_range == (0.0, 1.0)  # the one contract every family keeps
    assert card.paper and card.weight_sources
    for source in card.weight_sources:
        assert isinstance(source, WeightSource) and source.name and source.where and source.licence
    ok, where = card.availability()
    assert isinstance(ok, bool) and where


def test_no_card_repeats_what_the_class_declares() -> None:
    fields = set(ModelCard.__dataclass_fields__)
    assert not fields & {"name", "family", "style_kind", "feed_forward", "native_masks", "native_mixing"}
    assert not hasattr(Stylizer, "native_mixing")  # declared and never read: dropped


def test_register_refuses_duplicates_and_nameless_classes() -> None:
    card = get_card("dumoulin")
    with pytest.raises(ValueError, match="registered twice"):
        register(card)

    class Nameless(Stylizer):
        pass

    with pytest.raises(ValueError, match="no name"):
        register(ModelCard(stylizer=Nameless, paper="-", factory=Nameless))


def test_models_list_and_show() -> None:
    cli = CliRunner()
    listed = cli.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in BUILT_IN)
    shown = cli.invoke(app, ["models", "show", "dumoulin"])
    assert shown.exit_code == 0, shown.output
    assert "Apache-2.0" in shown.output and "multistyle26.onnx" in shown.output and "[0,1]" in shown.output
    unknown = cli.invoke(app, ["models", "show", "nope"])
    assert unknown.exit_code != 0 and "unknown stylizer 'nope'" in str(unknown.exception)
