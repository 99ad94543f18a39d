"""The Ray Jobs API client: deterministic ids, the entrypoint round trip, and a real local cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jobs.run_job import parse_config
from pipeline import raysession, submit
from pipeline.cli import app
from pipeline.cli import run as cli_run
from pipeline.config import JobConfig
from pipeline.errors import ConfigError, JobError
from tests.pipeline_fakes import PLUGIN
from tests.pipeline_helpers import encode, photo, write_inputs, write_manifest

REPO = Path(__file__).resolve().parent.parent


def test_submission_id_is_derived_from_the_config() -> None:
    a = JobConfig(manifest="m.parquet", output="out", style="3")
    b = JobConfig(manifest="m.parquet", output="out", style="3")
    c = JobConfig(manifest="m.parquet", output="out", style="4")
    assert submit.submission_id(a) == submit.submission_id(b) != submit.submission_id(c)
    assert submit.submission_id(a).startswith("stylize-")


def test_entrypoint_round_trips_the_config() -> None:
    config = JobConfig(manifest="s3://b/m.parquet", output="s3://b/out", style="3:0.5,12:0.5", batch_size=8)
    argv = submit.entrypoint(config, python="py").split()
    assert argv[:4] == ["py", "-m", "jobs.run_job", "--config-b64"]
    assert parse_config(argv[3:]) == config
    assert parse_config([*argv[3:], "--set", "batch_size=2"]).batch_size == 2


def test_runtime_env_ships_the_code_but_not_the_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    env = raysession.runtime_env()
    assert (Path(env["working_dir"]) / "pipeline" / "runner.py").is_file()
    assert (Path(env["working_dir"]) / "jobs" / "run_job.py").is_file()
    assert ".venv" in env["excludes"] and ".git" in env["excludes"]
    assert env["excludes"] == raysession.EXCLUDES and env["working_dir"] == raysession.repo_root()
    assert env["env_vars"]["STYLIZE_PLUGINS"] == PLUGIN


def test_joining_a_cluster_ships_what_a_submission_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    assert raysession.ensure_ray("ray://head:10001") is True
    (call,) = calls
    assert call["address"] == "ray://head:10001" and call["runtime_env"] == raysession.runtime_env()
    assert call["runtime_env"]["env_vars"]["STYLIZE_PLUGINS"] == PLUGIN


# --- no credentials in a job --------------------------------------------------------------------------


def _job(**storage_options) -> JobConfig:
    return JobConfig(manifest="s3://b/m.parquet", output="s3://b/out", storage_options=storage_options)


class NoCluster:
    """Stands in for ``submit.client``: any contact with a cluster fails the test."""

    def __call__(self, address=None):
        raise AssertionError("the cluster was contacted before the credential check")


@pytest.mark.parametrize(
    "options, where",
    [
        ({"key": "AKIAEXAMPLE", "secret": "wJalrXUtnFEMI"}, "storage_options.key, storage_options.secret"),
        ({"client_kwargs": {"aws_session_token": "FwoGZX"}}, "storage_options.client_kwargs.aws_session_token"),
        ({"password": "hunter2"}, "storage_options.password"),
        ({"token": {"type": "service_account", "private_key": "-----BEGIN"}}, "storage_options.token"),
        ({"endpoint_url": "https://user:hunter2@minio:9000"}, "storage_options.endpoint_url"),
    ],
)
def test_a_config_with_credentials_is_refused_before_the_cluster_is_contacted(
    options: dict, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit, "client", NoCluster())
    with pytest.raises(ConfigError) as err:
        submit.submit(_job(**options), address="http://127.0.0.1:1")
    message = str(err.value)
    assert "\n" not in message and where in message
    assert "environment variables" in message and "instance role" in message and "configs/rayjob.yaml" in message


def test_options_that_name_no_credential_are_allowed() -> None:
    assert submit.credentials_in(_job(endpoint_url="http://minio:9000", anon=False).model_dump(mode="json")) == []
    assert submit.credentials_in({"storage_options": {"token": "anon", "key": None}}) == []


def test_every_job_command_is_checked_training_included(monkeypatch: pytest.MonkeyPatch) -> None:
    """``stylize train --submit`` builds its own ``--config-b64`` command; submit_entrypoint still looks inside."""
    monkeypatch.setattr(submit, "client", NoCluster())
    payload = submit.encode_payload({"stylizer": "johnson", "storage_options": {"secret": "wJalrXUtnFEMI"}})
    with pytest.raises(ConfigError, match="storage_options.secret"):
        submit.submit_entrypoint(f"python -m jobs.train_job --config-b64 {payload}", "stylize-train-x")
    with pytest.raises(ConfigError, match="env_vars.AWS_SECRET_ACCESS_KEY"):
        submit.submit_entrypoint("python -m jobs.run_job", "x", env_vars={"AWS_SECRET_ACCESS_KEY": "wJalr"})
    with pytest.raises(ConfigError, match="metadata.api_token"):
        submit.submit_entrypoint("python -m jobs.run_job", "x", metadata={"api_token": "abc"})


def test_jobs_api_needs_the_dashboard_http_address() -> None:
    with pytest.raises(JobError, match="8265"):
        submit.client("127.0.0.1:6379")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head`` on 127.0.0.1, in its own process group so teardown stops exactly it.

    (``ray stop`` would also stop every other Ray on the machine, e.g. another test module's.)
    """
    port, dashboard = _free_port(), _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        os.path.join(bin_dir, "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--disable-usage-stats",
        "--block",
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "ray start exited"
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # 401: up, with token auth (Ray's default); the client sends ~/.ray/auth_token
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Ray dashboard did not come up"
            time.sleep(1)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_submit_to_a_local_cluster(ray_head: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    paths = write_inputs(tmp_path / "in", {f"p{i}": encode(photo(seed=i)) for i in range(3)})
    manifest = write_manifest(tmp_path / "m.parquet", list(paths.items()))
    config_path = tmp_path / "job.yaml"
    out = tmp_path / "out"
    config_path.write_text(
        yaml.safe_dump(
            {
                "manifest": str(manifest),
                "output": str(out),
                "stylizer": "test-invert",
                "style": "1",
                "format": "png",
                "metrics": False,
            }
        )
    )
    cli = CliRunner()
    args = ["submit", str(config_path), "--address", ray_head, "--python", sys.executable, "--wait"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    job_id = submit.submission_id(JobConfig(**yaml.safe_load(config_path.read_text())))
    assert f"submitted {job_id}" in result.output and f"{job_id} SUCCEEDED" in result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert json.loads((out / "_SUCCESS").read_text())["ok"] == 3

    again = cli.invoke(app, args[:-1])  # same config, same id: nothing new starts
    assert again.exit_code == 0 and f"already submitted {job_id}" in again.output

    status = cli.invoke(app, ["status", job_id, "--address", ray_head])
    assert status.exit_code == 0 and json.loads(status.output)["status"] == "SUCCEEDED"
    logs = cli.invoke(app, ["logs", job_id, "--address", ray_head])
    assert logs.exit_code == 0 and "progress 3/3" in logs.output
    stop = cli.invoke(app, ["stop", job_id, "--address", ray_head])
    assert stop.exit_code == 0 and "was not running" in stop.output


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
MARKER = "http://marker-endpoint-5f3a:9000"


def _everything_the_jobs_api_returns(address: str) -> str:
    """Every job's info and logs as text, with each entrypoint's base64 payload decoded as well."""
    jobs = submit.client(address)
    texts = []
    for job in jobs.list_jobs():
        job_id = job.submission_id or job.job_id
        info = jobs.get_job_info(job_id)
        fields = info.model_dump() if hasattr(info, "model_dump") else vars(info)
        texts += [repr(job), repr(info), json.dumps(fields, default=str)]
        texts += [json.dumps(p) for p in submit._payloads(info.entrypoint or "")]
        texts.append(str(jobs.get_job_logs(job_id)))
    return "\n".join(texts)


@pytest.mark.slow
def test_no_secret_reaches_a_live_cluster(
    ray_head: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the submitting shell holds credentials too: none of them may be forwarded
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("STYLIZE_PLUGINS", PLUGIN)
    paths = write_inputs(tmp_path / "in", {"p0": encode(photo(seed=0))})
    base = {
        "manifest": str(write_manifest(tmp_path / "m.parquet", list(paths.items()))),
        "output": str(tmp_path / "out"),
        "stylizer": "test-invert",
        "style": "1",
        "format": "png",
        "metrics": False,
    }
    allowed, refused = tmp_path / "allowed.yaml", tmp_path / "refused.yaml"
    allowed.write_text(yaml.safe_dump({**base, "storage_options": {"endpoint_url": MARKER}}))
    secret_options = {"secret": SECRET}
    refused.write_text(yaml.safe_dump({**base, "output": str(tmp_path / "out2"), "storage_options": secret_options}))
    common = ["--address", ray_head, "--python", sys.executable]

    assert cli_run(["submit", str(refused), *common]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: refusing to submit: storage_options.secret"), err
    assert "configs/rayjob.yaml" in err[0] and SECRET not in err[0]

    assert cli_run(["submit", str(allowed), *common, "--wait"]) == 0, capsys.readouterr()
    job_id = submit.submission_id(JobConfig(**yaml.safe_load(allowed.read_text())))
    seen = _everything_the_jobs_api_returns(ray_head)
    assert job_id in seen and MARKER in seen  # the non-secret option did travel, and we can see it
    assert SECRET not in seen
    refused_id = submit.submission_id(JobConfig(**yaml.safe_load(refused.read_text())))
    assert refused_id not in seen  # nothing was submitted for the refused config


class RecordingClient:
    """Stands in for ``submit.client``: records what would be sent to the cluster."""

    def __init__(self) -> None:
        self.jobs: list[dict] = []

    def __call__(self, address=None):
        return self

    def submit_job(self, **kwargs):
        self.jobs.append(kwargs)
        return kwargs["submission_id"]


def test_training_submits_through_the_batch_jobs_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.train_job import parse_config as parse_train_config

    sent = RecordingClient()
    monkeypatch.setattr(submit, "client", sent)
    args = ["--content-manifest", "s3://b/photos.txt", "--output", "s3://b/ckpt", "--submit"]
    result = CliRunner().invoke(app, ["train", "johnson", "--style", "s3://b/wave.jpg", *args, "--steps", "5"])
    assert result.exit_code == 0, result.output
    cfg = JobConfig(manifest="s3://b/m.parquet", output="s3://b/out", style="3")
    submit.submit(cfg)
    train, job = sent.jobs
    assert train["runtime_env"] == job["runtime_env"] == raysession.runtime_env()
    assert train["metadata"] == {"tool": "stylize", "kind": "train", "output": "s3://b/ckpt"}
    assert job["metadata"] == {"tool": "stylize", "kind": "run", "output": "s3://b/out"}
    argv = train["entrypoint"].split()
    assert argv[:4] == ["python", "-m", "jobs.train_job", "--config-b64"]
    config = parse_train_config(argv[3:])
    assert (config.stylizer, config.style, config.steps) == ("johnson", "s3://b/wave.jpg", 5)
    assert train["submission_id"] == submit.submission_id(config, "train") and train["submission_id"] in result.output
    assert train["submission_id"].startswith("stylize-train-") and job["submission_id"] == submit.submission_id(cfg)
    assert parse_train_config([*argv[3:], "--set", "steps=7", "--set", "style=a:b.jpg"]).style == "a:b.jpg"


def test_both_job_entrypoints_read_a_config_file_and_refuse_a_bad_payload(tmp_path: Path) -> None:
    from jobs.train_job import parse_config as parse_train_config

    (tmp_path / "job.yaml").write_text("manifest: m.parquet\noutput: out\nstyle: '3'\n")
    (tmp_path / "train.yaml").write_text("stylizer: adain\ncontent_manifest: c.txt\noutput: o\nstyle_manifest: s\n")
    assert parse_config(["--config", str(tmp_path / "job.yaml"), "--set", "batch_size=3"]).batch_size == 3
    assert parse_train_config(["--config", str(tmp_path / "train.yaml"), "--set", "lr=0.5"]).lr == 0.5
    for parse in (parse_config, parse_train_config):
        with pytest.raises(ConfigError, match="^--config-b64 is not urlsafe base64"):
            parse(["--config-b64", "%%%"])
        with pytest.raises(ConfigError, match="^config file: "):
            parse(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="invalid train config"):
        parse_train_config(["--config", str(tmp_path / "job.yaml")])
