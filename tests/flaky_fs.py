"""A local filesystem under the test-only protocol ``flaky://`` whose writes fail on demand.

Registered with fsspec on import; Ray workers import it through ``STYLIZE_PLUGINS`` (the plugin hook of
``pipeline.raysession.import_plugins``), so faults reach the actors' own writes. A test writes
``$STYLIZE_FLAKY_DIR/faults.json``: ``{"match": "metrics/shard-00000", "fail": 2, "kind": "io"}`` makes the
first two writes of a path containing ``match`` fail (``io``: an ``OSError`` that ``Storage`` reports as a
plain, transient ``StorageError``; ``machine``: a ``MachineError``, a fault of the machine; ``die``: the
process exits at once). Every matching
write is counted in ``$STYLIZE_FLAKY_DIR/count`` (across processes: one shard writes at a time).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import MachineError

PROTOCOL = "flaky"
DIR_ENV = "STYLIZE_FLAKY_DIR"


def _fault(path: str) -> None:
    folder = os.environ.get(DIR_ENV)
    spec_file = Path(folder or "/nonexistent") / "faults.json"
    if not spec_file.exists():
        return
    spec = json.loads(spec_file.read_text())
    if spec["match"] not in path:
        return
    counter = spec_file.parent / "count"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= int(spec["fail"]):
        if spec.get("kind") == "die":  # the process dies (a segfault, an OOM kill) as it writes
            os._exit(9)
        if spec.get("kind") == "machine":
            raise MachineError(f"no space left on device writing {os.path.basename(path)} (injected)")
        raise OSError(errno.EIO, f"injected I/O error #{count}")


class FlakyFileSystem(LocalFileSystem):
    protocol = (PROTOCOL,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_mkdir", True)  # like an object store: a put needs no folder first
        super().__init__(*args, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        _fault(path)
        super().pipe_file(path, value, mode=mode, **kwargs)

    def put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        _fault(rpath)
        super().put_file(lpath, rpath, *args, **kwargs)


fsspec.register_implementation(PROTOCOL, FlakyFileSystem, clobber=True)


def write_faults(folder: Path, match: str, fail: int, kind: str = "io") -> None:
    """Arm the faults for the next run (and reset the counter)."""
    (folder / "count").unlink(missing_ok=True)
    (folder / "faults.json").write_text(json.dumps({"match": match, "fail": fail, "kind": kind}))


def writes(folder: Path) -> int:
    """Matching writes seen so far."""
    counter = folder / "count"
    return int(counter.read_text()) if counter.exists() else 0
