"""`stylize train` as a user meets it: run as a real process, the way a terminal or a log file sees it.

A successful run on Ray Train (the default ``--workers 1``) prints no traceback, no escape codes
and no line twice. Bad invocations end in one ``error:`` line and a non-zero exit, before Ray starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.models import vgg, vgg_layout

CLI = "import sys; from pipeline.cli import main; sys.argv[0] = 'stylize'; main()"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-cli")
    torch.manual_seed(0)
    enc = vgg.VGGEncoder("vgg16", last="relu5_1")
    enc.set_input_convention(*vgg_layout.caffe_affine())
    save_file(vgg.to_state_dict(enc), str(root / "vgg16.safetensors"))
    rng = np.random.default_rng(0)
    photos = []
    for i in range(2):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(root / f"photo{i}.png")
        photos.append(str(root / f"photo{i}.png"))
    (root / "content.txt").write_text("\n".join(photos) + "\n")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "style.png")
    (root / "style.txt").write_text("not an image\n")
    return {
        "root": root,
        "vgg": root / "vgg16.safetensors",
        "content": root / "content.txt",
        "style": root / "style.png",
        "text": root / "style.txt",
    }


def stylize(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a process; stdout and stderr together, as a terminal shows them."""
    env = {**os.environ, "STYLIZE_CACHE": str(cwd / "cache"), "COLUMNS": "100"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def johnson(files: dict[str, Path], output: Path, *extra: str, **change: str) -> list[str]:
    options = {
        "--style": str(files["style"]),
        "--content-manifest": str(files["content"]),
        "--output": str(output),
        "--encoder-weights": str(files["vgg"]),
        "--steps": "3",
        "--batch-size": "1",
        "--image-size": "32",
        "--checkpoint-every": "2",
        "--log-every": "1",
        "--device": "cpu",
        "--cpus-per-worker": "1",
        **change,
    }
    return ["train", "johnson", *[x for kv in options.items() for x in kv], *extra]


@pytest.mark.slow
def test_a_successful_run_is_quiet(files: dict[str, Path], tmp_path: Path) -> None:
    """On Ray Train, with relative paths (its workers start in another directory): progress lines, a summary."""
    shutil.copy(files["content"], tmp_path / "content.txt")
    shutil.copy(files["style"], tmp_path / "style.png")
    args = johnson(files, Path("out"), **{"--content-manifest": "content.txt", "--style": "style.png"})
    result = stylize(*args, cwd=tmp_path)
    text = result.stdout
    assert result.returncode == 0, text
    assert "Traceback" not in text and "\x1b[" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), f"duplicated lines:\n{text}"
    steps = [line for line in lines if line.startswith("[johnson] step ")]
    assert [line.split()[2] for line in steps] == ["1/3", "2/3", "3/3"], text
    assert lines[-2].startswith("trained johnson to step 3 in ") and lines[-2].endswith("johnson.safetensors")
    assert lines[-1].startswith("last losses: total=")
    assert (tmp_path / "out" / "johnson.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--content-manifest": "missing.parquet"}, "missing.parquet"),
        ({"--lr": "-1"}, "invalid train config: lr: "),
        ({"--style": "nowhere.jpg"}, "nowhere.jpg"),
        ({"--style": "TEXT"}, "style.txt"),
        ({"--encoder-weights": "no-such-vgg.safetensors"}, "encoder weights not found"),
        ({"--device": "tpu"}, "device"),
    ],
)
def test_bad_invocations_are_one_error_line(
    files: dict[str, Path], tmp_path: Path, change: dict[str, str], message: str
) -> None:
    change = {k: str(files["text"]) if v == "TEXT" else v for k, v in change.items()}
    result = stylize(*johnson(files, tmp_path / "out", **change), cwd=tmp_path, timeout=120)
    text = result.stdout
    lines = [line for line in text.splitlines() if line.strip()]
    assert result.returncode != 0, text
    assert lines and lines[-1].startswith("error: ") and message in lines[-1], text
    assert "Traceback" not in text and "\x1b[" not in text, text
    assert not (tmp_path / "out" / "_ray").exists()  # refused before Ray started
