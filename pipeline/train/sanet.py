"""SANet (Park & Lee 2019): train the style-attention ``Transform`` and the decoder; VGG stays fixed.

out = decoder(transform(f4(c), f4(s), f5(c), f5(s))), and with mean-variance normalised features
``norm``:

loss = content_weight * [MSE(norm f4(out), norm f4(c)) + MSE(norm f5(out), norm f5(c))]
     + style_weight * sum over relu1_1..relu5_1 of MSE(mean) + MSE(std) of f(out) vs f(s)
     + identity1_weight * [MSE(I_cc, c) + MSE(I_ss, s)]                      (pixels)
     + identity2_weight * sum over relu1_1..relu5_1 of [MSE(f(I_cc), f(c)) + MSE(f(I_ss), f(s))]

where I_cc / I_ss stylize an image with itself. Every feature MSE is on vgg_normalised's per-layer scale
(``layer_gains``): the weights below were set for that encoder. The paper (Sec. 3.3) sets lambda_c, lambda_s,
lambda_identity1, lambda_identity2 = 1, 3, 1, 50; GlebSBrykin/SANET's training notebook multiplies
the *pixel* term by 50 and the feature term by 1 instead. We follow the paper; both are options.
The three decoder passes (c with s, c with c, s with s) run as one batch of 3B.

The checkpoint holds ``decoder.*`` and ``transform.*`` (the published layouts), metadata
``encoder``, and ``encoder.*`` when the VGG came from a file.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.models.adain import build_decoder
from pipeline.models.losses import ContentLoss, IdentityLoss, MeanStdStyleLoss
from pipeline.models.sanet import Transform, mean_variance_norm
from pipeline.train.adain import embed_encoder, is_file_source
from pipeline.train.config import TrainConfig
from pipeline.train.registry import register
from pipeline.train.task import Task, layer_gains

DEEP = ("relu4_1", "relu5_1")


class SANetNet(nn.Module):
    """What SANet training optimises: ``transform`` + ``decoder`` (one module, so DDP wraps both)."""

    def __init__(self) -> None:
        super().__init__()
        self.transform = Transform()
        self.decoder = build_decoder()

    def forward(self, c4: Tensor, s4: Tensor, c5: Tensor, s5: Tensor) -> Tensor:
        return self.decoder(self.transform(c4, s4, c5, s5))


@register
class SANetTask(Task):
    stylizer = "sanet"
    encoder_last = "relu5_1"

    def __init__(self, config: TrainConfig, encoder: nn.Module) -> None:
        super().__init__(config, encoder)
        self.net = SANetNet()
        self.content_layers = list(config.content_layers or [])
        self.style_layers = list(config.style_layers or [])
        self.layers = sorted(set(self.style_layers) | set(self.content_layers) | set(DEEP), key=encoder.plan.index)
        self.content_loss = ContentLoss(dict.fromkeys(self.content_layers, 1.0))
        # style and feature-identity MSEs in vgg_normalised units, so the paper's weights apply to any
        # encoder; the content term compares mean-variance normalised features and is scale-free already
        self.gain = layer_gains(encoder, self.layers)
        self.style_loss = MeanStdStyleLoss({k: self.gain[k] ** 2 for k in self.style_layers})
        self.content_weight = float(config.content_weight or 0)
        self.style_weight = float(config.style_weight or 0)
        self.identity_pixels = IdentityLoss(pixel_weight=float(config.identity1_weight or 0), feature_weight=0.0)
        self.identity_features = IdentityLoss(pixel_weight=0.0, feature_weight=float(config.identity2_weight or 0))

    def decode(self, net: nn.Module, content: dict[str, Tensor], style: dict[str, Tensor]) -> Tensor:
        with self.autocast():
            return net(content["relu4_1"], style["relu4_1"], content["relu5_1"], style["relu5_1"]).float()

    def losses(self, net: nn.Module, content: Tensor, style: Tensor | None) -> dict[str, Tensor]:
        assert style is not None
        b = content.shape[0]
        with torch.no_grad():
            f_c = self.features(content, self.layers)
            f_s = self.features(style, self.layers)
        queries = {k: torch.cat([f_c[k], f_c[k], f_s[k]]) for k in DEEP}
        keys = {k: torch.cat([f_s[k], f_c[k], f_s[k]]) for k in DEEP}
        out_all = self.decode(net, queries, keys)
        feats_all = self.features(out_all, self.layers)
        out, i_cc, i_ss = out_all.split(b)
        g = {k: v[:b] for k, v in feats_all.items()}
        f_cc = {k: v[b : 2 * b] for k, v in feats_all.items()}
        f_ss = {k: v[2 * b :] for k, v in feats_all.items()}
        norm_g = {k: mean_variance_norm(g[k]) for k in self.content_layers}
        norm_c = {k: mean_variance_norm(f_c[k]) for k in self.content_layers}
        pick = self.style_layers  # the identity terms use the same relu1_1..relu5_1 as the style loss

        def scaled(feats: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: feats[k] * self.gain[k] for k in pick}

        terms = {
            "content": self.content_weight * self.content_loss(norm_g, norm_c),
            "style": self.style_weight * self.style_loss(g, f_s),
            "identity1": self.identity_pixels(i_cc, content) + self.identity_pixels(i_ss, style),
            "identity2": self.identity_features(i_cc, content, scaled(f_cc), scaled(f_c))
            + self.identity_features(i_ss, style, scaled(f_ss), scaled(f_s)),
        }
        terms["total"] = sum(terms.values())
        return terms

    @torch.no_grad()
    def stylize(self, net: nn.Module, content: Tensor, style: Tensor | None) -> Tensor:
        assert style is not None
        f_c = self.features(content, list(DEEP))
        f_s = self.features(style, list(DEEP))
        return self.decode(net, f_c, f_s).clamp(0, 1)

    def export(self, net: nn.Module) -> dict[str, Tensor]:
        state = {f"{k}": v for k, v in net.state_dict().items()}  # transform.* and decoder.* already
        if is_file_source(self.config.encoder_weights):
            state.update(embed_encoder(self.encoder, "relu5_1"))
        return state
