"""The trainer contract (``Task``) and the loss scales every family applies to its VGG features.

A family module (johnson, adain, sanet) subclasses ``Task`` and registers it with
``pipeline.train.registry``; ``loop.py`` owns everything else (data, optimiser, precision, DDP,
checkpoints).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from pipeline.train.config import TrainConfig


def feature_scale(encoder: torch.nn.Module) -> float:
    """How much smaller this encoder's features are than a Caffe-scale (0-255 input) VGG's.

    The encoder folds its input convention into a 1x1 ``input`` conv: Caffe sources multiply by
    255, torchvision ones by 1/std (about 4.4). ReLU features scale about linearly with the input,
    so feature-MSE terms are multiplied by ``scale**2`` and Gram terms by ``scale**4`` to keep the
    default weights meaningful whichever VGG is used.
    """
    gain = float(encoder.input.weight.detach().abs().sum(dim=(1, 2, 3)).mean())
    return 255.0 / gain if gain > 0 else 1.0


# Mean ReLU activation per layer of sources that are not filter-normalised, over 19 scikit-image
# photos resized to 256x256 (tests/test_vgg.py::test_hed_layer_means_match_the_weights re-measures them).
# AdaIN and SANet weights are stated for ``vgg_normalised`` (Gatys et al. 2016), whose filters are
# scaled to a mean activation of 1; raw hed-vgg16 features are 15-20x that at relu1_x and ~1x at relu5_1,
# so without this its shallow layers drown everything else (blob artefacts, content ignored).
LAYER_MEANS: dict[str, dict[str, float]] = {
    "hed-vgg16": {
        "relu1_1": 15.05,
        "relu1_2": 20.30,
        "relu2_1": 13.97,
        "relu2_2": 4.236,
        "relu3_1": 8.208,
        "relu3_2": 7.535,
        "relu3_3": 2.741,
        "relu4_1": 4.877,
        "relu4_2": 2.926,
        "relu4_3": 1.109,
        "relu5_1": 1.130,
    },
}


def layer_gains(encoder: torch.nn.Module, layers: list[str]) -> dict[str, float]:
    """Per-layer factors that bring this encoder's features to ``vgg_normalised`` scale (mean activation 1).

    Known unnormalised sources divide by their measured ``LAYER_MEANS``; any other encoder gets the
    input-scale rule of ``feature_scale`` (exact for ``vgg_normalised`` files, where it is 1).
    """
    means = LAYER_MEANS.get(getattr(encoder, "source", ""), {})
    scale = feature_scale(encoder)
    return {k: 1.0 / means[k] if k in means else scale for k in layers}


class Task:
    """One family's training: what is optimised (``net``), its losses, and what a checkpoint holds.

    ``loop.py`` owns everything else (data, optimiser, precision, DDP, checkpoints). Images are
    ``(B,3,S,S)`` float in [0,1]; ``losses`` returns weighted terms plus ``"total"``, all scalars.
    Subclasses set the class attributes and build ``self.net`` in ``__init__``.
    """

    stylizer: ClassVar[str] = ""
    encoder_last: ClassVar[str] = "relu5_1"
    needs_style_batches: ClassVar[bool] = True
    # False for families without a VGG loss network (cyclegan): ``encoder`` is then None
    needs_encoder: ClassVar[bool] = True
    # training crops are also flipped left-right at random (cyclegan), keyed like the crops
    random_flip: ClassVar[bool] = False
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    # what ``export`` puts before the network's own keys ("decoder." for adain's published layout)
    export_prefix: ClassVar[str] = ""

    def __init__(self, config: TrainConfig, encoder: nn.Module | None) -> None:
        self.config = config
        self.encoder = encoder.eval().requires_grad_(False) if encoder is not None else None
        self.scale = feature_scale(encoder) if encoder is not None else 1.0
        self.amp: Any = nullcontext
        self.net: nn.Module = nn.Identity()

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (from 1): ``lr / (1 + lr_decay * (step - 1))``, as pytorch-AdaIN decays it."""
        return float(self.config.lr or 0) / (1.0 + float(self.config.lr_decay or 0) * (step - 1))

    def autocast(self) -> AbstractContextManager:
        return self.amp()

    def features(self, x: Tensor, layers: list[str]) -> dict[str, Tensor]:
        """Encoder features in float32: the losses (Grams especially) overflow in half precision."""
        with self.autocast():
            out = self.encoder(x, layers)
        return {k: v.float() for k, v in out.items()}

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        raise NotImplementedError

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        raise NotImplementedError

    def net_state(self, saved: dict[str, Tensor]) -> dict[str, Tensor]:
        """The trainable network's own tensors from a saved checkpoint (the inverse of ``export``)."""
        own = self.net.state_dict()
        return {k: saved[self.export_prefix + k] for k in own if self.export_prefix + k in saved}

    def metadata(self) -> dict[str, str]:
        return {}

    def sample_style(self) -> Tensor | None:
        """The style shown in the sample grid when it is fixed (johnson); None takes the batch's styles."""
        return None
