"""AdaIN: arbitrary style transfer with adaptive instance normalisation (Huang & Belongie, ICCV 2017).

``decoder(AdaIN(vgg_relu4_1(content), vgg_relu4_1(style)))`` with the VGG19 ``vgg_normalised``
encoder and the mirrored decoder of naoto0804/pytorch-AdaIN (``net.py``). Checkpoints in that
repository's layout load as published:

- ``decoder.pth``: the state dict of its ``decoder`` ``nn.Sequential`` (convs at indices
  1, 5, 8, 11, 14, 18, 21, 25, 28); ``build_decoder`` rebuilds that exact Sequential.
- ``vgg_normalised.pth``: its ``vgg`` Sequential, read by ``vgg.from_state_dict``.

``weights`` is a directory (or URI prefix) holding ``decoder.pth`` and, when present,
``vgg_normalised.pth`` (used as the encoder: the decoder was trained against it); or one
safetensors file with ``decoder.*`` and optional ``encoder.*`` keys, whose metadata key
``encoder`` may name an encoder source for ``vgg.load_encoder`` (``save_checkpoint`` writes it).
Without ``weights`` the default location ``cache_dir()/adain/`` is searched.

This module also holds the pieces ``wct`` and ``sanet`` share: the checkpoint reader, the
encoder choice, per-region masks and target mixing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import vgg
from pipeline.models.base import Style, Stylizer, normalized_weights
from pipeline.models.registry import ModelCard, register
from pipeline.models.weights import cache_dir, load_state_dict, local_path, read_metadata, split_sha256

RELEASE_URL = "https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0"
DECODER_CONVS = (1, 5, 8, 11, 14, 18, 21, 25, 28)
ENCODER_FILE = "vgg_normalised.pth"
ADAIN_FILES = {"decoder": "decoder.pth"}
ADAIN_HELP = (
    f"no AdaIN weights: download {RELEASE_URL}/decoder.pth and {RELEASE_URL}/{ENCODER_FILE} "
    "into {where} (or pass --weights DIR), or train a decoder with `stylize train adain`"
)


# --- the network ----------------------------------------------------------------------------------


def build_decoder() -> nn.Sequential:
    """The pytorch-AdaIN / SANET decoder: relu4_1 features (B,512,h,w) -> RGB (B,3,8h,8w).

    Built as the same ``nn.Sequential`` so its state dict keys are the published ones.
    """

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3))]

    def up() -> nn.Module:
        return nn.Upsample(scale_factor=2, mode="nearest")

    layers: list[nn.Module] = [*conv(512, 256), nn.ReLU(), up()]
    for _ in range(3):
        layers += [*conv(256, 256), nn.ReLU()]
    layers += [*conv(256, 128), nn.ReLU(), up()]
    layers += [*conv(128, 128), nn.ReLU(), *conv(128, 64), nn.ReLU(), up()]
    layers += [*conv(64, 64), nn.ReLU(), *conv(64, 3)]
    return nn.Sequential(*layers)


def masked_mean_std(features: Tensor, mask: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (B,C,1,1) over the positions weighted by ``mask`` (B,1,h,w).

    With ``mask=None`` (or all ones) this is ``vgg.mean_std``: unbiased variance plus ``eps``.
    """
    if mask is None:
        return vgg.mean_std(features, eps)
    n = mask.sum((2, 3), keepdim=True)
    mean = (features * mask).sum((2, 3), keepdim=True) / n.clamp_min(1e-6)
    # (n - 1) keeps a full mask identical to the unbiased global statistics
    var = ((features - mean) ** 2 * mask).sum((2, 3), keepdim=True) / (n - 1).clamp_min(1.0)
    return mean, (var + eps).sqrt()


def adain(content: Tensor, style: Tensor, mask: Tensor | None = None) -> Tensor:
    """Give ``content`` features (B,C,h,w) the channel mean/std of ``style`` (1 or B,C,hs,ws).

    With ``mask`` (B,1,h,w) the content statistics come from that region only (the paper's
    spatial control); the result is defined everywhere and blended by the caller.
    """
    c_mean, c_std = masked_mean_std(content, mask)
    s_mean, s_std = vgg.mean_std(style)
    return (content - c_mean) / c_std * s_std + s_mean


def region_masks(masks: Tensor, size: tuple[int, int], n_styles: int, batch: int) -> Tensor:
    """Image masks (B|1,K,H,W) -> (B|1,K,h,w) at feature ``size``, summing to 1 over K."""
    if masks.dim() != 4 or masks.shape[1] != n_styles or masks.shape[0] not in (1, batch):
        raise ConfigError(
            f"masks must be (B,{n_styles},H,W) for {n_styles} styles and B={batch}, got {tuple(masks.shape)}"
        )
    small = F.adaptive_avg_pool2d(masks.float(), size)
    return small / small.sum(1, keepdim=True).clamp_min(1e-8)


def mix_targets(targets: list[Tensor], weights: list[float], regions: Tensor | None) -> Tensor:
    """Weighted sum of per-style targets, or per-region selection when ``regions`` (B,K,h,w) is given."""
    if regions is None:
        return sum((w * t for w, t in zip(weights, targets, strict=True)), torch.zeros_like(targets[0]))
    return sum((regions[:, k : k + 1] * t for k, t in enumerate(targets)), torch.zeros_like(targets[0]))


class AdaIN(Stylizer):
    """AdaIN stylizer: content (B,3,H,W) in [0,1] + weighted style images -> (B,3,H,W) in [0,1].

    ``alpha`` interpolates features: ``alpha * t + (1 - alpha) * f_c`` before decoding.
    Several styles: weighted sum of their AdaIN targets. Masks (B,K,H,W): per-region AdaIN with
    region-only content statistics, combined by the masks at feature resolution (weights are
    then ignored: the masks already say how much of each style goes where).
    """

    name = "adain"
    family = "adain"
    style_kind = "image"
    multiple = 8
    native_masks = True
    native_mixing = True
    # relu4_1 needs >= 2 px after three ceil-mode pools for its reflection pad: 9 -> 5 -> 3 -> 2
    min_px = 9

    def __init__(self, encoder: vgg.VGGEncoder, decoder: nn.Sequential) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x, ["relu4_1"])["relu4_1"]

    def targets(self, f_c: Tensor, style_feats: list[Tensor], regions: Tensor | None) -> list[Tensor]:
        """One transformed feature map (B,C,h,w) per style; ``regions`` (B,K,h,w) or None."""
        return [
            adain(f_c, f_s, None if regions is None else regions[:, k : k + 1]) for k, f_s in enumerate(style_feats)
        ]

    def transfer(self, content: Tensor, styles: list[Style], *, alpha: float, masks: Tensor | None) -> Tensor:
        self.require_min_size(content, what="content")
        f_c = self.encode(content)
        if alpha == 0.0:
            return self.decoder(f_c)  # every style term would be multiplied by zero
        weights = normalized_weights(styles)
        regions = None
        if masks is not None:
            regions = region_masks(masks, tuple(f_c.shape[-2:]), len(styles), content.shape[0]).to(f_c)
        style_feats = [self.style_features(s, self.encode, device=f_c.device, dtype=content.dtype) for s in styles]
        t = mix_targets(self.targets(f_c, style_feats, regions), weights, regions)
        return self.decoder(alpha * t + (1.0 - alpha) * f_c)


# --- checkpoints ----------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """The parts of a decoder-based checkpoint: ``parts[name]`` are un-prefixed state dicts."""

    parts: dict[str, dict[str, Tensor]]
    encoder: dict[str, Tensor] | None
    encoder_source: str | None
    where: str


def default_dir(family: str) -> Path:
    return cache_dir() / family


def _default_weights(family: str, files: dict[str, str]) -> str | None:
    d = default_dir(family)
    if (d / f"{family}.safetensors").exists():
        return str(d / f"{family}.safetensors")
    if all((d / f).exists() for f in files.values()):
        return str(d)
    return None


def _optional(uri: str) -> dict[str, Tensor] | None:
    if "://" not in uri or uri.startswith("file://"):
        if not Path(uri.removeprefix("file://")).expanduser().exists():
            return None
        return load_state_dict(uri)
    try:
        local_path(uri)
    except WeightsError:
        return None
    return load_state_dict(uri)


def read_checkpoint(weights: str | None, *, family: str, files: dict[str, str], help_text: str) -> Checkpoint:
    """Read a published-layout directory/prefix or one safetensors file into a ``Checkpoint``.

    ``files`` maps part name -> published file name (``{"decoder": "decoder.pth"}``); in a
    safetensors file each part is the ``<part>.`` key prefix and ``encoder.`` is optional.
    """
    if weights is None:
        weights = _default_weights(family, files)
        if weights is None:
            raise WeightsError(help_text.format(where=default_dir(family)))
    weights = str(weights)
    if split_sha256(weights)[0].endswith(".safetensors"):
        state = load_state_dict(weights)
        parts = {p: _strip(state, p + ".") for p in files}
        empty = [p for p, s in parts.items() if not s]
        if empty:
            raise WeightsError(
                f"{weights} has no {', '.join(p + '.*' for p in empty)} keys (first keys: {list(state)[:3]})"
            )
        encoder = _strip(state, "encoder.") or None
        return Checkpoint(parts, encoder, read_metadata(weights).get("encoder"), weights)
    base = weights.rstrip("/")
    local = "://" not in base or base.startswith("file://")
    if local:
        path = Path(base.removeprefix("file://")).expanduser()
        if path.is_file() and path.name in (*files.values(), ENCODER_FILE):
            base = str(path.parent)  # a published file given directly: read its siblings
        elif not path.is_dir():
            what = "is not a directory or .safetensors file" if path.exists() else "does not exist"
            raise WeightsError(f"{family} weights {path} {what}; expected a directory with {', '.join(files.values())}")
    parts = {p: load_state_dict(f"{base}/{name}") for p, name in files.items()}
    encoder = _optional(f"{base}/{ENCODER_FILE}")
    return Checkpoint(parts, encoder, None, base)


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def checkpoint_availability(family: str, files: dict[str, str], help_text: str) -> tuple[bool, str]:
    """(found?, where) for the default location, without loading tensors."""
    found = _default_weights(family, files)
    if found is None:
        return False, help_text.format(where=default_dir(family))
    if found.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(found, framework="pt") as f:
            has_encoder = any(k.startswith("encoder.") for k in f.keys())  # noqa: SIM118 - not a dict
            source = (f.metadata() or {}).get("encoder")
    else:
        has_encoder, source = (Path(found) / ENCODER_FILE).exists(), None
    if has_encoder:
        return True, found
    ok, enc_where = vgg.encoder_availability(source or "auto")
    return ok, f"{found} (encoder: {enc_where})"


def make_encoder(ckpt: Checkpoint, encoder_weights: str, *, last: str) -> vgg.VGGEncoder:
    """The encoder the decoder was trained against, unless ``encoder_weights`` names another.

    Order: an explicit ``encoder_weights`` source; the checkpoint's own encoder
    (``vgg_normalised.pth`` / ``encoder.*``); the source its metadata names; ``auto``.
    """
    if encoder_weights != "auto":
        return vgg.load_encoder(encoder_weights, last=last)
    if ckpt.encoder is not None:
        return vgg.from_state_dict(ckpt.encoder, last=last, source=f"{ckpt.where} encoder")
    if ckpt.encoder_source:
        return vgg.load_encoder(ckpt.encoder_source, last=last)
    warnings.warn(
        f"{ckpt.where} has no {ENCODER_FILE} or encoder.* weights; using encoder 'auto', which may not be "
        "the VGG its decoder was trained against",
        stacklevel=3,
    )
    return vgg.load_encoder("auto", last=last)


def load_decoder(state: dict[str, Tensor], *, what: str) -> nn.Sequential:
    from pipeline.models.weights import load_into

    decoder = build_decoder()
    load_into(decoder, state, what=what)
    return decoder


def save_checkpoint(
    path: str | Path, parts: dict[str, nn.Module], encoder: vgg.VGGEncoder | None, metadata: dict[str, str]
) -> None:
    """Write ``<part>.*`` (+ ``encoder.*``) keys to one safetensors file (what ``read_checkpoint`` reads)."""
    from safetensors.torch import save_file

    state = {f"{p}.{k}": v.detach().cpu().contiguous() for p, m in parts.items() for k, v in m.state_dict().items()}
    if encoder is not None:
        state.update({f"encoder.{k}": v for k, v in vgg.to_state_dict(encoder).items()})
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})


def create_adain(
    weights: str | None = None, encoder_weights: str = "auto", device: str | torch.device = "cpu"
) -> AdaIN:
    """Load AdaIN from ``weights`` (see the module docstring) onto ``device``."""
    ckpt = read_checkpoint(weights, family="adain", files=ADAIN_FILES, help_text=ADAIN_HELP)
    decoder = load_decoder(ckpt.parts["decoder"], what=f"adain decoder ({ckpt.where})")
    encoder = make_encoder(ckpt, encoder_weights, last="relu4_1")
    model = AdaIN(encoder, decoder).requires_grad_(False)
    return model.to(device).eval()


WEIGHT_SOURCES = (
    f"{RELEASE_URL}/decoder.pth + {RELEASE_URL}/{ENCODER_FILE} (pytorch-AdaIN, a directory or URI prefix)",
    "a safetensors file with decoder.* (+ encoder.*) keys from `stylize train adain`",
    "default location: $STYLIZE_CACHE/adain/",
)

register(
    ModelCard(
        name="adain",
        family="adain",
        paper="Huang & Belongie, Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization, ICCV 2017",
        style_kind="image",
        weight_sources=WEIGHT_SOURCES,
        preprocessing=(
            "RGB [0,1]; the encoder's 1x1 input conv applies its own convention (vgg_normalised: BGR 0-255 minus "
            "mean); content reflect-padded to a multiple of 8; relu4_1 features; output cropped and clamped to [0,1]"
        ),
        factory=create_adain,
        availability=lambda: checkpoint_availability("adain", ADAIN_FILES, ADAIN_HELP),
    )
)
