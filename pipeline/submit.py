"""Submitting batch and training jobs to a Ray cluster through the Ray Jobs API (the dashboard, port 8265).

A batch job runs ``python -m jobs.run_job --config-b64 ...`` and training (``stylize train --submit``)
``python -m jobs.train_job --config-b64 ...``, both through ``submit``, with this repository as their
``working_dir``. A job's submission id is derived from the config, so submitting the same config
twice names the same job instead of starting a second copy writing to the same output.

No credentials travel with a job. Anyone who can open the dashboard or run ``ray job list``
reads a job's entrypoint, metadata and runtime_env, so ``submit_entrypoint`` (batch jobs and
``stylize train --submit`` alike) refuses a job whose config holds a credential-like key
(``config.SECRET_KEY``: key, secret, token, password, credential) or a URI with a password in it,
before anything is sent. The cluster brings its own credentials (``CREDENTIALS_HELP``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from pipeline import raysession
from pipeline.config import SECRET_KEY
from pipeline.errors import ConfigError, JobError

JobKind = Literal["run", "train"]
JOB_MODULES: dict[str, str] = {"run": "jobs.run_job", "train": "jobs.train_job"}  # what each kind of job runs
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PAYLOAD_FLAG = "--config-b64"
CREDENTIALS_HELP = (
    "give the cluster its own credentials instead: environment variables on the Ray nodes "
    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS), an instance role or workload "
    "identity, or a Kubernetes secret in the pods' envFrom (configs/rayjob.yaml)"
)
# gcsfs's ``token`` also takes these mode names, which say where to find credentials, not what they are
TOKEN_MODES = frozenset({"anon", "google_default", "cloud", "cache", "browser"})
# scheme://user:password@host: a password inside a URI
_URI_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def config_json(config: Any) -> str:
    """Canonical JSON of a JobConfig (sorted keys), the input of the submission id."""
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def submission_id(config: Any, kind: JobKind = "run") -> str:
    # a batch job's id has no kind in it, as before there were two kinds: a resubmission names the same job
    prefix = "stylize-" if kind == "run" else f"stylize-{kind}-"
    return prefix + hashlib.sha256(config_json(config).encode()).hexdigest()[:16]


def encode_payload(data: Any) -> str:
    """A JSON-able config as the urlsafe base64 that follows ``--config-b64``."""
    text = data if isinstance(data, str) else json.dumps(data, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def entrypoint(config: Any, python: str = "python", kind: JobKind = "run") -> str:
    return f"{python} -m {JOB_MODULES[kind]} {PAYLOAD_FLAG} {encode_payload(config_json(config))}"


def credentials_in(data: Any, path: str = "") -> list[str]:
    """Dotted paths in ``data`` (dicts, lists, strings) that hold a credential: a non-empty value under a
    credential-like key (``config.SECRET_KEY``), or a URI with a ``user:password@`` part."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            mode = isinstance(value, str) and value in TOKEN_MODES
            if SECRET_KEY.search(str(key)) and value not in (None, "", {}, []) and not mode:
                found.append(where)
            else:
                found += credentials_in(value, where)
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found += credentials_in(value, f"{path}[{i}]")
    elif isinstance(data, str) and _URI_PASSWORD.search(data):
        found.append(path or "a URI")
    return found


def _payloads(command: str) -> list[Any]:
    """The configs a job command carries after ``--config-b64`` (undecodable ones are returned as text)."""
    words = command.split()
    out: list[Any] = []
    for flag, value in zip(words, words[1:], strict=False):
        if flag == PAYLOAD_FLAG:
            try:
                out.append(json.loads(base64.urlsafe_b64decode(value.encode())))
            except ValueError:
                out.append(value)
    return out


def refuse_credentials(command: str, metadata: dict[str, str], env_vars: dict[str, str]) -> None:
    """``ConfigError`` (one line, saying what to do instead) if the job would carry a credential."""
    found = [p for payload in _payloads(command) for p in credentials_in(payload)]
    found += [f"entrypoint {p}" for p in credentials_in(command, "")]
    found += [f"metadata.{p}" for p in credentials_in(metadata)]
    found += [f"env_vars.{p}" for p in credentials_in(env_vars)]
    if found:
        raise ConfigError(
            f"refusing to submit: {', '.join(found)} looks like a credential, and a job's config, metadata and "
            f"environment are readable by anyone with dashboard access; remove it and {CREDENTIALS_HELP}"
        )


def _token_auth_if_available() -> None:
    """Send the Ray auth token when one exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN[_PATH]``).

    Ray 2.60 clusters enable token auth by default, but its client sends the token only in token
    mode; this switches this process to token mode when a token is there and no mode was chosen.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray release: leave authentication to the user's environment
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def client(address: str | None = None) -> Any:
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if not address.startswith(("http://", "https://")):
        # RAY_ADDRESS may be a GCS address (ray://, host:6379); the Jobs API speaks HTTP
        raise JobError(f"the Ray Jobs API needs the dashboard's http://HOST:8265 address, got {address!r}")
    _token_auth_if_available()
    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, version mismatch...
        raise JobError(f"cannot reach the Ray dashboard at {address}: {exc}") from exc


def submit_entrypoint(
    command: str,
    job_id: str,
    *,
    address: str | None = None,
    working_dir: str | None = None,
    env_vars: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[str, bool]:
    """Submit ``command`` as job ``job_id``; (id, True if newly submitted / False if it already existed).

    The id is deterministic (derived from the config), so submitting the same job twice is a no-op.
    A job that would carry a credential is refused before the cluster is contacted (module doc).
    """
    env = raysession.runtime_env(working_dir, env_vars)
    meta = {"tool": "stylize", **(metadata or {})}
    refuse_credentials(command, meta, env["env_vars"])
    jobs = client(address)
    try:
        jobs.submit_job(entrypoint=command, submission_id=job_id, runtime_env=env, metadata=meta)
    except Exception as exc:  # noqa: BLE001
        if "already exists" in str(exc) or "already been used" in str(exc):
            return job_id, False
        raise JobError(f"submitting {job_id} failed: {exc}") from exc
    return job_id, True


def submit(
    config: Any,
    *,
    kind: JobKind = "run",
    address: str | None = None,
    python: str = "python",
    working_dir: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> tuple[str, bool]:
    """Submit a batch job's JobConfig (``kind="run"``) or a TrainConfig (``kind="train"``);
    returns (submission id, newly submitted?)."""
    return submit_entrypoint(
        entrypoint(config, python, kind),
        submission_id(config, kind),
        address=address,
        working_dir=working_dir,
        env_vars=env_vars,
        metadata={"kind": kind, "output": str(getattr(config, "output", ""))},
    )


def _call(fn: Callable[..., Any], job_id: str, what: str) -> Any:
    try:
        return fn(job_id)
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"cannot {what} job {job_id}: {exc}") from exc


def status(job_id: str, address: str | None = None) -> str:
    return str(_call(client(address).get_job_status, job_id, "get the status of")).rsplit(".", 1)[-1]


def info(job_id: str, address: str | None = None) -> dict[str, Any]:
    details = _call(client(address).get_job_info, job_id, "describe")
    return {
        "submission_id": job_id,
        "status": str(details.status).rsplit(".", 1)[-1],
        "message": details.message,
        "entrypoint": details.entrypoint,
        "start_time": details.start_time,
        "end_time": details.end_time,
    }


def logs(job_id: str, address: str | None = None) -> str:
    return str(_call(client(address).get_job_logs, job_id, "read the logs of"))


def stop(job_id: str, address: str | None = None) -> bool:
    return bool(_call(client(address).stop_job, job_id, "stop"))


def wait(job_id: str, address: str | None = None, *, timeout: float | None = None, poll: float = 2.0) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; returns that status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = status(job_id, address)
        if state in TERMINAL:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {state} after {timeout:.0f}s")
        time.sleep(poll)
