"""Training: losses fall, checkpoints load and stylize, a killed run resumes, bad rows are skipped.

Everything is tiny and hermetic: a randomly initialised VGG16 saved to a file (so the trained
adain/sanet checkpoints must embed it), generated 48x64 content photos, 32 px crops, a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pipeline.checkpoints import find_checkpoints
from pipeline.errors import ConfigError, ManifestError
from pipeline.models import create, vgg, vgg_layout
from pipeline.models.base import Style
from pipeline.models.weights import read_metadata
from pipeline.train.config import FAMILIES, TrainConfig
from pipeline.train.data import ImageSampler
from pipeline.train.loop import train_loop
from pipeline.train.plots import window_means
from pipeline.train.store import CheckpointStore


class Interrupted(Exception):
    """Stands in for a killed worker."""


def _photo(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * (i + 2) * 3) % 256, (y * 5 + i * 40) % 256, ((x + y) * (i + 1)) % 256], -1)
    img[h // 4 : h // 2, w // 3 : w // 2] = (30 * i) % 256  # an edge for the content loss to keep
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-assets")
    threads = torch.get_num_threads()  # the runs below set 1 (cpus_per_worker); restored afterwards
    torch.manual_seed(0)
    enc = vgg.VGGEncoder("vgg16", last="relu5_1")
    enc.set_input_convention(*vgg_layout.caffe_affine())  # Caffe scale like hed-vgg16, so default weights apply
    save_file(vgg.to_state_dict(enc), str(root / "vgg16-random.safetensors"))
    uris = []
    for i in range(5):
        Image.fromarray(_photo(i)).save(root / f"content{i}.png")
        uris.append(str(root / f"content{i}.png"))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    uris += [str(root / "corrupt.jpg"), str(root / "missing.png")]
    (root / "content.txt").write_text("\n".join(uris) + "\n")
    rng = np.random.default_rng(1)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = (250, 40, 40)
    stripes[::8] = (40, 40, 250)
    Image.fromarray(stripes).save(root / "style0.png")
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(root / "style1.png")
    (root / "styles.txt").write_text(f"{root / 'style0.png'}\n{root / 'style1.png'}\n")
    yield {
        "root": root,
        "vgg": root / "vgg16-random.safetensors",
        "content": root / "content.txt",
        "styles": root / "styles.txt",
        "style": root / "style0.png",
        "photo": root / "content0.png",
    }
    torch.set_num_threads(threads)


def _config(assets: dict[str, Path], stylizer: str, output: Path, **kw) -> dict:
    data = {
        "stylizer": stylizer,
        "content_manifest": str(assets["content"]),
        "output": str(output),
        "image_size": 32,
        "batch_size": 2,
        "encoder_weights": str(assets["vgg"]),
        "workers": 0,
        "device": "cpu",
        "samples": 2,
        "log_every": 100,
        "lr": 1e-3,
        "cpus_per_worker": 1,
    }
    if stylizer == "johnson":
        data["style"] = str(assets["style"])
    else:
        data["style_manifest"] = str(assets["styles"])
    data.update(kw)
    return data


def test_sampler_skips_bad_rows_and_counts_them(assets: dict[str, Path]) -> None:
    good = str(assets["photo"])
    bad = [str(assets["root"] / "corrupt.jpg"), str(assets["root"] / "missing.png")]
    sampler = ImageSampler([good, *bad], image_size=32, resize_to=40, seed=(0,))
    batch = sampler.batch(6)
    assert batch.shape == (6, 3, 32, 32) and float(batch.min()) >= 0 and float(batch.max()) <= 1
    assert sampler.skipped == 2 and any("corrupt.jpg" in r for r in sampler.reasons)
    with pytest.raises(ManifestError, match="no usable image"):
        ImageSampler(bad, image_size=32, resize_to=32, seed=(0,)).batch(1)


@pytest.mark.parametrize(
    ("stylizer", "steps", "every", "interrupt_at"),
    [("johnson", 12, 4, 7), ("adain", 12, 4, 7), ("sanet", 8, 3, 5)],
)
def test_train_lowers_loss_resumes_and_loads(
    assets: dict[str, Path], tmp_path: Path, stylizer: str, steps: int, every: int, interrupt_at: int
) -> None:
    config = _config(assets, stylizer, tmp_path / "out", steps=steps, checkpoint_every=every)

    def kill(step: int, values: dict[str, float]) -> None:
        if step == interrupt_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_loop(config, on_step=kill)
    store = CheckpointStore(str(tmp_path / "out"), stylizer)
    assert store.steps()[-1] == every

    summary = train_loop(config)  # the rerun continues from the last checkpoint
    rows = store.loss_rows()
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))  # each step once, numbering continued
    assert summary["skipped_content"] == 2
    totals = [r["total"] for r in rows]
    first, last = window_means(totals, 3)
    assert last < first, f"{stylizer} total loss did not fall: first {first:.4g}, last {last:.4g}"

    final = summary["checkpoint"]
    meta = read_metadata(final)
    assert meta["stylizer"] == stylizer and meta["step"] == str(steps) and meta["encoder"] == str(assets["vgg"])
    assert set(json.loads(meta["losses"])) >= {"content", "style", "total"}
    assert json.loads(meta["config"])["stylizer"] == stylizer
    found = find_checkpoints(str(tmp_path / "out"))
    assert sorted({f.step for f in found}) == sorted({*store.steps(), steps})
    assert all(f.stylizer == stylizer for f in found)

    grid = Image.open(tmp_path / "out" / "samples" / f"step{steps:08d}.png")
    assert grid.width == 3 * 32 + 4 * 4 and grid.height == 2 * 32 + 3 * 4
    assert (tmp_path / "out" / "loss_curve.png").stat().st_size > 1000

    # the checkpoint is used as is by the stylizer library and the CLI
    model = create(stylizer, weights=final)
    style = [Style()] if stylizer == "johnson" else [Style(image=torch.rand(1, 3, 48, 48))]
    out = model(torch.rand(1, 3, 40, 56), style)
    assert out.shape == (1, 3, 40, 56) and torch.isfinite(out).all()

    from pipeline.cli import app

    args = ["image", str(assets["photo"]), "-o", str(tmp_path / "styled.png"), "--stylizer", stylizer]
    args += ["--weights", final, "--device", "cpu"]
    if stylizer != "johnson":
        args += ["--style", str(assets["style"])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    styled = np.asarray(Image.open(tmp_path / "styled.png"))
    assert styled.shape == (48, 64, 3) and styled.std() > 0


@pytest.mark.parametrize("stylizer", ["johnson", "adain"])
def test_resumed_run_matches_an_uninterrupted_one(assets: dict[str, Path], tmp_path: Path, stylizer: str) -> None:
    """Killed after step 3 (last checkpoint: step 2) and rerun to step 4, a run ends with the same weights
    and optimizer state as 4 steps in one go. Fails if resuming re-initialises either, or draws other data."""

    def run(name: str, **kw) -> None:
        train_loop(_config(assets, stylizer, tmp_path / name, steps=4, checkpoint_every=2), **kw)

    def kill(step: int, values: dict[str, float]) -> None:
        if step == 3:
            raise Interrupted

    run("straight")
    with pytest.raises(Interrupted):
        run("resumed", on_step=kill)
    assert CheckpointStore(str(tmp_path / "resumed"), stylizer).steps() == [2]
    run("resumed")

    for key in (f"checkpoints/{stylizer}-step00000004.safetensors", "state/step00000004.safetensors"):
        want, got = load_file(tmp_path / "straight" / key), load_file(tmp_path / "resumed" / key)
        assert sorted(got) == sorted(want) and want
        for name, tensor in want.items():
            torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-7, msg=f"{key}: {name}")
    state = "state/step00000004.safetensors"
    assert any(k.endswith(".step") for k in load_file(tmp_path / "straight" / state))  # Adam's step counts
    meta_want, meta_got = (read_metadata(str(tmp_path / run / state)) for run in ("straight", "resumed"))
    assert (meta_got["param_groups"], meta_got["scalars"]) == (meta_want["param_groups"], meta_want["scalars"])


def test_trainers_come_from_the_registry() -> None:
    from pipeline.train import registry

    assert registry.list_trainers() == sorted(FAMILIES)
    assert all(registry.get_trainer(name).stylizer == name for name in FAMILIES)
    with pytest.raises(ConfigError, match="no trainer 'nope'"):
        registry.get_trainer("nope")


def test_resume_refuses_another_family(assets: dict[str, Path], tmp_path: Path) -> None:
    train_loop(_config(assets, "johnson", tmp_path / "out", steps=1, checkpoint_every=1))
    with pytest.raises(ConfigError, match="johnson checkpoints"):
        train_loop(_config(assets, "adain", tmp_path / "out", steps=1))


def test_layer_gains_bring_hed_to_the_normalised_scale() -> None:
    """hed-vgg16 losses are divided by its measured layer means; other Caffe-scale encoders are left as they are."""
    from pipeline.train.task import LAYER_MEANS, layer_gains

    hed = vgg.VGGEncoder("vgg16", last="relu5_1", source="hed-vgg16")
    hed.set_input_convention(*vgg_layout.caffe_affine())
    gains = layer_gains(hed, ["relu1_1", "relu4_1"])
    assert gains == {k: 1 / LAYER_MEANS["hed-vgg16"][k] for k in ("relu1_1", "relu4_1")}
    other = vgg.VGGEncoder("vgg16", last="relu5_1", source="/weights/vgg_normalised.pth")
    other.set_input_convention(*vgg_layout.caffe_affine())
    assert layer_gains(other, ["relu1_1"]) == {"relu1_1": pytest.approx(1.0)}


def test_sanet_warm_starts_from_an_adain_decoder(assets: dict[str, Path], tmp_path: Path) -> None:
    """--init-from copies the shared tensors (the decoder); a checkpoint made for another encoder is refused."""
    import shutil

    from pipeline.models.weights import load_state_dict
    from pipeline.train import registry
    from pipeline.train.loop import warm_start

    adain = train_loop(_config(assets, "adain", tmp_path / "adain", steps=1, checkpoint_every=1))["checkpoint"]
    decoder = {k: v for k, v in load_state_dict(adain).items() if k.startswith("decoder.")}
    config = TrainConfig(**_config(assets, "sanet", tmp_path / "sanet", init_from=adain)).resolved()
    task = registry.create(config, torch.device("cpu"))
    assert warm_start(task.net, task, config) == len(decoder)
    state = task.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in decoder.items())

    summary = train_loop(config.model_dump() | {"steps": 1})
    assert read_metadata(summary["checkpoint"])["step"] == "1"

    other = tmp_path / "other-vgg.safetensors"
    shutil.copy(assets["vgg"], other)
    with pytest.raises(ConfigError, match="a decoder only inverts its own encoder"):
        train_loop(_config(assets, "sanet", tmp_path / "other", steps=1, init_from=adain, encoder_weights=str(other)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"style": None}, "give --style"),
        ({"stylizer": "sanet", "style": None, "style_manifest": "s.txt", "image_size": 40}, "multiple of 16"),
        ({"resize_to": 16}, "at least --image-size"),
        ({"lr": -1}, r"^invalid train config: lr: Input should be greater than 0 \(got -1\)$"),
        ({"device": "tpu"}, r"^invalid train config: device: unknown device 'tpu'"),
        ({"stylizer": "nope"}, r"^invalid train config: stylizer: must be one of johnson, adain, sanet"),
        ({"epochs": 3}, r"^invalid train config: epochs: unknown key"),
    ],
)
def test_config_errors(assets: dict[str, Path], tmp_path: Path, change: dict, message: str) -> None:
    data = _config(assets, "johnson", tmp_path)
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**data).resolved()


def test_cli_trains_in_process(assets: dict[str, Path], tmp_path: Path) -> None:
    from pipeline.cli import app

    args = ["train", "adain", "--content-manifest", str(assets["content"]), "--style-manifest", str(assets["styles"])]
    args += ["--output", str(tmp_path / "out"), "--steps", "2", "--batch-size", "4", "--image-size", "32"]
    args += ["--encoder-weights", str(assets["vgg"]), "--workers", "0", "--cpus-per-worker", "1", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # 8 draws from 7 rows: one whole epoch, so both bad rows were met and skipped
    assert "trained adain to step 2" in result.output and "2 content" in result.output
    assert read_metadata(str(tmp_path / "out" / "adain.safetensors"))["stylizer"] == "adain"


@pytest.fixture(scope="module")
def local_ray() -> None:
    """A 2-CPU local Ray for the end-to-end tests (started once, shut down after)."""
    ray = pytest.importorskip("ray")
    from pipeline.raysession import ensure_ray

    started = not ray.is_initialized()
    ensure_ray()  # an embedded local Ray with this repo on the workers' path
    yield
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_torch_trainer_one_worker(assets: dict[str, Path], tmp_path: Path, local_ray: None) -> None:
    from pipeline.train.launch import run

    data = _config(assets, "johnson", tmp_path / "out", steps=3, checkpoint_every=3, workers=1, log_every=1)
    summary = run(TrainConfig(**data))
    assert summary["step"] == 3 and summary["skipped_content"] == 2 and "style" in summary["losses"]
    assert read_metadata(str(tmp_path / "out" / "johnson.safetensors"))["step"] == "3"
    assert (tmp_path / "out" / "samples" / "step00000003.png").exists()


@pytest.mark.slow
def test_batch_job_runs_a_trained_checkpoint(assets: dict[str, Path], tmp_path: Path, local_ray: None) -> None:
    from pipeline import runner
    from pipeline.config import JobConfig
    from pipeline.manifest import build_manifest

    summary = train_loop(_config(assets, "johnson", tmp_path / "ckpt", steps=2, checkpoint_every=2))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_photo(3)).save(photos / "a.png")
    build_manifest(str(photos), str(tmp_path / "m.parquet"))
    job = JobConfig(
        manifest=str(tmp_path / "m.parquet"),
        output=str(tmp_path / "job"),
        stylizer="johnson",
        weights=summary["checkpoint"],
        metrics=False,
        device="cpu",
        format="png",
    )
    result = runner.run(job)
    assert result["ok"] == 1 and result["failed"] == 0
    out = np.asarray(Image.open(next((tmp_path / "job" / "images").glob("*.png"))))
    assert out.shape == (48, 64, 3)
