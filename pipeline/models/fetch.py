"""Published weights, one command (or the first use) away: the one fetcher and the cache it fills.

Each published file is a ``WeightSource`` record with ``file`` set (``pipeline.models.registry``); it
lives in ``cache_dir()/<folder>/``. ``fetch_file`` downloads it under a per-file lock (several actors or
CLI processes on one node download once) into a hidden temporary name, checks it (a weights-only load
of every file; a zip's expected members; a published sha256 where there is one) and only then renames
it into place, with the digest it arrived with recorded beside it (``<file>.sha256``), which
``weights.load_state_dict`` checks on every later load. Anything else (an HTML error page, a truncated
file, a zip without the expected members) is one ``WeightsError`` line and leaves nothing under the
final name.

``STYLIZE_WEIGHTS_MIRROR`` (http(s), s3://, gs:// or a folder) serves every file as ``<mirror>/<file>``
instead of the publisher's URL; ``STYLIZE_OFFLINE=1`` turns first-use fetching off, so a missing file
is the family's own one-line error. ``create`` is ``registry.create`` with the weights located first
(and fetched on first use): ``stylize image``, ``stylize video`` and the batch actors all build models
through it, and a batch driver calls ``ensure_weights`` before Ray starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import StorageError, StylizeError, WeightsError
from pipeline.models.base import Stylizer
from pipeline.models.onnx_port import package_file
from pipeline.models.registry import ModelCard, WeightSource, get_card, list_models
from pipeline.models.registry import create as create_registered
from pipeline.models.torch7 import read_sequential
from pipeline.models.weights import (
    SAFE_SUFFIXES,
    SHA256_SUFFIX,
    cache_dir,
    load_state_dict,
    local_path,
    recorded_sha256,
    sha256_of,
    split_sha256,
)

OFFLINE_ENV = "STYLIZE_OFFLINE"
MIRROR_ENV = "STYLIZE_WEIGHTS_MIRROR"
CHUNK = 1 << 20

Say = Callable[[str], None]


# what is fetched from where, and licences to heed: the CLI passes its own ``say``; elsewhere (first use
# in a job) the log gets it, which without configuration still shows warnings on stderr
_log = logging.getLogger(__name__)
_say_default: Say = _log.warning


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def published_files(card: ModelCard) -> list[WeightSource]:
    """The card's records that are published files (``file`` set), in the card's order."""
    return [s for s in card.weight_sources if s.file]


def installed_paths(record: WeightSource) -> list[Path]:
    """Where ``record`` sits once fetched: its file, or a zip's members (by base name)."""
    folder = cache_dir() / record.folder
    return [folder / m for m in record.members] if record.members else [folder / record.file]


def is_installed(record: WeightSource, *, check_digest: bool = False) -> bool:
    """Every file of ``record`` is in the cache (and, with ``check_digest``, still has its recorded sha256)."""
    for path in installed_paths(record):
        if not path.is_file():
            return False
        recorded = recorded_sha256(path)
        if check_digest and recorded and sha256_of(path) != recorded:
            return False
    return True


def source_of(record: WeightSource) -> str:
    """``<mirror>/<file>`` when a mirror is set, else the publisher's URL; raises when there is neither."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{record.file}"
    if not record.url:
        raise WeightsError(f"{record.file} cannot be fetched by a plain download: {record.where}")
    return record.url


HTTP_TIMEOUT = 60.0  # seconds a connection or a read may stall before a download fails


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _download(source: str, dst: Path) -> None:
    """Copy ``source`` (http(s), an fsspec URI or a local path) to ``dst``, with a progress bar."""
    if source.startswith(("http://", "https://")):
        import socket

        from torch.hub import download_url_to_file

        # torch.hub opens the URL without a timeout: on a cluster whose egress is dropped silently the fetch
        # would wait forever, so each socket operation gets HTTP_TIMEOUT (the process-wide default, restored)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(HTTP_TIMEOUT)
        try:
            download_url_to_file(source, str(dst), progress=True)
        except Exception as exc:  # noqa: BLE001 - HTTP, DNS, TLS, timeouts, disk: one line each
            raise WeightsError(f"cannot fetch {source}: {_one_line(exc)}") from None
        finally:
            socket.setdefaulttimeout(previous)
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from pipeline.storage import open_fs

    try:
        fs, path = open_fs(source)
        size = fs.size(path)
        with (
            fs.open(path, "rb") as src,
            open(dst, "wb") as out,
            Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True) as bar,
        ):
            task = bar.add_task(Path(path).name, total=size)
            for chunk in iter(lambda: src.read(CHUNK), b""):
                out.write(chunk)
                bar.advance(task, len(chunk))
    except (OSError, StorageError) as exc:
        raise WeightsError(f"cannot fetch {source}: {_one_line(exc)}") from None


def _check_weights(path: Path, what: str) -> None:
    """``path`` loads as a weights-only state dict; an HTML page or a cut file is one line naming ``what``."""
    with open(path, "rb") as f:
        head = f.read(256).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise WeightsError(f"{what}: the server sent an HTML page, not weights")
    try:
        if path.suffix == ".t7":  # WCT's cascade files
            read_sequential(path)
        else:
            load_state_dict(str(path))
    except WeightsError as exc:
        raise WeightsError(f"{what}: not a complete weights file ({_one_line(exc).split(': ', 1)[-1]})") from None


def _write_digest(final: Path, digest: str) -> None:
    sidecar = final.with_name(final.name + SHA256_SUFFIX)
    part = sidecar.with_name(f".{sidecar.name}.partial")
    part.write_text(digest + "\n")
    part.replace(sidecar)


def _install(part: Path, final: Path) -> None:
    """Record ``part``'s digest beside ``final``, then rename it into place (the last step)."""
    _write_digest(final, sha256_of(part))
    part.replace(final)


def _partial(folder: Path, name: str) -> Path:
    # hidden, and with the real suffix so the weights-only loader reads it
    return folder / f".{Path(name).stem}.partial-{os.getpid()}{Path(name).suffix}"


def _unpack(record: WeightSource, archive: Path, folder: Path, what: str) -> None:
    """Check the zip holds every expected member (by base name), check each, then install them all."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = {PurePosixPath(n).name: n for n in zf.namelist() if not n.endswith("/")}
            missing = [m for m in record.members if m not in names]
            if missing:
                raise WeightsError(f"{what}: the zip lacks {', '.join(missing)}")
            parts = {}
            for member in record.members:
                part = _partial(folder, member)
                with zf.open(names[member]) as src, open(part, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                parts[member] = part
    except zipfile.BadZipFile:
        raise WeightsError(f"{what}: not a complete zip archive") from None
    try:
        for member, part in parts.items():
            _check_weights(part, f"{what} ({member})")
        for member, part in parts.items():
            _install(part, folder / member)
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)


def fetch_file(record: WeightSource, *, say: Say = _say_default) -> bool:
    """Put ``record`` into the cache unless it is there intact; True if it was downloaded.

    Under a lock per file, so parallel fetches on one node download once; the others wait and find it.
    """
    from filelock import FileLock

    folder = cache_dir() / record.folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{record.file}.lock")):
        if is_installed(record, check_digest=True):
            return False
        source = source_of(record)
        if record.non_commercial:
            say(f"note: {record.file} is published under a non-commercial licence: {record.licence}")
        say(f"fetching {record.file} from {source}")
        what = f"cannot fetch {record.file} from {source}"
        part = _partial(folder, record.file)
        try:
            _download(source, part)
            if record.sha256 and sha256_of(part) != record.sha256.lower():
                raise WeightsError(f"{what}: its sha256 is not the published {record.sha256}")
            if record.members:
                _unpack(record, part, folder, what)
            else:
                _check_weights(part, what)
                _install(part, folder / record.file)
        finally:
            part.unlink(missing_ok=True)
    return True


def fetch(name: str, *, say: Say = _say_default) -> list[tuple[WeightSource, bool]]:
    """Every published file of stylizer ``name``: (record, downloaded now?) each; raises ``WeightsError``."""
    card = get_card(name)
    files = published_files(card)
    if not files:
        raise WeightsError(f"{name} has no published files to fetch ({card.availability()[1]})")
    fetchable = [r for r in files if r.url or os.environ.get(MIRROR_ENV)]
    if not fetchable:
        raise WeightsError(manual_help(card))
    return [(record, fetch_file(record, say=say)) for record in fetchable]


def manual_files(card: ModelCard) -> list[WeightSource]:
    """The card's published files that a plain GET cannot fetch (downloaded by hand, then imported)."""
    return [r for r in published_files(card) if not r.url]


def manual_help(card: ModelCard) -> str:
    where = "; ".join(dict.fromkeys(r.where for r in manual_files(card)))
    return (
        f"{card.name}'s files cannot be fetched by a plain download: download them by hand ({where}) "
        f"and run `stylize models import {card.name} DIR`"
    )


def network_file(card: ModelCard, name: str) -> tuple[WeightSource, Path] | None:
    """The record and cache path of the published network ``name`` (``candy``), or None if it is not one."""
    for record in published_files(card):
        for file in record.members or (record.file,):
            if Path(file).stem == name:
                return record, cache_dir() / record.folder / file
    return None


def _is_network_name(weights: str) -> bool:
    return "/" not in weights and "\\" not in weights and "." not in weights and not Path(weights).exists()


def _copy_remote(card: ModelCard, uri: str, storage_options: dict[str, Any] | None) -> None:
    """Copy remote weights into the cache with the job's storage options, where the loaders then find them:
    one file, or the published files under a prefix (each one that is there: the loader names what is not)."""
    uri = split_sha256(uri)[0]
    if Path(uri).suffix in SAFE_SUFFIXES:
        local_path(uri, storage_options)
        return
    for record in published_files(card):
        for file in record.members or (record.file,):
            with contextlib.suppress(WeightsError):
                local_path(f"{uri.rstrip('/')}/{file}", storage_options)


def ensure_weights(
    name: str, weights: str | None, storage_options: dict[str, Any] | None = None, *, say: Say = _say_default
) -> str | None:
    """The ``weights`` to give stylizer ``name``'s factory, fetching published files on first use.

    Families that read a cache folder (adain, wct, sanet) get ``None`` back once their files are in
    place; one-network-per-file families (johnson, the GANs) get the cache path of the network
    ``weights`` names (``candy``), or of their default network without ``weights``. Anything else
    (a path, a URI, a safetensors file) is returned as given; a remote URI is first copied into the
    cache with ``storage_options``. Offline, nothing is fetched from publishers or mirrors.
    """
    card = get_card(name)
    if weights is not None and "://" in weights and not weights.startswith("file://"):
        _copy_remote(card, weights, storage_options)
        return weights
    if card.default_network:
        net = weights if weights is not None and _is_network_name(weights) else None
        found = network_file(card, net or card.default_network) if weights is None or net else None
        if found is None:
            if net is not None:
                known = ", ".join(Path(f).stem for r in published_files(card) for f in r.members or (r.file,))
                raise WeightsError(f"{name} has no published network {net!r}; known: {known}")
            return weights
        record, path = found
        if not path.is_file() and not offline():
            fetch_file(record, say=say)
        if path.is_file():
            return str(path)
        if weights is None:
            return None  # the family's own one-line help
        raise WeightsError(f"{name} network {net!r} is not fetched ({path} is missing; {OFFLINE_ENV} is set)")
    if weights is None and not offline():
        for record in published_files(card):
            if is_installed(record):
                continue
            if record.url:
                fetch_file(record, say=say)
            elif os.environ.get(MIRROR_ENV):
                # files published only by hand may or may not be on the mirror: the loader says what is missing
                with contextlib.suppress(WeightsError):
                    fetch_file(record, say=say)
    return weights


def create(name: str, **kwargs: Any) -> Stylizer:
    """``registry.create`` with published weights located, and fetched on first use (``ensure_weights``).

    ``storage_options`` (a job's) are used to read remote ``weights``.
    """
    given = kwargs.get("weights")
    storage_options = kwargs.pop("storage_options", None)  # for remote weights; the factories never see them
    weights = ensure_weights(name, None if given is None else str(given), storage_options)
    if weights is not None or "weights" in kwargs:
        kwargs["weights"] = weights
    return create_registered(name, **kwargs)


def stage(name: str, to: str, storage_options: dict[str, Any] | None = None, *, say: Say = _say_default) -> list[str]:
    """Fetch ``name``'s files into the cache and copy them to ``to`` (``s3://bucket/weights/``); the URIs written.

    A job's ``weights`` may then name that prefix (adain, wct, sanet) or one file in it (johnson, the GANs).
    """
    from pipeline.storage import open_fs

    fetch(name, say=say)
    fs, root = open_fs(to, storage_options)
    fs.makedirs(root, exist_ok=True)  # a local folder needs it; object stores have no folders to make
    written = []
    for record in published_files(get_card(name)):
        for path in installed_paths(record):
            target = f"{root.rstrip('/')}/{path.name}"
            try:
                fs.put_file(str(path), target)
            except OSError as exc:
                raise WeightsError(f"cannot stage {path.name} at {to}: {_one_line(exc)}") from None
            written.append(f"{to.rstrip('/')}/{path.name}")
    return written


def import_files(name: str, directory: Path) -> list[Path]:
    """Check hand-downloaded files of ``name`` in ``directory`` (layout, keys) and install them into the cache."""
    card = get_card(name)
    files = manual_files(card) or published_files(card)  # wct: its Torch7 cascade files, not the AdaIN ones
    if not files:
        raise WeightsError(f"{name} has no published files to import")
    expected = [m for r in files for m in (r.members or (r.file,))]
    if not directory.is_dir():
        raise WeightsError(f"{directory} is not a directory; expected one with {', '.join(expected)}")
    missing = [f for f in expected if not (directory / f).is_file()]
    if missing:
        raise WeightsError(f"{directory} lacks {', '.join(missing)} (expected {', '.join(expected)})")
    # the family's own loader checks the layout and every key, strictly
    if card.default_network:
        for file in expected:
            card.factory(weights=str(directory / file))
    else:
        card.factory(weights=str(directory))
    installed = []
    for record in files:
        folder = cache_dir() / record.folder
        folder.mkdir(parents=True, exist_ok=True)
        for file in record.members or (record.file,):
            part = _partial(folder, file)
            try:
                shutil.copyfile(directory / file, part)
                _install(part, folder / file)
            finally:
                part.unlink(missing_ok=True)
            installed.append(folder / file)
    return installed


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def status(card: ModelCard) -> tuple[str, str]:
    """(``ready`` | ``fetchable`` | ``manual`` | ``missing``, where it is or how to get it) for one stylizer."""
    ok, where = card.availability()
    if ok:
        return "ready", where
    files = [r for r in published_files(card) if not is_installed(r)]
    if not files:
        return "missing", where
    fetchable = [r for r in files if r.url or os.environ.get(MIRROR_ENV)]
    if fetchable:
        return "fetchable", f"`stylize models fetch {card.name}` ({_mb(sum(r.size for r in fetchable))})"
    size = _mb(sum(r.size for r in files))
    return (
        "manual",
        f"download by hand (`stylize models show {card.name}`), then `stylize models import {card.name} DIR` ({size})",
    )


def fetchable_names() -> list[str]:
    """The stylizers ``stylize models fetch --all`` fetches: those with published files."""
    return [card.name for card in list_models() if published_files(card)]


def weights_digests(name: str, weights: str | None, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """``{file name: sha256}`` of the weight files stylizer ``name`` loads with ``weights`` (a dataset records
    them, so it says which weights made it): a given file, else the published files in the cache (or in the
    folder ``weights`` names). A fetched file's digest is the one recorded beside it (no second read of a
    large file); others are hashed. Empty when the model has no file (built in, or a test double), and
    when they cannot be read: provenance is recorded as missing, never a reason to fail a photo or a job."""
    try:
        return _weights_digests(name, weights, storage_options)
    except (StylizeError, OSError):
        return {}


def _weights_digests(name: str, weights: str | None, storage_options: dict[str, Any] | None) -> dict[str, str]:
    card = get_card(name)
    published = [Path(f).name for r in published_files(card) for f in (r.members or (r.file,))]
    if card.default_network and (weights is None or _is_network_name(weights)):  # nothing fetched here
        found = network_file(card, weights or card.default_network)
        paths = [found[1]] if found else []
    elif weights is None:
        paths = [p for r in published_files(card) for p in installed_paths(r)]
        for record in card.weight_sources:  # files a package ships (the ONNX ports): the record names the file
            if not record.file and record.name.endswith(".onnx"):
                with contextlib.suppress(WeightsError):
                    paths.append(package_file(record.name))
    else:
        path = local_path(split_sha256(weights)[0], storage_options)
        paths = [path / f for f in published] if path.is_dir() else [path]
    return {p.name: recorded_sha256(p) or sha256_of(p) for p in paths if p.is_file()}


def combined_sha256(digests: dict[str, str]) -> str | None:
    """One digest for a model's weights: its file's sha256, or (several files) the sha256 of the sorted
    ``name sha256`` lines; None without files."""
    if len(digests) <= 1:
        return next(iter(digests.values()), None)
    lines = "".join(f"{n} {d}\n" for n, d in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()
