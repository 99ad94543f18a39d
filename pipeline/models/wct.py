"""WCT: universal style transfer via feature transforms (Li et al., NeurIPS 2017).

Whitening and colouring of VGG relu4_1 features, decoded with the AdaIN decoder.

A deliberate simplification: the original cascades five encoder/decoder pairs (relu5_1 down to
relu1_1, each with its own decoder). We run the single relu4_1 level and reuse the AdaIN
encoder and decoder (same ``weights`` argument and default location ``cache_dir()/adain/``), so
no extra checkpoints are needed; results are less detailed than the full cascade.

The transform follows PytorchWCT's ``whiten_and_color`` (float64; style eigen-components with
eigenvalue below 1e-5 dropped) except for the content-covariance regulariser: the original adds
the identity matrix, which weakens whitening for low-variance features; we add a small ``eps``
(default 1e-5). ``create("wct", eps=1.0)`` reproduces the original.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.errors import ConfigError
from pipeline.models import vgg
from pipeline.models.adain import ADAIN_FILES, ADAIN_HELP, WEIGHT_SOURCES, AdaIN, load_decoder
from pipeline.models.decoder_ckpt import checkpoint_availability, make_encoder, read_checkpoint
from pipeline.models.registry import ModelCard, register

# PytorchWCT's cut-off: eigen-directions with less variance than this carry only noise
EIG_THRESHOLD = 1e-5


def _mean_cov(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean (B,C,1) and covariance (B,C,C) of x (B,C,N) with position weights w (B,1,N)."""
    n = w.sum(-1, keepdim=True)
    mean = (x * w).sum(-1, keepdim=True) / n.clamp_min(1e-6)
    centred = x - mean
    # (n - 1) keeps an all-ones weight identical to the original's unbiased covariance
    cov = (centred * w) @ centred.transpose(1, 2) / (n - 1).clamp_min(1.0)
    return mean, cov


def _matrix_power(cov: Tensor, power: float, *, threshold: float) -> Tensor:
    """Symmetric ``cov ** power`` with eigen-directions of eigenvalue <= ``threshold`` dropped."""
    evals, evecs = torch.linalg.eigh(cov)
    keep = evals > threshold
    scaled = torch.where(keep, evals.clamp_min(max(threshold, 1e-30)).pow(power), torch.zeros_like(evals))
    return (evecs * scaled.unsqueeze(-2)) @ evecs.transpose(-1, -2)


def whiten(content: Tensor, mask: Tensor | None, eps: float) -> Tensor:
    """Content features (B,C,h,w) -> whitened (B,C,h*w) float64, centred on the (region's) mean.

    With ``mask`` (B|1,1,h,w) the mean and covariance come from that region only.
    """
    b, c, h, w = content.shape
    fc = content.double().reshape(b, c, h * w)
    weights = torch.ones_like(fc[:, :1]) if mask is None else mask.double().reshape(mask.shape[0], 1, h * w)
    c_mean, c_cov = _mean_cov(fc, weights.expand(b, 1, h * w))
    c_cov = c_cov + eps * torch.eye(c, dtype=c_cov.dtype, device=c_cov.device)
    # eps already bounds the content eigenvalues from below: no cut-off, as in the original (+identity)
    return _matrix_power(c_cov, -0.5, threshold=0.0) @ (fc - c_mean)


def colour(whitened: Tensor, style: Tensor) -> Tensor:
    """Whitened (B,C,N) float64 -> coloured with the covariance and mean of ``style`` (1|B,C,hs,ws)."""
    fs = style.double().reshape(style.shape[0], style.shape[1], -1)
    s_mean, s_cov = _mean_cov(fs, torch.ones_like(fs[:, :1]))
    return _matrix_power(s_cov, 0.5, threshold=EIG_THRESHOLD) @ whitened + s_mean


def whiten_colour(content: Tensor, style: Tensor, mask: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Whiten ``content`` features (B,C,h,w) and colour them with ``style``'s; float64 inside, input dtype out."""
    return colour(whiten(content, mask, eps), style).reshape(content.shape).to(content.dtype)


class WCT(AdaIN):
    """WCT stylizer at relu4_1: content (B,3,H,W) in [0,1] + weighted style images -> same size in [0,1].

    Controls as for ``AdaIN``: ``alpha`` blends whitened-coloured and content features, several
    styles mix their targets by weight, masks (B,K,H,W) apply the transform per region.
    """

    name = "wct"
    family = "wct"

    def __init__(self, encoder: vgg.VGGEncoder, decoder: torch.nn.Sequential, eps: float = 1e-5) -> None:
        super().__init__(encoder, decoder)
        if not eps > 0:
            raise ConfigError(f"wct eps must be positive, got {eps}")
        self.eps = eps

    def targets(self, f_c: Tensor, style_feats: list[Tensor], regions: Tensor | None) -> list[Tensor]:
        # without masks the content whitening is the same for every style: one eigendecomposition
        shared = whiten(f_c, None, self.eps) if regions is None else None
        out = []
        for k, f_s in enumerate(style_feats):
            white = shared if shared is not None else whiten(f_c, regions[:, k : k + 1], self.eps)
            out.append(colour(white, f_s).reshape(f_c.shape).to(f_c.dtype))
        return out


def create_wct(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu", eps: float = 1e-5
) -> WCT:
    """Load WCT from AdaIN-layout ``weights`` (see ``pipeline.models.adain``) onto ``device``."""
    ckpt = read_checkpoint(weights, family="adain", files=ADAIN_FILES, help_text=ADAIN_HELP)
    decoder = load_decoder(ckpt.parts["decoder"], what=f"wct (adain) decoder ({ckpt.where})")
    encoder = make_encoder(ckpt, encoder_weights, last="relu4_1")
    return WCT(encoder, decoder, eps=eps).requires_grad_(False).to(device).eval()


register(
    ModelCard(
        stylizer=WCT,
        paper="Li et al., Universal Style Transfer via Feature Transforms, NeurIPS 2017 (single relu4_1 level)",
        factory=create_wct,
        # the AdaIN weights: same --weights, same default location
        weight_sources=WEIGHT_SOURCES,
        preprocessing=(
            "encoder input conv applies its convention (vgg_normalised: BGR 0-255 minus mean); content "
            "reflect-padded to a multiple of 8; whitening/colouring of relu4_1 in float64; AdaIN decoder"
        ),
        availability=lambda: checkpoint_availability("adain", ADAIN_FILES, ADAIN_HELP),
    )
)
