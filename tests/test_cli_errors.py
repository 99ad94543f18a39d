"""No traceback reaches a user: bad invocations end in one ``error:`` line and a non-zero exit code.

Each case goes through ``pipeline.cli.run``, what the ``stylize`` script calls, in this process
(``capfd`` sees everything written to the terminal, by this process or any it starts); one case
runs the installed ``stylize`` script itself. ``stylize train``'s bad invocations are in test_train.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import INTERNAL_ERROR, run
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, photo, write_inputs, write_manifest

STYLIZE = Path(sys.executable).parent / "stylize"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real photo, a manifest of it, a text file posing as an image / manifest / config, an empty folder."""
    root = tmp_path_factory.mktemp("cli-errors")
    paths = write_inputs(root / "in", {"p0": encode(photo(seed=0))})
    (root / "notes.txt").write_text("not an image\n")
    (root / "fake.png").write_text("not an image either\n")
    (root / "fake.parquet").write_text("not parquet\n")
    (root / "bad.yaml").write_text("manifest: [unclosed\n")
    (root / "empty").mkdir()
    return {
        "root": str(root),
        "photo": str(paths["p0"]),
        "manifest": str(write_manifest(root / "m.parquet", list(paths.items()))),
        "text": str(root / "notes.txt"),
        "fake_png": str(root / "fake.png"),
        "fake_parquet": str(root / "fake.parquet"),
        "bad_yaml": str(root / "bad.yaml"),
        "empty": str(root / "empty"),
        "missing": str(root / "missing.png"),
        "out": str(root / "out"),
    }


@pytest.fixture(scope="module", autouse=True)
def _no_ray_left_behind():
    yield
    import ray

    ray.shutdown()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    monkeypatch.setenv("STYLIZE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("STYLIZE_DEBUG", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


UNREACHABLE = "http://127.0.0.1:1"

# (id, argv with {placeholders} from ``files``, a fragment the error line must hold: it names the cause)
CASES = [
    # stylize image
    ("image-missing-file", "image {missing} -o {out}/o.png", "not found"),
    ("image-not-an-image", "image {text} -o {out}/o.png", "not an image"),
    ("image-fake-png", "image {fake_png} -o {out}/o.png", "not an image"),
    ("image-negative-max-side", "image {photo} -o {out}/o.png --max-side -5", "--max-side"),
    ("image-alpha-out-of-range", "image {photo} -o {out}/o.png --alpha 2", "--alpha"),
    ("image-not-a-number", "image {photo} -o {out}/o.png --tile-pixels many", "--tile-pixels"),
    ("image-unknown-stylizer", "image {photo} -o {out}/o.png --stylizer nope", "unknown stylizer 'nope'"),
    ("image-unknown-option", "image {photo} -o {out}/o.png --bogus", "--bogus"),
    ("image-missing-argument", "image -o {out}/o.png", "content"),
    ("image-bad-output-suffix", "image {photo} -o {out}/o.txt", "--output"),
    ("image-style-index-out-of-range", "image {photo} -o {out}/o.png --stylizer dumoulin --style 99", "99"),
    ("image-missing-style-image", "image {photo} -o {out}/o.png --stylizer ghiasi --style {missing}", "not found"),
    ("image-style-not-an-image", "image {photo} -o {out}/o.png --stylizer ghiasi --style {text}", "not an image"),
    ("image-missing-weights", "image {photo} -o {out}/o.png --stylizer johnson --weights {root}/none.pth", "none.pth"),
    ("image-bad-preserve-color", "image {photo} -o {out}/o.png --preserve-color sepia", "sepia"),
    ("image-unknown-device", "image {photo} -o {out}/o.png --device tpu", "tpu"),
    # stylize run
    ("run-missing-config", "run {root}/none.yaml", "none.yaml"),
    ("run-broken-yaml", "run {bad_yaml}", "YAML"),
    ("run-missing-manifest", "run --manifest {root}/none.parquet --output {out}/r1", "not found"),
    ("run-manifest-not-parquet", "run --manifest {fake_parquet} --output {out}/r2", "fake.parquet"),
    ("run-unknown-stylizer", "run --manifest {manifest} --output {out}/r3 --stylizer nope", "unknown stylizer 'nope'"),
    ("run-bad-number", "run --manifest {manifest} --output {out}/r4 --set batch_size=-5", "batch_size"),
    ("run-unknown-key", "run --manifest {manifest} --output {out}/r5 --set nope=1", "nope"),
    ("run-no-manifest", "run --output {out}/r6", "manifest"),
    (
        "run-missing-style-image",
        "run --manifest {manifest} --output {out}/r7 --stylizer ghiasi --style {root}/no.jpg",
        "style image",
    ),
    (
        "run-style-not-an-image",
        "run --manifest {manifest} --output {out}/r8 --stylizer ghiasi --style {text}",
        "style image",
    ),
    # stylize manifest
    ("manifest-build-missing-folder", "manifest build {root}/nowhere --out {out}/m.parquet", "not found"),
    ("manifest-build-no-source", "manifest build --out {out}/m.parquet", "SRC"),
    ("manifest-inspect-missing", "manifest inspect {root}/none.parquet", "not found"),
    ("manifest-inspect-not-parquet", "manifest inspect {fake_parquet}", "fake.parquet"),
    ("manifest-inspect-an-image", "manifest inspect {photo}", "cannot read manifest"),
    # stylize submit
    ("submit-unreachable", "submit --manifest {manifest} --output {out}/s1 --address " + UNREACHABLE, "cannot reach"),
    ("submit-not-http", "submit --manifest {manifest} --output {out}/s2 --address 127.0.0.1:6379", "http://"),
    ("submit-missing-config", "submit {root}/none.yaml --address " + UNREACHABLE, "none.yaml"),
    (
        "submit-bad-number",
        "submit --manifest {manifest} --output {out}/s3 --set actors=0 --address " + UNREACHABLE,
        "actors",
    ),
    (
        "submit-secret",
        "submit --manifest {manifest} --output {out}/s4 --set storage_options.secret=x --address " + UNREACHABLE,
        "credential",
    ),
    # stylize report
    ("report-missing-output", "report {root}/no-such-output", "no-such-output"),
    ("report-not-an-output", "report {empty}", "metrics"),
    ("report-a-file", "report {text}", "notes.txt"),
    ("report-negative-sample", "report {empty} --sample -5", "--sample"),
    ("report-not-a-number", "report {empty} --worst lots", "--worst"),
]
# cases that fail in code this suite's owner does not own: (id -> reason), strict so a fix shows up
XFAIL: dict[str, str] = {}


def _argv(template: str, files: dict[str, str]) -> list[str]:
    return template.format(**files).split()


def _check(code: int, output: str, fragment: str = "") -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0, output
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error:"), output
    assert fragment in lines[-1], output


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        pytest.param(t, f, id=i, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[i])] if i in XFAIL else [])
        for i, t, f in CASES
    ],
)
def test_bad_invocation_is_one_error_line(template: str, fragment: str, files: dict[str, str], capfd) -> None:
    code = run(_argv(template, files))
    out, err = capfd.readouterr()
    _check(code, out + err, fragment)


def test_the_installed_script_reports_the_same_way(files: dict[str, str]) -> None:
    result = subprocess.run(
        [str(STYLIZE), "image", files["text"], "-o", f"{files['out']}/o.png"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STYLIZE_DEBUG": ""},
    )
    _check(result.returncode, result.stdout + result.stderr)
    assert result.returncode == 5  # DecodeError's code


@pytest.fixture
def buggy_image_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside a command: ``stylize image``'s reader raises a plain Python error."""

    def broken(path: str):
        raise RuntimeError("no such thing\nsecond line")

    monkeypatch.setattr("pipeline.codec.read_image", broken)  # what `stylize image` reads through


def test_a_bug_is_one_internal_error_line_with_a_log(
    buggy_image_command: None, files: dict[str, str], tmp_path: Path, capfd
) -> None:
    code = run(["image", files["photo"], "-o", f"{files['out']}/o.png"])
    out, err = capfd.readouterr()
    lines = (out + err).strip().splitlines()
    assert code == INTERNAL_ERROR and len(lines) == 1, lines
    assert lines[0].startswith("internal error: RuntimeError: no such thing second line (traceback written to ")
    log = Path(lines[0].rsplit("traceback written to ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "raise RuntimeError" in text and "stylize image" in text


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(
    how: str, buggy_image_command: None, files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["image", files["photo"], "-o", f"{files['out']}/o.png"]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("STYLIZE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="no such thing"):
        run(argv)


def test_debug_also_raises_stylize_errors(files: dict[str, str]) -> None:
    from pipeline.errors import DecodeError

    with pytest.raises(DecodeError):
        run(["--debug", "image", files["text"], "-o", f"{files['out']}/o.png"])


def test_a_good_invocation_exits_zero(files: dict[str, str], capfd) -> None:
    assert run(["models", "show", "dumoulin"]) == 0
    assert "dumoulin" in capfd.readouterr().out


def test_the_script_ends_without_the_interpreters_teardown(files: dict[str, str], tmp_path: Path) -> None:
    """``main`` ends the process at once once the command returned (pyarrow's thread pools could abort the
    teardown with exit 134 after the manifest was written): atexit handlers do not run, yet what the command
    printed and wrote is there, and the exit code is the command's."""
    out = tmp_path / "m.parquet"
    code = (
        "import atexit, sys; atexit.register(lambda: print('TEARDOWN', flush=True)); "
        "from pipeline.cli import main; sys.argv = ['stylize'] + sys.argv[1:]; main()"
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(photo(seed=1)))
    done = subprocess.run(
        [sys.executable, "-c", code, "manifest", "build", str(folder), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "TEARDOWN" not in done.stdout
    assert out.stat().st_size > 0
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "manifest",
            "build",
            files["empty"] + "-missing",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "error:" in (bad.stdout + bad.stderr) and "TEARDOWN" not in bad.stdout
