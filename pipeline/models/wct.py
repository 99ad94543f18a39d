"""WCT: universal style transfer via feature transforms (Li et al., NeurIPS 2017).

Two variants, chosen by the weights found:

- **The full cascade** (``WCTCascade``): five encoder/decoder pairs, relu5_1 down to relu1_1, each
  level whitening and colouring its features and decoding them into the next level's input, as the
  paper does. Its weights are the published Torch7 files of Yijunmaverick/UniversalStyleTransfer
  (``vgg_normalised_conv{N}_1.t7``, ``feature_invertor_conv{N}_1.t7``, as PytorchWCT uses them), read
  by ``pipeline.models.torch7`` from ``weights`` (a directory) or ``cache_dir()/wct/`` (``stylize models
  import wct DIR``). ``levels`` (default 5,4,3,2,1) picks the levels, in order.
- **A single relu4_1 level** (``WCT``) through the AdaIN encoder and decoder (same ``weights`` argument
  and default location ``cache_dir()/adain/``): used when no Torch7 files are found, or with
  ``single_level=True``. It needs no extra checkpoints but loses the fine texture of the cascade.

The transform follows PytorchWCT's ``whiten_and_color`` (float64; style eigen-components with
eigenvalue below 1e-5 dropped) except for the content-covariance regulariser: the original adds
the identity matrix, which weakens whitening for low-variance features; we add a small ``eps``
(default 1e-5). ``create("wct", eps=1.0)`` reproduces the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import vgg
from pipeline.models.adain import (
    ADAIN_FILES,
    ADAIN_HELP,
    WEIGHT_SOURCES,
    AdaIN,
    load_decoder,
    mix_targets,
    region_masks,
)
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.decoder_ckpt import checkpoint_availability, make_encoder, read_checkpoint
from pipeline.models.registry import ModelCard, WeightSource, register
from pipeline.models.weights import cache_dir

# PytorchWCT's cut-off: eigen-directions with less variance than this carry only noise
EIG_THRESHOLD = 1e-5
LEVELS = (5, 4, 3, 2, 1)  # the paper's coarse-to-fine order
CASCADE_URL = "https://drive.google.com/open?id=0B8_MZ8a8aoSeWm9HSTdXNE9Eejg"  # a Drive folder: by hand


def cascade_files(level: int) -> tuple[str, str]:
    """The published (encoder, decoder) Torch7 file names of one level."""
    return f"vgg_normalised_conv{level}_1.t7", f"feature_invertor_conv{level}_1.t7"


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
        return wct_targets(f_c, style_feats, regions, self.eps)


def wct_targets(f_c: Tensor, style_feats: list[Tensor], regions: Tensor | None, eps: float) -> list[Tensor]:
    """One whitened-and-coloured feature map (B,C,h,w) per style; ``regions`` (B,K,h,w) or None."""
    # without masks the content whitening is the same for every style: one eigendecomposition
    shared = whiten(f_c, None, eps) if regions is None else None
    out = []
    for k, f_s in enumerate(style_feats):
        white = shared if shared is not None else whiten(f_c, regions[:, k : k + 1], eps)
        out.append(colour(white, f_s).reshape(f_c.shape).to(f_c.dtype))
    return out


class WCTCascade(Stylizer):
    """The paper's cascade: content (B,3,H,W) in [0,1] + weighted style images -> same size in [0,1].

    At each level (``levels``, default relu5_1 to relu1_1) the current image is encoded, its features
    whitened and coloured with each style's at that level (mixed by weight, or per region with masks
    (B,K,H,W)), blended with ``alpha`` and decoded into the next level's input, as PytorchWCT does.
    """

    name = "wct"
    family = "wct"
    style_kind = "image"
    multiple = 16
    native_masks = True
    # relu5_1 needs >= 2 px after four ceil-mode pools for its reflection pad: 17 -> 9 -> 5 -> 3 -> 2
    min_px = 17

    def __init__(
        self, encoders: dict[int, nn.Sequential], decoders: dict[int, nn.Sequential], levels: Sequence[int], eps: float
    ) -> None:
        super().__init__()
        if not eps > 0:
            raise ConfigError(f"wct eps must be positive, got {eps}")
        self.levels = tuple(levels)
        self.encoders = nn.ModuleDict({str(n): encoders[n] for n in self.levels})
        self.decoders = nn.ModuleDict({str(n): decoders[n] for n in self.levels})
        self.eps = eps

    def encode_levels(self, x: Tensor) -> dict[int, Tensor]:
        return {n: self.encoders[str(n)](x) for n in self.levels}

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        weights = normalized_weights(styles)
        style_feats = [
            self.style_features(s, self.encode_levels, device=content.device, dtype=content.dtype) for s in styles
        ]
        x = content
        for n in self.levels:
            f_c = self.encoders[str(n)](x)
            regions = None
            if masks is not None:
                regions = region_masks(masks, tuple(f_c.shape[-2:]), len(styles), content.shape[0]).to(f_c)
            targets = wct_targets(f_c, [feats[n] for feats in style_feats], regions, self.eps)
            x = self.decoders[str(n)](alpha * mix_targets(targets, weights, regions) + (1.0 - alpha) * f_c)
        return x


def parse_levels(levels: str | Sequence[int] | None) -> tuple[int, ...]:
    """``"5,4,3"`` or (5, 4, 3) -> (5, 4, 3); each of 1-5 once; None -> all five, coarse to fine."""
    if levels is None:
        return LEVELS
    try:
        parsed = tuple(int(n) for n in (levels.split(",") if isinstance(levels, str) else levels))
    except ValueError:
        raise ConfigError(f"wct levels must be numbers 1-5 like 5,4,3,2,1, got {levels!r}") from None
    if not parsed or len(set(parsed)) != len(parsed) or not set(parsed) <= set(LEVELS):
        raise ConfigError(f"wct levels must be distinct numbers 1-5 like 5,4,3,2,1, got {levels!r}")
    return parsed


def cascade_dir(weights: str | None, levels: Sequence[int]) -> Path | None:
    """The directory holding the Torch7 files of ``levels`` (``weights``, else ``cache_dir()/wct``), or None."""
    if weights is not None and "://" in weights.removeprefix("file://"):
        return None  # remote prefixes hold the AdaIN layout; the cascade reads local files
    folder = Path(weights.removeprefix("file://")).expanduser() if weights else cache_dir() / "wct"
    files = [f for n in levels for f in cascade_files(n)]
    return folder if folder.is_dir() and all((folder / f).is_file() for f in files) else None


def load_cascade(folder: Path, levels: Sequence[int], eps: float) -> WCTCascade:
    from pipeline.models.torch7 import read_sequential

    encoders, decoders = {}, {}
    for n in levels:
        enc_file, dec_file = cascade_files(n)
        encoders[n], decoders[n] = read_sequential(folder / enc_file), read_sequential(folder / dec_file)
    return WCTCascade(encoders, decoders, levels, eps)


def create_wct(
    weights: str | None = None,
    encoder_weights: str = "auto",
    device: str | torch.device = "cpu",
    eps: float = 1e-5,
    levels: str | Sequence[int] | None = None,
    single_level: bool = False,
) -> WCT | WCTCascade:
    """The cascade when its Torch7 files are found (``weights`` or ``cache_dir()/wct``), else the single
    relu4_1 level from AdaIN-layout ``weights`` (see ``pipeline.models.adain``); onto ``device``."""
    chosen = parse_levels(levels)
    folder = None if single_level else cascade_dir(None if weights is None else str(weights), chosen)
    if folder is not None:
        return load_cascade(folder, chosen, eps).requires_grad_(False).to(device).eval()
    if levels is not None:
        names = ", ".join(f for n in chosen for f in cascade_files(n))
        raise WeightsError(
            f"wct levels need the published Torch7 files ({names}) in --weights DIR or {cache_dir() / 'wct'} "
            "(`stylize models import wct DIR`)"
        )
    ckpt = read_checkpoint(weights, family="adain", files=ADAIN_FILES, help_text=ADAIN_HELP)
    decoder = load_decoder(ckpt.parts["decoder"], what=f"wct (adain) decoder ({ckpt.where})")
    encoder = make_encoder(ckpt, encoder_weights, last="relu4_1")
    return WCT(encoder, decoder, eps=eps).requires_grad_(False).to(device).eval()


# float32 parameter bytes of each level's (encoder, decoder)
_LEVEL_BYTES = {
    1: (7_216, 6_924),
    2: (450_352, 449_804),
    3: (2_221_360, 2_220_300),
    4: (14_022_960, 14_020_876),
    5: (51_779_888, 51_777_804),
}
CASCADE_SOURCES = tuple(
    WeightSource(
        f"{file} (the level-{n} {'encoder' if i == 0 else 'decoder'} of the cascade)",
        f"the Yijunmaverick/UniversalStyleTransfer README's models link ({CASCADE_URL}), by hand",
        "for academic use only (UniversalStyleTransfer README)",
        file=file,
        folder="wct",
        size=_LEVEL_BYTES[n][i],
        non_commercial=True,
    )
    for n in sorted(LEVELS)
    for i, file in enumerate(cascade_files(n))
)

register(
    ModelCard(
        stylizer=WCT,
        paper="Li et al., Universal Style Transfer via Feature Transforms, NeurIPS 2017 (the five-level cascade "
        "with the published Torch7 files, else a single relu4_1 level)",
        factory=create_wct,
        # single level: the AdaIN weights (same --weights, same default location); the cascade: its Torch7 files
        weight_sources=WEIGHT_SOURCES + CASCADE_SOURCES,
        preprocessing=(
            "encoder input conv applies its convention (vgg_normalised: BGR 0-255 minus mean); content "
            "reflect-padded to a multiple of 16 (cascade: relu5_1 to relu1_1, each level decoded into the next) "
            "or 8 (single relu4_1 level with the AdaIN decoder); whitening/colouring in float64"
        ),
        availability=lambda: checkpoint_availability("adain", ADAIN_FILES, ADAIN_HELP),
    )
)
