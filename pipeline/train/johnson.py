"""Johnson et al. 2016: one ``TransformerNet`` per style, trained with perceptual losses.

loss = content_weight * MSE(VGG(out), VGG(content)) at ``content_layers`` (relu2_2; relu3_3 also used)
     + style_weight * mean over ``style_layers`` of MSE(Gram(VGG(out)), Gram(VGG(style)))
       (relu1_2, relu2_2, relu3_3, relu4_3 as in the paper; Grams normalised by C*H*W)
     + tv_weight * total variation of the output.

The network sees pixels in 0-255 like pytorch/examples' (``input_scale`` 255, recorded in the
checkpoint metadata), so ``pipeline.models.johnson`` loads our checkpoints and theirs alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError
from pipeline.models.johnson import TransformerNet
from pipeline.models.losses import ContentLoss, GramStyleLoss, TVLoss
from pipeline.models.vgg_layout import layer_order
from pipeline.train.config import TrainConfig
from pipeline.train.data import read_style_image
from pipeline.train.registry import register
from pipeline.train.task import Task

INPUT_SCALE = 255.0


@register
class JohnsonTask(Task):
    stylizer = "johnson"
    needs_style_batches = False

    def __init__(self, config: TrainConfig, encoder: nn.Module) -> None:
        super().__init__(config, encoder)
        self.net = TransformerNet()
        self.content_layers = list(config.content_layers or [])
        self.style_layers = list(config.style_layers or [])
        missing = [n for n in self.content_layers + self.style_layers if n not in encoder.plan]
        if missing:
            raise ConfigError(f"{encoder.source} ({encoder.arch}) has no layers {missing}")
        assert config.style and config.style_size  # resolved() checked them
        # the one style image, (1,3,h,w) in [0,1], shorter side style_size
        style = read_style_image(config.style, config.style_size, config.allowed_schemes)
        self.layers = sorted(set(self.content_layers) | set(self.style_layers), key=layer_order(encoder.arch).index)
        self.content_loss = ContentLoss(self.content_layers)
        self.style_loss = GramStyleLoss(self.style_layers)
        self.tv_loss = TVLoss()
        self.content_weight = float(config.content_weight or 0) * self.scale**2
        self.style_weight = float(config.style_weight or 0) * self.scale**4
        self.tv_weight = float(config.tv_weight or 0)
        self.style_image = style
        with torch.no_grad():
            self.target_grams = GramStyleLoss.grams(self.features(style.to(self._device()), self.style_layers))

    def _device(self) -> torch.device:
        return self.encoder.input.weight.device

    def run_net(self, net: nn.Module, content: Tensor) -> Tensor:
        with self.autocast():
            return net(content * INPUT_SCALE).float() / INPUT_SCALE

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        out = self.run_net(net, content)
        feats = self.features(out, self.layers)
        with torch.no_grad():
            target = self.features(content, self.content_layers)
        terms = {
            "content": self.content_weight * self.content_loss(feats, target),
            "style": self.style_weight * self.style_loss(feats, self.target_grams),
            "tv": self.tv_weight * self.tv_loss(out),
        }
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        return self.run_net(net, content).clamp(0, 1)

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        return dict(net.state_dict())

    def metadata(self) -> dict[str, str]:
        return {"input_scale": f"{INPUT_SCALE:g}"}

    def sample_style(self) -> Tensor | None:
        return self.style_image
