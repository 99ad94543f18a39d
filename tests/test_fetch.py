"""Published weights one command away (issue 21): fetched from a test HTTP server posing as a mirror.

Every file is seeded weights in the publisher's layout, served from 127.0.0.1 by a server that counts
requests; the cache starts empty in each test and nothing reaches the internet.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import WeightsError
from pipeline.models import get_card
from pipeline.models.adain import build_decoder
from pipeline.models.animegan import Generator
from pipeline.models.cyclegan import ResnetGenerator
from pipeline.models.johnson import TransformerNet
from pipeline.models.sanet import Transform
from tests.helpers_ff import one_line, reference_vgg
from tests.pipeline_helpers import encode, photo

HTML = b"<!DOCTYPE html><html><body>Sorry, this link has expired.</body></html>"
runner = CliRunner()


def _pth(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _vgg(seed: int, layers: int) -> bytes:
    """pytorch-AdaIN's vgg_normalised layout, cut after ``layers`` modules (31: relu4_1, 44: relu5_1)."""
    torch.manual_seed(seed)
    return _pth({k: v for k, v in reference_vgg().state_dict().items() if int(k.split(".")[0]) < layers})


def adain_files() -> dict[str, bytes]:
    torch.manual_seed(1)
    return {"decoder.pth": _pth(build_decoder().state_dict()), "vgg_normalised.pth": _vgg(2, 31)}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def johnson_nets() -> dict[str, bytes]:
    nets = {}
    for seed, name in enumerate(("candy", "mosaic", "rain_princess", "udnie")):
        torch.manual_seed(seed)
        nets[f"saved_models/{name}.pth"] = _pth(TransformerNet().state_dict())
    return nets


def johnson_files() -> dict[str, bytes]:
    return {"saved_models.zip": _zip(johnson_nets())}


def cyclegan_files() -> dict[str, bytes]:
    files = {}
    for seed, name in enumerate(("style_monet", "style_cezanne", "style_ukiyoe", "style_vangogh")):
        torch.manual_seed(seed)
        files[f"{name}.pth"] = _pth(ResnetGenerator(ngf=8, n_blocks=2).state_dict())  # small, same layout
    return files


def animegan_files() -> dict[str, bytes]:
    files = {}
    for seed, name in enumerate(("paprika", "face_paint_512_v2", "face_paint_512_v1", "celeba_distill")):
        torch.manual_seed(seed)
        files[f"{name}.pt"] = _pth(Generator().state_dict())
    return files


@pytest.fixture
def server() -> Iterator[SimpleNamespace]:
    """An HTTP server on 127.0.0.1 serving ``files`` (name -> bytes) and counting GETs per name."""
    files: dict[str, bytes] = {}
    counts: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            name = self.path.lstrip("/")
            counts[name] += 1
            body = files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if body.startswith(b"<") else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/", files=files, counts=counts)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SimpleNamespace) -> Path:
    """An empty cache, fetching allowed, the test server as the mirror."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STYLIZE_CACHE", str(root))
    monkeypatch.delenv("STYLIZE_OFFLINE", raising=False)
    monkeypatch.setenv("STYLIZE_WEIGHTS_MIRROR", server.url)
    return root


@pytest.fixture
def pictures(tmp_path: Path) -> SimpleNamespace:
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    content.write_bytes(encode(photo((40, 32), seed=1)))
    style.write_bytes(encode(photo((32, 32), seed=2)))
    return SimpleNamespace(content=content, style=style, out=tmp_path / "out.png")


def _image(pictures: SimpleNamespace, stylizer: str, *extra: str):
    args = ["image", str(pictures.content), "-o", str(pictures.out), "--stylizer", stylizer, *extra]
    return runner.invoke(app, args)


CASES: dict[str, tuple[Callable[[], dict[str, bytes]], str, tuple[str, ...]]] = {
    # stylizer: (published files, the cached file to tamper with, `stylize image` options)
    "adain": (adain_files, "adain/decoder.pth", ("--style", "{style}")),
    "johnson": (johnson_files, "johnson/candy.pth", ("--weights", "candy")),
    "cyclegan": (cyclegan_files, "cyclegan/style_monet.pth", ()),
    "animegan": (animegan_files, "animegan/paprika.pt", ()),
}


@pytest.mark.parametrize("stylizer", list(CASES))
def test_fetch_then_use_offline_then_refuse_a_changed_file(
    stylizer: str, server: SimpleNamespace, cache: Path, pictures: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, tampered, options = CASES[stylizer]
    server.files.update(make())
    options = tuple(o.format(style=pictures.style) for o in options)

    fetched = runner.invoke(app, ["models", "fetch", stylizer])
    assert fetched.exit_code == 0, fetched.output
    assert server.counts == Counter(dict.fromkeys(server.files, 1))  # every published file, once
    assert "fetched" in fetched.output

    # no mirror, no network: the cache alone serves `stylize image` without --weights (johnson: by name)
    monkeypatch.delenv("STYLIZE_WEIGHTS_MIRROR")
    monkeypatch.setenv("STYLIZE_OFFLINE", "1")
    used = _image(pictures, stylizer, *options)
    assert used.exit_code == 0, used.output
    assert pictures.out.is_file()
    monkeypatch.setenv("STYLIZE_WEIGHTS_MIRROR", server.url)
    monkeypatch.delenv("STYLIZE_OFFLINE")

    again = runner.invoke(app, ["models", "fetch", stylizer])
    assert again.exit_code == 0 and "already here" in again.output and "fetched" not in again.output
    assert server.counts == Counter(dict.fromkeys(server.files, 1))  # a second fetch downloads nothing

    target = cache / tampered
    target.write_bytes(target.read_bytes() + b"\0")  # a file changed after its first download
    refused = _image(pictures, stylizer, *options)
    assert isinstance(refused.exception, WeightsError) and one_line(refused.exception)
    assert "changed since it was fetched" in str(refused.exception)
    repaired = runner.invoke(app, ["models", "fetch", stylizer])  # fetch replaces it
    assert repaired.exit_code == 0 and "fetched" in repaired.output
    assert _image(pictures, stylizer, *options).exit_code == 0


def test_first_use_fetches_the_default_network_only(
    server: SimpleNamespace, cache: Path, pictures: SimpleNamespace
) -> None:
    server.files.update(cyclegan_files())
    result = _image(pictures, "cyclegan")
    assert result.exit_code == 0, result.output
    assert server.counts == Counter({"style_monet.pth": 1})
    assert _image(pictures, "cyclegan", "--weights", "style_vangogh").exit_code == 0
    assert server.counts == Counter({"style_monet.pth": 1, "style_vangogh.pth": 1})
    unknown = _image(pictures, "cyclegan", "--weights", "style_picasso")
    assert isinstance(unknown.exception, WeightsError) and "known: style_monet" in str(unknown.exception)


def test_offline_keeps_the_one_line_error(server: SimpleNamespace, cache: Path, pictures: SimpleNamespace) -> None:
    server.files.update(johnson_files())
    result = runner.invoke(
        app, ["--offline", "image", str(pictures.content), "-o", str(pictures.out), "--stylizer", "johnson"]
    )
    assert isinstance(result.exception, WeightsError) and one_line(result.exception)
    assert "stylize models fetch johnson" in str(result.exception)
    assert not server.counts


def test_an_html_page_is_one_error_line_and_leaves_no_weights(
    server: SimpleNamespace, cache: Path, pictures: SimpleNamespace
) -> None:
    server.files.update(adain_files())
    server.files["decoder.pth"] = HTML  # what a dead link's host serves instead
    import os

    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "models", "fetch", "adain"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr
    assert "HTML page" in errors[0] and "decoder.pth" in errors[0]
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")], list(cache.rglob("*"))
    # and on first use the same refusal, as one line
    used = _image(pictures, "adain", "--style", str(pictures.style))
    assert isinstance(used.exception, WeightsError) and one_line(used.exception)
    assert not list(cache.rglob("*.pth"))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"saved_models.zip": johnson_files()["saved_models.zip"][:100_000]}, "not a complete zip"),
        (
            {"saved_models.zip": _zip({k: v for k, v in johnson_nets().items() if "udnie" not in k})},
            "lacks udnie.pth",
        ),
        (
            {"saved_models.zip": _zip({**johnson_nets(), "saved_models/mosaic.pth": b"x" * 1000})},
            "not a complete weights file",
        ),
    ],
    ids=["truncated", "member-missing", "member-broken"],
)
def test_a_bad_zip_is_refused_and_leaves_nothing(
    server: SimpleNamespace, cache: Path, files: dict[str, bytes], message: str
) -> None:
    server.files.update(files)
    result = runner.invoke(app, ["models", "fetch", "johnson"])
    assert isinstance(result.exception, WeightsError) and one_line(result.exception)
    assert message in str(result.exception)
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_a_truncated_file_and_a_missing_one_are_one_line(server: SimpleNamespace, cache: Path) -> None:
    files = animegan_files()
    server.files["paprika.pt"] = files["paprika.pt"][: len(files["paprika.pt"]) // 2]
    result = runner.invoke(app, ["models", "fetch", "animegan"])
    assert isinstance(result.exception, WeightsError) and one_line(result.exception)
    assert "paprika.pt" in str(result.exception) and "not a complete weights file" in str(result.exception)
    server.files["paprika.pt"] = files["paprika.pt"]
    result = runner.invoke(app, ["models", "fetch", "animegan"])  # face_paint_512_v2.pt is not served
    assert isinstance(result.exception, WeightsError) and "404" in str(result.exception)
    assert sorted(p.name for p in (cache / "animegan").glob("*.pt")) == ["paprika.pt"]


def sanet_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    torch.manual_seed(3)
    (folder / "decoder.pth").write_bytes(_pth(build_decoder().state_dict()))
    (folder / "transformer.pth").write_bytes(_pth(Transform().state_dict()))
    (folder / "vgg_normalised.pth").write_bytes(_vgg(4, 44))
    return folder


def test_sanet_is_manual_then_imported_then_ready(
    cache: Path, pictures: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STYLIZE_WEIGHTS_MIRROR")
    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") > 3}
    assert "manual" in rows["sanet"] and "stylize models import sanet DIR" in rows["sanet"]
    assert "fetchable" in rows["adain"] and "stylize models fetch adain" in rows["adain"] and "MB" in rows["adain"]
    assert "fetchable" in rows["johnson"] and "ready" in rows["dumoulin"]
    manual = runner.invoke(app, ["models", "fetch", "sanet"])
    assert isinstance(manual.exception, WeightsError) and "stylize models import sanet" in str(manual.exception)

    folder = sanet_folder(tmp_path / "downloads")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("decoder.pth", "vgg_normalised.pth"):
        (broken / name).write_bytes((folder / name).read_bytes())
    lacking = runner.invoke(app, ["models", "import", "sanet", str(broken)])
    assert isinstance(lacking.exception, WeightsError) and "lacks transformer.pth" in str(lacking.exception)
    (broken / "transformer.pth").write_bytes((folder / "decoder.pth").read_bytes())  # the wrong file
    wrong = runner.invoke(app, ["models", "import", "sanet", str(broken)])
    assert isinstance(wrong.exception, WeightsError) and one_line(wrong.exception)
    assert "do not fit" in str(wrong.exception)
    assert not (cache / "sanet").exists()

    imported = runner.invoke(app, ["models", "import", "sanet", str(folder)])
    assert imported.exit_code == 0, imported.output
    assert sorted(p.name for p in (cache / "sanet").glob("*.pth")) == [
        "decoder.pth",
        "transformer.pth",
        "vgg_normalised.pth",
    ]
    assert get_card("sanet").availability()[0]
    used = _image(pictures, "sanet", "--style", str(pictures.style))
    assert used.exit_code == 0, used.output


def test_fetch_to_stages_files_a_job_can_point_at(
    server: SimpleNamespace, cache: Path, pictures: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files.update(johnson_files())
    staged = tmp_path / "bucket" / "weights"
    result = runner.invoke(app, ["models", "fetch", "johnson", "--to", str(staged)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in staged.iterdir()) == ["candy.pth", "mosaic.pth", "rain_princess.pth", "udnie.pth"]
    # an air-gapped node: no mirror, no cache, only the staged prefix as a folder mirror
    monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path / "node-cache"))
    monkeypatch.setenv("STYLIZE_WEIGHTS_MIRROR", str(staged))
    used = _image(pictures, "johnson", "--weights", str(staged / "udnie.pth"))
    assert used.exit_code == 0, used.output


def test_fetch_needs_names_or_all_and_knows_the_names(cache: Path) -> None:
    assert runner.invoke(app, ["models", "fetch"]).exit_code != 0
    unknown = runner.invoke(app, ["models", "fetch", "nope"])
    assert unknown.exit_code != 0 and "unknown stylizer 'nope'" in str(unknown.exception)


def test_staged_in_object_storage_and_read_with_the_jobs_storage_options(
    server: SimpleNamespace, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.models import create
    from tests.s3server import create_bucket, s3_server

    server.files.update(adain_files())
    server.files.update(johnson_files())
    with s3_server(set_env=False) as endpoint:
        create_bucket(endpoint, "weights")
        monkeypatch.setenv("STYLIZE_S3_ENDPOINT", endpoint)  # what `fetch --to` reaches the store with
        for name, prefix in (("adain", "s3://weights/adain/"), ("johnson", "s3://weights/johnson/")):
            staged = runner.invoke(app, ["models", "fetch", name, "--to", prefix])
            assert staged.exit_code == 0, staged.output
        monkeypatch.delenv("STYLIZE_S3_ENDPOINT")
        # a node with an empty cache and no egress: only the job's storage options reach the store
        monkeypatch.setenv("STYLIZE_CACHE", str(tmp_path / "node"))
        monkeypatch.setenv("STYLIZE_OFFLINE", "1")
        options = {"endpoint_url": endpoint}
        assert create("johnson", weights="s3://weights/johnson/candy.pth", storage_options=options)
        model = create("adain", weights="s3://weights/adain", storage_options=options)
        assert model.encoder is not None and len(list((tmp_path / "node" / "remote").rglob("*.pth"))) == 3


def test_parallel_fetches_on_one_node_download_once_and_print_the_licence(server: SimpleNamespace, cache: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.models.fetch import fetch_file, published_files

    server.files.update(animegan_files())
    paprika = published_files(get_card("animegan"))[0]
    said: list[str] = []
    with ThreadPoolExecutor(4) as pool:  # four actors or CLI processes wanting the same file at once
        downloaded = list(pool.map(lambda _: fetch_file(paprika, say=said.append), range(4)))
    assert sorted(downloaded) == [False, False, False, True]
    assert server.counts == Counter({"paprika.pt": 1})
    assert sum("non-commercial" in line for line in said) == 1


def test_weights_digests_are_provenance_that_never_fails_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset records its weights' sha256 (the shard worker's samples, the runner's card); a digest
    that cannot be made is recorded as missing, never raised into a photo or a job."""
    import hashlib

    from pipeline.models import fetch

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    assert fetch.weights_digests("johnson", str(weights)) == {"w.pth": hashlib.sha256(b"weights").hexdigest()}
    assert fetch.weights_digests("no-such-stylizer", None) == {}

    def unreadable(path: Path) -> str:
        raise OSError(f"cannot read {path}")

    monkeypatch.setattr(fetch, "sha256_of", unreadable)
    assert fetch.weights_digests("johnson", str(weights)) == {}
