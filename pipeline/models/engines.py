"""Which engine runs a stylizer: torch, or onnxruntime for the families ported from ONNX files.

Measured on this project's 2-core CPU (``python -m pipeline.bench.engines``, ``docs/benchmarks.md``),
the 26-style network at 1024x683 takes 457 ms in torch fp32, 377 ms with channels-last input and
331 ms in onnxruntime on the original ``multistyle26.onnx``. bf16 autocast takes 288 ms but moves
pixels by up to 11 levels (p99 2.6), so it is not an engine here. On a GPU torch is the engine.
``engine="auto"`` picks onnxruntime for dumoulin on CPU when the package is installed, torch
otherwise. The onnxruntime path keeps the stylizer contract and the torch module's padding, alpha
and mixing: only the network call moves.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pipeline.errors import ConfigError
from pipeline.models.base import Style, Stylizer
from pipeline.models.fetch import create  # locates published weights, fetching them on first use

Engine = Literal["auto", "torch", "onnxruntime"]
ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime")


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_engine(engine: str, stylizer: str, device: torch.device, *, custom_weights: bool = False) -> str:
    """The engine that will run ``stylizer`` on ``device``; a one-line ConfigError if it cannot."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    onnx_ok = stylizer == "dumoulin" and device.type == "cpu" and not custom_weights and _has_onnxruntime()
    if engine == "onnxruntime" and not onnx_ok:
        raise ConfigError(
            "engine onnxruntime runs dumoulin's bundled weights on CPU only, with onnxruntime installed "
            f"(asked for {stylizer} on {device}); use engine torch or auto"
        )
    return "onnxruntime" if engine == "onnxruntime" or (engine == "auto" and onnx_ok) else "torch"


class OnnxNet(torch.nn.Module):
    """``multistyle26.onnx`` behind the torch network's call signature ``net(x, style_weights)``.

    The export takes one image and a (26,) weight vector, so a batch runs image by image. Below
    ``BATCH_PIXELS`` per image the fixed cost of a call dominates (16x16: 0.6 ms a call), so images
    sharing one style vector go through a copy of the graph with a free batch dimension, built on
    first use; the outputs are identical. Above it batching is slower on CPU (measured at 96 px and up).
    """

    BATCH_PIXELS = 64 * 64

    def __init__(self, path: str, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = path
        self.options = ort.SessionOptions()
        self.options.log_severity_level = 3
        # no busy-waiting between ops: decode and encode threads share these cores
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            self.options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, self.options, providers=["CPUExecutionProvider"])
        self._batched: object | None = None

    def _batched_session(self) -> object:
        if self._batched is None:
            import onnx
            import onnxruntime as ort

            graph = onnx.load(self.path)
            graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
            self._batched = ort.InferenceSession(
                graph.SerializeToString(), self.options, providers=["CPUExecutionProvider"]
            )
        return self._batched

    def forward(self, x: Tensor, style_weights: Tensor) -> Tensor:
        images = x.float().cpu().numpy()
        if style_weights.dim() == 1 and x.shape[0] > 1 and x.shape[2] * x.shape[3] <= self.BATCH_PIXELS:
            feed = {"image": np.ascontiguousarray(images), "style_weights": style_weights.float().cpu().numpy()}
            return torch.from_numpy(self._batched_session().run(None, feed)[0]).to(x)
        weights = style_weights.expand(x.shape[0], -1) if style_weights.dim() == 1 else style_weights
        out = []
        for image, w in zip(images, weights.float().cpu().numpy(), strict=True):
            feed = {"image": np.ascontiguousarray(image[None]), "style_weights": np.ascontiguousarray(w)}
            out.append(torch.from_numpy(self.session.run(None, feed)[0]))
        return torch.cat(out).to(x)


def with_engine(model: Stylizer, engine: str, *, threads: int | None = None) -> Stylizer:
    """``model`` running on ``engine`` (``resolve_engine``'s answer); the torch model itself for torch."""
    if engine == "torch":
        return model
    from pipeline.models import onnx_port
    from pipeline.models.dumoulin import ONNX_FILE

    model.net = OnnxNet(str(onnx_port.package_file(ONNX_FILE)), threads)
    return model


def load_stylizer(
    stylizer: str,
    *,
    device: torch.device,
    engine: str = "auto",
    weights: str | None = None,
    encoder_weights: str = "auto",
    threads: int | None = None,
    storage_options: dict | None = None,
    **options: int,
) -> Stylizer:
    """The stylizer on ``device`` and its resolved engine: how the CLI, batch actors and benchmarks load one.
    A remote ``weights`` URI is read with ``storage_options``."""
    chosen = resolve_engine(engine, stylizer, device, custom_weights=bool(weights))
    kwargs: dict[str, object] = {"device": device, "encoder_weights": encoder_weights, **options}
    if weights:
        kwargs.update(weights=weights, storage_options=storage_options)
    return with_engine(create(stylizer, **kwargs), chosen, threads=threads)


__all__ = ["ENGINES", "Engine", "OnnxNet", "Style", "load_stylizer", "resolve_engine", "with_engine"]
