"""`stylize report` of a job run with credentials in ``storage_options``: ``_SUCCESS`` keeps them masked, so
thumbnails are read with the caller's own, and the page says when they cannot be read (moto S3 with IAM on)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tests.pipeline_fakes  # noqa: F401 - registers the test stylizers
from pipeline import layout
from pipeline.cli import app
from pipeline.metrics import summarize, summary_bytes
from pipeline.report import render
from pipeline.shard import ShardWorker
from pipeline.storage import Storage
from tests.pipeline_helpers import encode, job_config, photo, write_manifest
from tests.s3server import create_bucket, s3_server

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytestmark = pytest.mark.slow

THUMB = '<img src="data:image/jpeg;base64,'


def _auth(endpoint: str, after: str) -> None:
    """Make moto check credentials after ``after`` more requests ("inf": never)."""
    url, headers = f"{endpoint}/moto-api/reset-auth", {"Content-Type": "text/plain"}
    request = urllib.request.Request(url, data=after.encode(), headers=headers, method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def _user(endpoint: str) -> tuple[str, str]:
    """An IAM user allowed everything on S3: its (access key, secret)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    iam.create_user(UserName="photographer")
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    arn = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="photographer", PolicyArn=arn)
    key = iam.create_access_key(UserName="photographer")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_report_reads_sources_with_the_callers_credentials(tmp_path: Path) -> None:
    import s3fs

    with s3_server() as endpoint:
        create_bucket(endpoint, "photos")
        rows = []
        for i in range(3):
            rows.append((f"p{i}", Storage("s3://photos/in").put(f"p{i}.png", encode(photo((40, 30), seed=i)))))
        key, secret = _user(endpoint)
        _auth(endpoint, "0")  # from now on only the IAM user's key is accepted
        try:
            s3fs.S3FileSystem.clear_instance_cache()
            manifest = write_manifest(tmp_path / "m.parquet", rows)
            out = tmp_path / "out"
            config = job_config(manifest, out, storage_options={"key": key, "secret": secret})
            worker = ShardWorker(config)
            try:
                shard = worker.run(0, 0, len(rows))
            finally:
                worker.close()
            assert shard["ok"] == 3, shard  # the job itself read its sources with its credentials
            recorded = config.public_dict()
            assert recorded["storage_options"] == {"key": "***", "secret": "***"}
            done = summarize([shard], config=recorded, wall_seconds=1.0, processed=3)
            Storage(str(out)).put(layout.SUCCESS_KEY, summary_bytes(done))

            # the environment's credentials are refused: placeholders, and a line that says why
            page = render(Storage(str(out)))
            assert page.count(THUMB) == 3  # the outputs only
            note = re.search(r'<p class="unread">([^<]+)', page)
            assert note and note.group(1).startswith("3 of 3 originals could not be read"), page[-3000:]
            assert "--storage-option" in page

            # the caller's own: every original and output
            page = render(Storage(str(out)), storage_options={"key": key, "secret": secret})
            assert page.count(THUMB) == 6 and 'class="unread"' not in page
            args = ["report", str(out), "--storage-option", f"key={key}", "--storage-option", f"secret={secret}"]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            assert (out / "report.html").read_text().count(THUMB) == 6
        finally:
            _auth(endpoint, "inf")
            s3fs.S3FileSystem.clear_instance_cache()


def test_storage_option_must_be_key_value(tmp_path: Path) -> None:
    from pipeline.cli.report import parse_options
    from pipeline.errors import ConfigError

    assert parse_options(["anon=true", "endpoint_url=http://x:9000", 'client_kwargs={"region_name": "r"}']) == {
        "anon": True,
        "endpoint_url": "http://x:9000",
        "client_kwargs": {"region_name": "r"},
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(["novalue"])
