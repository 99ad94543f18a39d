"""Reading and writing the checkpoints of the decoder-based families (adain, wct, sanet).

Two layouts load:

- a directory (or URI prefix) in the published layout: one ``.pth`` per part (``decoder.pth``,
  SANet's ``transformer.pth``) and, when present, ``vgg_normalised.pth``, the encoder the
  decoder was trained against;
- one safetensors file with ``<part>.*`` keys and optional ``encoder.*`` keys, whose metadata
  key ``encoder`` may name an encoder source for ``vgg.load_encoder`` (``save_checkpoint``
  writes this layout; ``stylize train adain|sanet`` uses it).

Without weights each family looks in ``cache_dir()/<family>/``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pipeline.errors import WeightsError
from pipeline.models import vgg
from pipeline.models.weights import cache_dir, load_state_dict, local_path, read_metadata, split_sha256

ENCODER_FILE = "vgg_normalised.pth"


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
    """The state dict at ``uri``, or None when there is no such file (the encoder is optional)."""
    if "://" not in uri or uri.startswith("file://"):
        if not Path(uri.removeprefix("file://")).expanduser().exists():
            return None
        return load_state_dict(uri)
    try:
        local_path(uri)
    except WeightsError:
        return None
    return load_state_dict(uri)


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def read_checkpoint(weights: str | None, *, family: str, files: dict[str, str], help_text: str) -> Checkpoint:
    """Read a published-layout directory/prefix or one safetensors file into a ``Checkpoint``.

    ``files`` maps part name -> published file name (``{"decoder": "decoder.pth"}``); in a
    safetensors file each part is the ``<part>.`` key prefix and ``encoder.`` is optional.
    ``help_text`` (with ``{where}``) is the error when nothing is given and nothing is found.
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


def save_checkpoint(
    path: str | Path, parts: dict[str, nn.Module], encoder: vgg.VGGEncoder | None, metadata: dict[str, str]
) -> None:
    """Write ``<part>.*`` (+ ``encoder.*``) keys to one safetensors file (what ``read_checkpoint`` reads)."""
    from safetensors.torch import save_file

    state = {f"{p}.{k}": v.detach().cpu().contiguous() for p, m in parts.items() for k, v in m.state_dict().items()}
    if encoder is not None:
        state.update({f"encoder.{k}": v for k, v in vgg.to_state_dict(encoder).items()})
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})
