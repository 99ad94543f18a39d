"""cyclegan and animegan: the published key layouts load, and outputs match the original forward passes.

The state dicts are written here key by key in the layouts the published files use
(pytorch-CycleGAN-and-pix2pix ``latest_net_G.pth``, animegan2-pytorch ``weights/*.pt``), with random
values, and the references are functional re-implementations of those repositories' ``forward``
(``F.conv2d``, ``F.pad(mode="reflect")``, ``F.instance_norm`` ...), sharing no code with the stylizers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from typer.testing import CliRunner

from pipeline import imaging
from pipeline.errors import WeightsError
from pipeline.models import Style, controls, create
from tests.helpers_ff import one_line, smooth_image


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _conv(gen: torch.Generator, c_out: int, c_in: int, k: int, bias: bool = True) -> dict[str, Tensor]:
    """Kaiming-scaled random conv weights, so activations keep their scale and the tanh is not saturated."""
    w = torch.randn(c_out, c_in, k, k, generator=gen) / math.sqrt(c_in * k * k)
    return {"weight": w, **({"bias": torch.randn(c_out, generator=gen) * 0.1} if bias else {})}


# --- CycleGAN -------------------------------------------------------------------------------------


def cyclegan_state(ngf: int = 64, n_blocks: int = 9, dropout: bool = False, seed: int = 0) -> dict[str, Tensor]:
    """``ResnetGenerator(3, 3, ngf, InstanceNorm, use_dropout, n_blocks)``'s keys, as its saved files have them."""
    gen = torch.Generator().manual_seed(seed)
    entries: list[tuple[str, dict[str, Tensor]]] = [("model.1", _conv(gen, ngf, 3, 7))]
    entries += [("model.4", _conv(gen, 2 * ngf, ngf, 3)), ("model.7", _conv(gen, 4 * ngf, 2 * ngf, 3))]
    second = 6 if dropout else 5  # nn.Dropout sits at conv_block.4 when use_dropout
    for i in range(n_blocks):
        entries += [(f"model.{10 + i}.conv_block.1", _conv(gen, 4 * ngf, 4 * ngf, 3))]
        entries += [(f"model.{10 + i}.conv_block.{second}", _conv(gen, 4 * ngf, 4 * ngf, 3))]
    j = 10 + n_blocks
    for index, c_in in ((j, 4 * ngf), (j + 3, 2 * ngf)):
        weight = torch.randn(c_in, c_in // 2, 3, 3, generator=gen) / math.sqrt(
            c_in * 9 / 4
        )  # ConvTranspose2d: (in, out)
        entries += [(f"model.{index}", {"weight": weight, "bias": torch.randn(c_in // 2, generator=gen) * 0.1})]
    entries += [(f"model.{j + 7}", _conv(gen, 3, ngf, 7))]
    return {f"{prefix}.{name}": t for prefix, params in entries for name, t in params.items()}


def ref_cyclegan(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """The generator's forward on (B,3,H,W) in [-1,1], from the keys alone."""
    n_blocks = len({k.split(".")[1] for k in state if "conv_block" in k})
    second = 6 if any(".conv_block.6." in k for k in state) else 5

    def w(name: str) -> Tensor:
        return state[f"{name}.weight"]

    def b(name: str) -> Tensor:
        return state[f"{name}.bias"]

    def norm_relu(t: Tensor) -> Tensor:
        return F.relu(F.instance_norm(t, eps=1e-5))

    y = norm_relu(F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), w("model.1"), b("model.1")))
    y = norm_relu(F.conv2d(y, w("model.4"), b("model.4"), stride=2, padding=1))
    y = norm_relu(F.conv2d(y, w("model.7"), b("model.7"), stride=2, padding=1))
    for i in range(n_blocks):
        p = f"model.{10 + i}.conv_block"
        r = norm_relu(F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), w(f"{p}.1"), b(f"{p}.1")))
        r = F.instance_norm(F.conv2d(F.pad(r, (1, 1, 1, 1), mode="reflect"), w(f"{p}.{second}"), b(f"{p}.{second}")))
        y = y + r
    j = 10 + n_blocks
    for index in (j, j + 3):
        name = f"model.{index}"
        y = norm_relu(F.conv_transpose2d(y, w(name), b(name), stride=2, padding=1, output_padding=1))
    return torch.tanh(F.conv2d(F.pad(y, (3, 3, 3, 3), mode="reflect"), w(f"model.{j + 7}"), b(f"model.{j + 7}")))


def expected(ref, state: dict[str, Tensor], content: Tensor, alpha: float = 1.0) -> Tensor:
    """Our contract around the original: [0,1] -> [-1,1], reflect-pad bottom/right to 4, map back, crop, blend."""
    h, w = content.shape[-2:]
    padded = F.pad(content, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
    out = ((ref(state, padded * 2 - 1) + 1) / 2)[..., :h, :w]
    return (alpha * out + (1 - alpha) * content).clamp(0, 1)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensor]]:
    state = cyclegan_state()
    path = tmp_path_factory.mktemp("cyclegan") / "latest_net_G.pth"
    torch.save(state, path)
    return path, state


def test_the_published_layout_has_48_tensors_and_11378179_parameters(published) -> None:
    _, state = published
    assert len(state) == 48
    assert sum(t.numel() for t in state.values()) == 11_378_179
    model = create("cyclegan", weights=str(published[0]))
    assert list(model.net.state_dict()) == list(state)  # the module's own keys are the published ones
    assert (model.net.ngf, model.net.n_blocks, model.net.use_dropout) == (64, 9, False)


def test_a_published_generator_matches_the_original_forward(published) -> None:
    path, state = published
    model = create("cyclegan", weights=str(path))
    content = smooth_image(3, 64, 64, batch=2)
    ref = expected(ref_cyclegan, state, content)
    assert ref.std().item() > 0.1 and ((ref > 0.01) & (ref < 0.99)).float().mean().item() > 0.9
    assert (model(content, [Style()]) - ref).abs().max().item() < 1e-5


def test_odd_sizes_range_batch_and_alpha(published) -> None:
    path, state = published
    model = create("cyclegan", weights=str(path))
    content = smooth_image(4, 37, 53, batch=2)
    out = model(content, [Style()])
    assert out.shape == content.shape and out.min().item() >= 0 and out.max().item() <= 1
    assert (out - expected(ref_cyclegan, state, content)).abs().max().item() < 1e-5
    assert (model(content[1:], [Style()]) - out[1:]).abs().max().item() < 1e-5  # batching changes nothing
    half = model(content, [Style()], alpha=0.5)
    assert (half - expected(ref_cyclegan, state, content, 0.5)).abs().max().item() < 1e-5
    assert (model(content, [Style()], alpha=0.0) - content).abs().max().item() < 1e-6
    tiny = model(smooth_image(5, 5, 7), [Style()])  # pads to 8x8, the smallest the blocks take
    assert tiny.shape == (1, 3, 5, 7)


def test_legacy_norm_buffers_and_module_prefix_load(published, tmp_path: Path) -> None:
    path, state = published
    legacy = dict(state)
    norms = ["model.2", "model.5", "model.8", "model.20", "model.23"]
    norms += [f"model.{10 + i}.conv_block.{k}" for i in range(9) for k in (2, 6)]
    for name in norms:  # what InstanceNorm(track_running_stats=True) saved in older versions
        c = 64 if name in ("model.2", "model.23") else 128 if name in ("model.5", "model.20") else 256
        legacy[f"{name}.running_mean"] = torch.zeros(c)
        legacy[f"{name}.running_var"] = torch.ones(c)
        legacy[f"{name}.num_batches_tracked"] = torch.tensor(0)
    wrapped = {f"module.{k}": v for k, v in legacy.items()}  # saved from a DataParallel
    content = smooth_image(6, 32, 48)
    want = create("cyclegan", weights=str(path))(content, [Style()])
    for variant, name in ((legacy, "legacy.pth"), (wrapped, "module.pth")):
        torch.save(variant, tmp_path / name)
        got = create("cyclegan", weights=str(tmp_path / name))(content, [Style()])
        assert (got - want).abs().max().item() == 0


def test_the_dropout_layout_and_other_widths_are_detected(tmp_path: Path) -> None:
    state = cyclegan_state(ngf=16, n_blocks=6, dropout=True, seed=2)
    assert "model.10.conv_block.6.weight" in state and "model.10.conv_block.5.weight" not in state
    torch.save(state, tmp_path / "g.pth")
    model = create("cyclegan", weights=str(tmp_path / "g.pth"))
    assert (model.net.ngf, model.net.n_blocks, model.net.use_dropout) == (16, 6, True)
    content = smooth_image(7, 40, 44)
    assert (model(content, [Style()]) - expected(ref_cyclegan, state, content)).abs().max().item() < 1e-5


def test_a_missing_or_unexpected_key_is_refused_with_one_line(published, tmp_path: Path) -> None:
    _, state = published
    missing = {k: v for k, v in state.items() if k != "model.14.conv_block.5.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError) as err:
        create("cyclegan", weights=str(tmp_path / "missing.pth"))
    assert one_line(err.value) and "missing" in str(err.value) and "model.14.conv_block.5.bias" in str(err.value)
    extra = {**state, "model.99.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(WeightsError) as err:
        create("cyclegan", weights=str(tmp_path / "extra.pth"))
    assert one_line(err.value) and "unexpected" in str(err.value) and "model.99.weight" in str(err.value)
    torch.save({"conv1.conv2d.weight": torch.zeros(32, 3, 9, 9)}, tmp_path / "johnson.pth")
    with pytest.raises(WeightsError) as err:
        create("cyclegan", weights=str(tmp_path / "johnson.pth"))
    assert one_line(err.value) and "conv1.conv2d.weight" in str(err.value)


def test_pth_files_are_read_weights_only(published, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    create("cyclegan", weights=str(published[0]))
    assert seen == [True]


def test_without_weights_one_line_says_where_to_get_them() -> None:
    for name, where in (("cyclegan", "style_monet.pth"), ("animegan", "paprika.pt")):
        with pytest.raises(WeightsError) as err:
            create(name)
        assert one_line(err.value) and where in str(err.value) and "--weights" in str(err.value)


def test_runtime_controls_apply(published) -> None:
    model = create("cyclegan", weights=str(published[0]))
    content = smooth_image(8, 96, 80)
    whole = controls.stylize(model, content, [Style()], tile_pixels=None)
    tiled = controls.stylize(model, content, [Style()], tile_pixels=64 * 64)
    assert tiled.shape == whole.shape and (tiled - whole).abs().mean().item() < 0.1  # per-tile norm: close, not equal
    kept = controls.stylize(model, content, [Style()], preserve_color="luminance", tile_pixels=None)

    def chroma_change(x: Tensor) -> float:
        return (imaging.rgb_to_ycbcr(x)[:, 1:] - imaging.rgb_to_ycbcr(content)[:, 1:]).abs().mean().item()

    assert chroma_change(kept) < 0.01 < chroma_change(whole)  # the photo's own colours (up to out-of-gamut clamps)
    assert controls.stylize(model, content, [Style()], max_side=40).shape[-2:] == (40, 33)


# --- AnimeGANv2 -----------------------------------------------------------------------------------

# (prefix, c_in, c_out, kernel, stride) of each ConvNormLReLU outside the inverted residual blocks
_CNL = [
    ("block_a.0", 3, 32, 7, 1),
    ("block_a.1", 32, 64, 3, 2),
    ("block_a.2", 64, 64, 3, 1),
    ("block_b.0", 64, 128, 3, 2),
    ("block_b.1", 128, 128, 3, 1),
    ("block_c.0", 128, 128, 3, 1),
    ("block_c.5", 256, 128, 3, 1),
    ("block_d.0", 128, 128, 3, 1),
    ("block_d.1", 128, 128, 3, 1),
    ("block_e.0", 128, 64, 3, 1),
    ("block_e.1", 64, 64, 3, 1),
    ("block_e.2", 64, 32, 7, 1),
]
_IRB = [("block_c.1", 128, 256), ("block_c.2", 256, 256), ("block_c.3", 256, 256), ("block_c.4", 256, 256)]


def animegan_state(seed: int = 0) -> dict[str, Tensor]:
    """animegan2-pytorch ``Generator()``'s keys, as its ``weights/*.pt`` files have them."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}

    def cnl(prefix: str, c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = False) -> None:
        for name, t in _conv(gen, c_out, c_in // groups, k, bias=bias).items():
            state[f"{prefix}.1.{name}"] = t
        state[f"{prefix}.2.weight"] = 1 + 0.1 * torch.randn(c_out, generator=gen)
        state[f"{prefix}.2.bias"] = 0.1 * torch.randn(c_out, generator=gen)

    for prefix, c_in, c_out, k, _ in _CNL:
        cnl(prefix, c_in, c_out, k)
    for prefix, c_in, c_out in _IRB:
        mid = 2 * c_in
        cnl(f"{prefix}.layers.0", c_in, mid, 1)
        cnl(f"{prefix}.layers.1", mid, mid, 3, groups=mid, bias=True)
        state[f"{prefix}.layers.2.weight"] = _conv(gen, c_out, mid, 1, bias=False)["weight"]
        state[f"{prefix}.layers.3.weight"] = 1 + 0.1 * torch.randn(c_out, generator=gen)
        state[f"{prefix}.layers.3.bias"] = 0.1 * torch.randn(c_out, generator=gen)
    state["out_layer.0.weight"] = _conv(gen, 3, 32, 1, bias=False)["weight"]
    return state


def ref_animegan(state: dict[str, Tensor], x: Tensor, align_corners: bool) -> Tensor:
    """animegan2-pytorch ``Generator.forward(x, align_corners)`` on (B,3,H,W) in [-1,1], functionally."""

    def cnl(t: Tensor, prefix: str, k: int = 3, stride: int = 1, groups: int = 1) -> Tensor:
        pad = (0, 1, 0, 1) if stride == 2 else (k // 2,) * 4
        t = F.conv2d(
            F.pad(t, pad, mode="reflect"),
            state[f"{prefix}.1.weight"],
            state.get(f"{prefix}.1.bias"),
            stride,
            groups=groups,
        )
        t = F.group_norm(t, 1, state[f"{prefix}.2.weight"], state[f"{prefix}.2.bias"], eps=1e-5)
        return F.leaky_relu(t, 0.2)

    spec = {p: (k, s) for p, _, _, k, s in _CNL}

    def run(t: Tensor, prefix: str) -> Tensor:
        k, s = spec[prefix]
        return cnl(t, prefix, k, s)

    def irb(t: Tensor, prefix: str, c_in: int, c_out: int) -> Tensor:
        out = cnl(t, f"{prefix}.layers.0", 1)
        out = cnl(out, f"{prefix}.layers.1", 3, groups=2 * c_in)
        out = F.conv2d(out, state[f"{prefix}.layers.2.weight"])
        out = F.group_norm(out, 1, state[f"{prefix}.layers.3.weight"], state[f"{prefix}.layers.3.bias"], eps=1e-5)
        return t + out if c_in == c_out else out

    def up(t: Tensor, size) -> Tensor:
        if align_corners:
            return F.interpolate(t, size, mode="bilinear", align_corners=True)
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    out = run(run(run(x, "block_a.0"), "block_a.1"), "block_a.2")
    half = out.shape[-2:]
    out = run(run(out, "block_b.0"), "block_b.1")
    out = run(out, "block_c.0")
    for prefix, c_in, c_out in _IRB:
        out = irb(out, prefix, c_in, c_out)
    out = run(out, "block_c.5")
    out = run(run(up(out, half), "block_d.0"), "block_d.1")
    out = run(run(run(up(out, x.shape[-2:]), "block_e.0"), "block_e.1"), "block_e.2")
    return torch.tanh(F.conv2d(out, state["out_layer.0.weight"]))


@pytest.fixture(scope="module")
def anime(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensor]]:
    state = animegan_state()
    path = tmp_path_factory.mktemp("animegan") / "paprika.pt"
    torch.save(state, path)
    return path, state


def test_animegan_layout_and_both_upsampling_modes_match_the_original(anime) -> None:
    path, state = anime
    assert len(state) == 77 and sum(t.numel() for t in state.values()) == 2_143_552  # "generator size: 8.17 Mb"
    content = smooth_image(9, 37, 50)
    for align in (False, True):
        model = create("animegan", weights=str(path), align_corners=align)
        assert sorted(model.net.state_dict()) == sorted(state)
        ref = expected(lambda s, x, a=align: ref_animegan(s, x, a), state, content)
        assert ref.std().item() > 0.05
        out = model(content, [Style()])
        assert out.shape == content.shape and out.min().item() >= 0 and out.max().item() <= 1
        assert (out - ref).abs().max().item() < 1e-5
    default = create("animegan", weights=str(path))
    assert default.net.align_corners is False  # test.py's --upsample_align default


def test_animegan_module_prefix_loads_and_a_missing_key_is_one_line(anime, tmp_path: Path) -> None:
    path, state = anime
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    content = smooth_image(10, 24, 24)
    want = create("animegan", weights=str(path))(content, [Style()])
    assert (create("animegan", weights=str(tmp_path / "dp.pt"))(content, [Style()]) - want).abs().max().item() == 0
    torch.save({k: v for k, v in state.items() if k != "block_c.3.layers.1.1.bias"}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError) as err:
        create("animegan", weights=str(tmp_path / "bad.pt"))
    assert one_line(err.value) and "block_c.3.layers.1.1.bias" in str(err.value)


# --- through the CLI and a batch job --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow generator in the published layout (6 blocks at ngf 8): fast enough for end-to-end runs."""
    path = tmp_path_factory.mktemp("small") / "latest_net_G.pth"
    torch.save(cyclegan_state(ngf=8, n_blocks=6, seed=5), path)
    return path


def test_stylize_image_and_a_batch_job_with_a_cyclegan_checkpoint(small_checkpoint: Path, tmp_path: Path) -> None:
    from pipeline import layout
    from pipeline.cli import app
    from pipeline.codec import decode_image
    from pipeline.shard import ShardWorker
    from tests.pipeline_helpers import encode, job_config, photo, write_inputs, write_manifest

    sources = write_inputs(
        tmp_path / "in", {"a": encode(photo((61, 45), seed=1)), "b": encode(photo((40, 52), seed=2))}
    )
    png = tmp_path / "cli.png"
    args = ["image", sources["a"], "-o", str(png), "--stylizer", "cyclegan", "--weights", str(small_checkpoint)]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    cli = decode_image(png.read_bytes()).array
    assert cli.shape == (45, 61, 3)
    model = create("cyclegan", weights=str(small_checkpoint))
    direct = model(torch.from_numpy(photo((61, 45), seed=1)).permute(2, 0, 1)[None].float() / 255, [Style()])
    assert np.abs(cli.astype(int) - np.round(direct[0].permute(1, 2, 0).numpy() * 255)).max() <= 1

    manifest = write_manifest(tmp_path / "m.parquet", list(sources.items()))
    config = job_config(manifest, tmp_path / "out", stylizer="cyclegan", weights=str(small_checkpoint), device="cpu")
    worker = ShardWorker(config)
    try:
        summary = worker.run(0, 0, 2)
    finally:
        worker.close()
    import pyarrow.parquet as pq

    rows = {r["image_id"]: r for r in pq.read_table(worker.storage.open(layout.shard_key(0))).to_pylist()}
    assert summary and all(r["status"] == "ok" for r in rows.values()), rows
    job = decode_image(Path(rows["a"]["output_uri"]).read_bytes()).array
    np.testing.assert_array_equal(job, cli)  # the CLI and a job give the same pixels
    assert decode_image(Path(rows["b"]["output_uri"]).read_bytes()).array.shape == (52, 40, 3)


def test_bench_models_times_both_with_random_weights_when_none_are_here() -> None:
    from pipeline.bench.models import bench_models, random_init

    rows = list(
        bench_models(["cyclegan", "animegan"], [32], device=torch.device("cpu"), repeats=1, random_init=random_init)
    )
    assert [(r.stylizer, r.size) for r in rows] == [("cyclegan", 32), ("animegan", 32)]
    assert all(r.weights.startswith("random-init") and r.images_per_s > 0 for r in rows)
    assert sum(p.numel() for p in random_init("cyclegan").parameters()) == 11_378_179


def test_models_list_shows_the_weight_sources_and_their_licences() -> None:
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["models", "list", "--sources"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for text in ("style_monet.pth", "style_vangogh.pth", "paprika.pt", "face_paint_512_v2.pt", "non-commercial"):
        assert text in result.output, text
    assert "none published" in result.output
