"""Loss modules shared by the gatys optimiser, training and the quality metrics.

Each is a small ``nn.Module``. Feature losses take ``{layer: (B,C,H,W)}`` dicts (what
``VGGEncoder`` returns) and average over the layers they were built for, with optional
per-layer weights. Targets are either set once (``ContentLoss(target)``, as in Gatys' image
optimisation) or passed per call (as in feed-forward training). ``reduction="none"``
returns one loss per image ``(B,)`` so batched optimisation keeps each image's loss apart;
the default ``"mean"`` returns a scalar.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.models.vgg import gram, mean_std

Features = Mapping[str, Tensor]
Reduction = Literal["mean", "none"]


def _mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error, (B,); ``b`` may be (1,...) and broadcasts over the batch."""
    return (a - b).pow(2).flatten(1).mean(1)


def _reduce(per_image: Tensor, reduction: Reduction) -> Tensor:
    return per_image.mean() if reduction == "mean" else per_image


class _LayerLoss(nn.Module):
    """Weighted sum of a per-layer term: a list of layers averages them (weights 1/n each);
    a ``{layer: weight}`` mapping uses the weights as given (e.g. all 1.0 for AdaIN's plain sum)."""

    def __init__(self, layers: list[str] | Mapping[str, float], *, reduction: Reduction = "mean") -> None:
        super().__init__()
        if not layers:
            raise ConfigError("a feature loss needs at least one layer")
        if isinstance(layers, Mapping):
            self.layer_weights = {k: float(v) for k, v in layers.items()}
        else:
            self.layer_weights = {name: 1.0 / len(layers) for name in layers}
        self.reduction: Reduction = reduction

    def term(self, x: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def combine(self, feats: Features, targets: Features | None) -> Tensor:
        if targets is None:
            raise ConfigError(f"{type(self).__name__} has no target: pass one at construction or per call")
        missing = [k for k in self.layer_weights if k not in feats or k not in targets]
        if missing:
            raise ConfigError(f"{type(self).__name__} needs layers {missing}, got {sorted(feats)}")
        per_image = sum(w * self.term(feats[k], targets[k]) for k, w in self.layer_weights.items())
        return _reduce(per_image, self.reduction)


class ContentLoss(_LayerLoss):
    """MSE between features and target features (Gatys: relu4_2; Johnson: relu2_2/relu3_3)."""

    def __init__(self, layers: list[str] | Mapping[str, float], target: Features | None = None, **kw) -> None:
        super().__init__(layers, **kw)
        self.target = {k: target[k].detach() for k in self.layer_weights} if target is not None else None

    def term(self, x: Tensor, target: Tensor) -> Tensor:
        return _mse(x, target)

    def forward(self, feats: Features, target: Features | None = None) -> Tensor:
        return self.combine(feats, target if target is not None else self.target)


class GramStyleLoss(_LayerLoss):
    """MSE between Gram matrices (``vgg.gram``, normalised by C*H*W); targets are Grams ``(1|B,C,C)``."""

    def __init__(self, layers: list[str] | Mapping[str, float], target_grams: Features | None = None, **kw) -> None:
        super().__init__(layers, **kw)
        self.target = {k: target_grams[k].detach() for k in self.layer_weights} if target_grams is not None else None

    @staticmethod
    def grams(feats: Features) -> dict[str, Tensor]:
        return {k: gram(v) for k, v in feats.items()}

    def term(self, x: Tensor, target: Tensor) -> Tensor:
        return _mse(gram(x), target)

    def forward(self, feats: Features, target_grams: Features | None = None) -> Tensor:
        return self.combine(feats, target_grams if target_grams is not None else self.target)


class MeanStdStyleLoss(_LayerLoss):
    """AdaIN's style loss: MSE of channel means plus MSE of channel stds; targets are style features."""

    def term(self, x: Tensor, target: Tensor) -> Tensor:
        (xm, xs), (tm, ts) = mean_std(x), mean_std(target)
        return _mse(xm, tm) + _mse(xs, ts)

    def forward(self, feats: Features, style_feats: Features) -> Tensor:
        return self.combine(feats, style_feats)


class TVLoss(nn.Module):
    """Total variation of (B,C,H,W): mean squared difference of neighbouring pixels."""

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = reduction

    def forward(self, x: Tensor) -> Tensor:
        dh = x[..., 1:, :] - x[..., :-1, :]
        dw = x[..., :, 1:] - x[..., :, :-1]
        zero = x.new_zeros(x.shape[0])
        # a 1-pixel-high or -wide image has no neighbours along that axis
        per_image = (dh.pow(2).flatten(1).mean(1) if dh.numel() else zero) + (
            dw.pow(2).flatten(1).mean(1) if dw.numel() else zero
        )
        return _reduce(per_image, self.reduction)


class IdentityLoss(nn.Module):
    """SANet's identity terms: stylizing an image with itself as style should return it.

    ``forward(out_cc, content, feats_cc, feats_c)`` = ``pixel_weight * MSE(out_cc, content)``
    ``+ feature_weight * sum over layers of MSE(feats_cc, feats_c)`` (SANet: 1 and 50, summed
    over relu1_1..relu5_1). Either weight may be 0.
    """

    def __init__(
        self, *, pixel_weight: float = 1.0, feature_weight: float = 50.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        self.pixel_weight = pixel_weight
        self.feature_weight = feature_weight
        self.reduction: Reduction = reduction

    def forward(
        self, out: Tensor, content: Tensor, feats_out: Features | None = None, feats_content: Features | None = None
    ) -> Tensor:
        per_image = self.pixel_weight * _mse(out, content)
        if self.feature_weight and feats_out is not None and feats_content is not None:
            feat = torch.stack([_mse(feats_out[k], feats_content[k]) for k in feats_content]).sum(0)
            per_image = per_image + self.feature_weight * feat
        return _reduce(per_image, self.reduction)
