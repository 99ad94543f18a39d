"""CycleGAN training on the shared trainer machinery: the cycle loss falls, a checkpoint stylizes and exports in
the reference code's layout, a rerun resumes with the step count continuing, and the recipe's pieces hold.

Everything is tiny and hermetic: generated 40x48 photos and striped "paintings", 32 px crops, 8-wide
generators with 2 blocks, in this process (``train_loop``, no Ray).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.errors import ConfigError, WeightsError
from pipeline.models import Style, create
from pipeline.models.weights import read_metadata
from pipeline.train.config import TrainConfig
from pipeline.train.cyclegan import CycleGANTask, ImagePool, NLayerDiscriminator, export_generator, frozen
from pipeline.train.loop import train_loop
from pipeline.train.plots import window_means
from pipeline.train.store import CheckpointStore


def _photo(i: int, h: int = 40, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * (i + 2) * 3) % 256, (y * 5 + i * 40) % 256, ((x + y) * (i + 1)) % 256], -1)
    return img.astype(np.uint8)


def _painting(i: int, size: int = 40) -> np.ndarray:
    img = np.full((size, size, 3), (230, 200, 90), np.uint8)
    img[:, :: 4 + i] = (200, 40, 40)
    img[:: 5 + i] = (30, 40, 160)
    return img


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cyclegan-data")
    photos, paintings = [], []
    for i in range(4):
        Image.fromarray(_photo(i)).save(root / f"photo{i}.png")
        photos.append(str(root / f"photo{i}.png"))
    for i in range(3):
        Image.fromarray(_painting(i)).save(root / f"painting{i}.png")
        paintings.append(str(root / f"painting{i}.png"))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "content.txt").write_text("\n".join([*photos, str(root / "corrupt.jpg")]) + "\n")
    (root / "style.txt").write_text("\n".join([*paintings, str(root / "missing.png")]) + "\n")
    threads = torch.get_num_threads()  # the runs set 1 (cpus_per_worker); restored afterwards
    yield {"root": root, "content": root / "content.txt", "style": root / "style.txt", "photo": root / "photo0.png"}
    torch.set_num_threads(threads)


def _config(data: dict[str, Path], output: Path, **kw) -> dict:
    return {
        "stylizer": "cyclegan",
        "content_manifest": str(data["content"]),
        "style_manifest": str(data["style"]),
        "output": str(output),
        "image_size": 32,
        "resize_to": 36,
        "ngf": 8,
        "n_blocks": 2,
        "lr": 1e-3,
        "device": "cpu",
        "cpus_per_worker": 1,
        "samples": 2,
        **kw,
    }


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """120 steps in one go (the loss test), then the same output resumed from 60 to 80 in a second run."""
    out = tmp_path_factory.mktemp("cyclegan-run")
    summary = train_loop(_config(data, out / "full", steps=120, checkpoint_every=60))
    first = train_loop(_config(data, out / "resumed", steps=60, checkpoint_every=30))
    notes: list[str] = []
    second = train_loop(_config(data, out / "resumed", steps=80, checkpoint_every=30), note=notes.append)
    return {"out": out, "summary": summary, "first": first, "second": second, "notes": notes}


def test_training_lowers_the_cycle_loss_and_skips_bad_rows(trained: dict) -> None:
    store = CheckpointStore(str(trained["out"] / "full"), "cyclegan")
    rows = store.loss_rows()
    assert [int(r["step"]) for r in rows] == list(range(1, 121))
    assert {"gan", "cycle", "identity", "D", "total", "lr"} <= set(rows[0])
    early, late = window_means([r["cycle"] for r in rows], 20)
    assert late < 0.75 * early, (early, late)  # measured: 0.61 of the first window (seeds 0-2: 0.61-0.65)
    summary = trained["summary"]
    assert summary["skipped_content"] == 1 and summary["skipped_style"] == 1
    # the paper's schedule: constant for half the steps, then linear towards zero
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == lrs[59] == pytest.approx(1e-3) and lrs[60] < lrs[59]
    assert lrs[-1] == pytest.approx(1e-3 / 61, rel=1e-5)  # the CSV keeps 6 digits
    for name in ("loss_curve.png", "losses.csv", "samples/step00000060.png", "cyclegan.safetensors"):
        assert (trained["out"] / "full" / name).exists(), name


def test_the_checkpoint_stylizes_and_exports_in_the_reference_layout(trained: dict, data: dict, tmp_path: Path) -> None:
    ckpt = trained["summary"]["checkpoint"]
    meta = read_metadata(ckpt)
    assert meta["stylizer"] == "cyclegan" and meta["step"] == "120" and meta["ngf"] == "8"
    model = create("cyclegan", weights=ckpt)
    photo = torch.from_numpy(_photo(1)).permute(2, 0, 1)[None].float() / 255
    out = model(photo, [Style()])
    assert out.shape == photo.shape and out.min().item() >= 0 and out.max().item() <= 1
    assert (out - photo).abs().mean().item() > 0.01  # it changed the photo

    exported = export_generator(ckpt)
    assert next(iter(exported)) == "model.1.weight" and "model.10.conv_block.5.weight" in exported
    torch.save(exported, tmp_path / "latest_net_G_A.pth")
    again = create("cyclegan", weights=str(tmp_path / "latest_net_G_A.pth"))(photo, [Style()])
    assert (again - out).abs().max().item() == 0
    back = export_generator(ckpt, "B")
    assert not torch.equal(back["model.1.weight"], exported["model.1.weight"])
    with pytest.raises(WeightsError, match="not a `stylize train cyclegan` checkpoint"):
        export_generator(str(data["photo"]))


def test_a_rerun_resumes_with_the_step_count_continuing(trained: dict) -> None:
    assert trained["first"]["step"] == 60 and trained["second"]["step"] == 80
    assert any("resuming cyclegan from step 60" in n for n in trained["notes"])
    store = CheckpointStore(str(trained["out"] / "resumed"), "cyclegan")
    assert store.steps() == [30, 60, 80]
    assert [int(r["step"]) for r in store.loss_rows()] == list(range(1, 81))
    # the discriminators travel with the checkpoint, so a resumed run continues the game
    saved = store.latest()
    assert saved is not None and any(k.startswith("D_A.model.") for k in saved.model)


def test_recipe_pieces() -> None:
    resolved = TrainConfig(stylizer="cyclegan", content_manifest="a.txt", style_manifest="b.txt", output="o").resolved()
    assert (resolved.lr, resolved.batch_size, resolved.cycle_weight, resolved.identity_weight) == (2e-4, 1, 10.0, 0.5)
    assert (resolved.ngf, resolved.n_blocks, resolved.resize_to) == (64, 9, 286)  # load 286, crop 256
    assert CycleGANTask.adam_betas == (0.5, 0.999) and CycleGANTask.random_flip and not CycleGANTask.needs_encoder
    with pytest.raises(ConfigError, match="style-manifest"):
        TrainConfig(stylizer="cyclegan", content_manifest="a.txt", output="o").resolved()

    # the 70x70 PatchGAN: one score per 70 px patch (its receptive field), 30x30 of them on a 256 px crop
    d = NLayerDiscriminator(8)
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    field = 1
    for conv in reversed([m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]):
        field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
    assert field == 70

    # the generator loss reaches the fakes through the discriminator, never the discriminator's weights
    fake = torch.randn(1, 3, 32, 32, requires_grad=True)
    frozen(d, fake).pow(2).mean().backward()
    assert fake.grad is not None and all(p.grad is None for p in d.parameters())

    pool = ImagePool(3, seed=0)
    batches = [torch.full((1, 3, 2, 2), float(i)) for i in range(40)]
    assert [float(pool.query(b)[0, 0, 0, 0]) for b in batches[:3]] == [0, 1, 2]  # filling: what comes in
    returned = [float(pool.query(b)[0, 0, 0, 0]) for b in batches[3:]]
    old = sum(r != i + 3 for i, r in enumerate(returned))
    assert 8 < old < 30  # about half the time an older fake from the pool


def test_the_cli_trains_and_exports(data: dict, tmp_path: Path) -> None:
    from pipeline.cli import app

    runner = CliRunner()
    args = ["train", "cyclegan", "--content-manifest", str(data["content"]), "--style-manifest", str(data["style"])]
    args += ["--output", str(tmp_path / "run"), "--steps", "4", "--image-size", "32", "--ngf", "4", "--n-blocks", "1"]
    result = runner.invoke(app, [*args, "--workers", "0", "--device", "cpu", "--cpus-per-worker", "1"])
    assert result.exit_code == 0, result.output
    assert "trained cyclegan to step 4" in result.output
    pth = tmp_path / "latest_net_G_A.pth"
    result = runner.invoke(app, ["train", "export", str(tmp_path / "run" / "cyclegan.safetensors"), "-o", str(pth)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.png"
    result = runner.invoke(
        app, ["image", str(data["photo"]), "-o", str(out), "--stylizer", "cyclegan", "--weights", str(pth)]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (48, 40)
