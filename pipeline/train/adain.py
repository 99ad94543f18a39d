"""AdaIN (Huang & Belongie 2017): train the decoder; the VGG encoder stays fixed.

t = AdaIN(f(content), f(style)) at relu4_1, out = decoder(t), and
loss = content_weight * MSE(f(out), t) at relu4_1
     + style_weight * sum over relu1_1..relu4_1 of MSE(mean) + MSE(std) of f(out) vs f(style).
Defaults from naoto0804/pytorch-AdaIN ``train.py``: lr 1e-4 with 1/(1 + 5e-5 * step) decay,
batch 8, 512 px resize and 256 px crops, style weight 10.

The checkpoint holds ``decoder.*`` (the published decoder layout) and metadata ``encoder``
naming the VGG source; an encoder read from a file is embedded as ``encoder.*`` so the
checkpoint works where that file does not exist. Loads with ``pipeline.models.create("adain", weights=URI)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models import vgg
from pipeline.models.adain import adain, build_decoder
from pipeline.models.losses import ContentLoss, MeanStdStyleLoss
from pipeline.train.config import TrainConfig
from pipeline.train.registry import register
from pipeline.train.task import Task, layer_gains

TARGET_LAYER = "relu4_1"


def embed_encoder(encoder: vgg.VGGEncoder, last: str) -> dict[str, Tensor]:
    """``encoder.*`` keys of the trunk up to ``last``, in ``vgg.to_state_dict`` layout."""
    trunk = encoder.truncated(last) if encoder.plan[-1] != last else encoder
    return {f"encoder.{k}": v for k, v in vgg.to_state_dict(trunk).items()}


def is_file_source(source: str) -> bool:
    return source not in vgg.ENCODER_SOURCES


@register
class AdaINTask(Task):
    stylizer = "adain"
    encoder_last = TARGET_LAYER
    export_prefix = "decoder."

    def __init__(self, config: TrainConfig, encoder: nn.Module) -> None:
        super().__init__(config, encoder)
        self.net = build_decoder()
        self.style_layers = list(config.style_layers or [])
        self.feat_layers = sorted(set(self.style_layers) | {TARGET_LAYER}, key=encoder.plan.index)
        # each layer's MSE in vgg_normalised units, so the paper's weights apply to any encoder
        gain = layer_gains(encoder, self.feat_layers)
        self.content_loss = ContentLoss({TARGET_LAYER: gain[TARGET_LAYER] ** 2})
        # the paper sums the per-layer terms
        self.style_loss = MeanStdStyleLoss({k: gain[k] ** 2 for k in self.style_layers})
        self.content_weight = float(config.content_weight or 0)
        self.style_weight = float(config.style_weight or 0)

    def decode(self, net: nn.Module, t: Tensor) -> Tensor:
        with self.autocast():
            return net(t).float()

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        assert style is not None
        with torch.no_grad():
            f_c = self.features(content, [TARGET_LAYER])[TARGET_LAYER]
            f_s = self.features(style, self.feat_layers)
            t = adain(f_c, f_s[TARGET_LAYER])
        out = self.decode(net, t)
        feats = self.features(out, self.feat_layers)
        terms = {
            "content": self.content_weight * self.content_loss(feats, {TARGET_LAYER: t}),
            "style": self.style_weight * self.style_loss(feats, f_s),
        }
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        assert style is not None
        f_c = self.features(content, [TARGET_LAYER])[TARGET_LAYER]
        f_s = self.features(style, [TARGET_LAYER])[TARGET_LAYER]
        return self.decode(net, adain(f_c, f_s)).clamp(0, 1)

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        state = {f"decoder.{k}": v for k, v in net.state_dict().items()}
        if is_file_source(self.config.encoder_weights):
            state.update(embed_encoder(self.encoder, TARGET_LAYER))
        return state
