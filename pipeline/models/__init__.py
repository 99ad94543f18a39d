"""Stylizer library: importing this registers every family.

``create`` locates published weights first and fetches them on first use (``pipeline.models.fetch``).
"""

from pipeline.models import adain, animegan, cyclegan, dumoulin, gatys, ghiasi, johnson, sanet, wct  # noqa: F401
from pipeline.models.base import Style, Stylizer
from pipeline.models.fetch import create
from pipeline.models.registry import ModelCard, WeightSource, get_card, list_models, register

__all__ = ["ModelCard", "Style", "Stylizer", "WeightSource", "create", "get_card", "list_models", "register"]
