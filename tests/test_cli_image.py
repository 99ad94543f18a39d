"""`stylize image` and `stylize models list` through the real CLI entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.fixture
def content(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(path)
    return path


def _stylize(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console entry point (its one-line errors come from main(), not from Typer)."""
    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "image", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_image_keeps_size_and_writes_the_format(content: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = runner.invoke(
        app, ["image", str(content), "-o", str(out), "--stylizer", "dumoulin", "--style", "3:0.5,12:0.5"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (61, 45)


def test_masks_and_colour_preservation_from_the_cli(content: Path, tmp_path: Path) -> None:
    mask = tmp_path / "left.png"
    arr = np.zeros((45, 61), np.uint8)
    arr[:, :30] = 255
    Image.fromarray(arr).save(mask)
    out = tmp_path / "masked.jpg"
    args = ["image", str(content), "-o", str(out), "--stylizer", "dumoulin", "--style", "3"]
    result = runner.invoke(app, [*args, "--mask", str(mask), "--mask-style", "12", "--preserve-color", "luminance"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (61, 45)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.jpg", "-o", "x.jpg"], 5, "file not found"),
        (["{content}", "-o", "x.jpg", "--stylizer", "nope"], 2, "unknown stylizer 'nope'"),
        (["{content}", "-o", "x.jpg", "--stylizer", "dumoulin", "--style", "26"], 2, "0 to 25"),
        (["{content}", "-o", "x.jpg", "--stylizer", "adain", "--style", "{content}"], 3, "stylize train adain"),
        (["{content}", "-o", "x.jpg", "--mask", "{small}", "--mask-style", "3"], 2, "but the content is 61x45"),
        (["{content}", "-o", "x.gif"], 2, "--output must end in"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    content: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    small = tmp_path / "small.png"
    Image.new("L", (10, 10), 255).save(small)
    filled = [a.format(content=content, small=small) for a in args]
    filled = [str(tmp_path / a) if a.startswith("x.") else a for a in filled]
    result = _stylize(*filled)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_models_list_names_every_stylizer() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    for name in ("gatys", "johnson", "adain", "wct", "sanet", "ghiasi", "dumoulin"):
        assert name in result.output


def test_gallery_draws_one_family_sheet_without_the_controls(content: Path, tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    args = ["gallery", "--out", str(out), "--content", str(content), "--style", "3", "--stylizer", "dumoulin"]
    result = runner.invoke(app, [*args, "--max-side", "48", "--no-controls"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["dumoulin.jpg"]
    with Image.open(out / "dumoulin.jpg") as sheet:
        assert sheet.width > 5 * 48  # the photo and five built-in styles side by side
