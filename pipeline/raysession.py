"""Connecting to Ray: the one place that starts or joins a Ray session and knows the repository root.

Batch jobs (``pipeline.runner``) and training (``pipeline.train.launch``) both come through here, so a
local run and a cluster run get the same code shipping, the same plugin modules and the same quiet
terminal: Ray's own log lines (start-up warnings, core-worker messages) go to its session log files,
never to the user's terminal.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

PLUGINS_ENV = "STYLIZE_PLUGINS"
PRELOAD = ("pipeline.shard",)  # what every actor imports first: the embedded Ray's workers import it while idle
# what a shipped working_dir leaves out: caches, local outputs, the virtualenv, and credential files
EXCLUDES = [
    ".venv",
    ".git",
    "stylize-demo",
    "**/__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    ".env",
    "*.pem",
    ".aws",
    ".netrc",
    ".import_linter_cache",
]


def import_plugins() -> None:
    """Import the modules named in ``$STYLIZE_PLUGINS`` (comma-separated) so their stylizers register."""
    for name in filter(None, (p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def repo_root() -> str:
    """The checkout this package runs from (what a cluster job ships as its working_dir)."""
    return str(Path(__file__).resolve().parent.parent)


def runtime_env(working_dir: str | None = None, env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """What a run on a cluster ships: this checkout less ``EXCLUDES``, ``$STYLIZE_PLUGINS`` and ``env_vars``.

    The one builder for both ways onto a cluster: ``ensure_ray`` joining an address, and a Ray Jobs
    submission (``pipeline.submit``).
    """
    # the cluster's Python already has the packages; a uv-managed driver must not make Ray rebuild them
    env = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    if os.environ.get(PLUGINS_ENV):
        env[PLUGINS_ENV] = os.environ[PLUGINS_ENV]
    env.update(env_vars or {})
    return {"working_dir": working_dir or repo_root(), "excludes": EXCLUDES, "env_vars": env}


def _quiet() -> None:
    # Ray prints these through Python logging/warnings on every start; they say nothing a user can act on
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "ray._private"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"ray(\..*)?")


def ensure_ray(address: str | None = None) -> bool:
    """Join ``address`` / ``$RAY_ADDRESS``, or start an embedded local Ray; True if started here.

    Inside ``ray job submit`` the job's runtime_env already ships this code, so nothing is added.
    The embedded Ray binds 127.0.0.1 and never attaches to a cluster a ``ray start`` left running.
    """
    import ray

    if ray.is_initialized():
        return False
    _quiet()
    address = address or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": False, "logging_level": logging.ERROR}
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        ray.init(address=address or None, **common)
    elif address:
        ray.init(address=address, runtime_env=runtime_env(), **common)
    else:
        _start_embedded(common)
    return True


def _start_embedded(common: dict[str, object]) -> None:
    """A local Ray whose prestarted workers have already imported the shard worker (torch and all) when
    the first actor asks for one: it then starts in about 0.1 s instead of 2 s.

    That needs an empty job runtime_env, since Ray gives an actor only an idle worker started with its
    own runtime_env, and prestarted workers have none. So this package reaches the workers through the
    environment the raylet inherits (``PYTHONPATH`` here, ``STYLIZE_PLUGINS`` as the caller set it).
    """
    import ray

    # Ray workers start in a session directory: make this package importable there too
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root(), before) if p)
    try:  # the raylet copies the environment when it starts; the driver's own is put back after
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _system_config={"preload_python_modules": list(PRELOAD)},
            **common,
        )
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    _Embedded.started = True


class _Embedded:
    started = False  # this process started an embedded Ray (its GCS and raylet are our children)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (Linux); empty where /proc is not there."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def exit_now(code: int) -> None:
    """End this process at once, with the Ray it started, if any: ``ray.shutdown`` waits for each process
    to stop gracefully (about 2 s here, a fifth of a small job), and the interpreter's teardown can abort
    in native thread pools (``pipeline.cli.main``). Call only once every output is written.

    An embedded Ray's processes (GCS, raylet, and the raylet's agents and workers) are this process's
    descendants and are killed outright: left to notice their parent's death, the raylet's agents
    linger for minutes. A driver connected to a cluster just leaves; without /proc (not Linux) this
    falls back to ``ray.shutdown``.
    """
    import logging
    import signal
    import sys

    logging.shutdown()  # flush and close the handlers the interpreter's teardown would have closed
    sys.stdout.flush()
    sys.stderr.flush()
    if _Embedded.started and Path("/proc/self").exists():
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(OSError):  # already gone
                os.kill(pid, signal.SIGKILL)
    elif _Embedded.started:
        import ray

        ray.shutdown()
    os._exit(code)
