"""A real S3 API server on 127.0.0.1 for tests (moto's ThreadedMotoServer, as s3fs's own tests use).

    with s3_server() as endpoint:          # sets dummy credentials + STYLIZE_S3_ENDPOINT
        create_bucket(endpoint, "photos")
        Storage("s3://photos/out").put("a.txt", b"x")

Everything runs in-process on a free port; nothing leaves the machine. Child processes started
inside the block (Ray workers) inherit the environment variables and so reach the same server.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # never pick up a developer's real profile or config
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL")


def _clear_fs_caches() -> None:
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass


@contextlib.contextmanager
def s3_server(set_env: bool = True) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (free port); yields the endpoint URL.

    With ``set_env`` the block also gets ``STYLIZE_S3_ENDPOINT`` so ``Storage`` and manifest
    code find the server without options.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    saved = {k: os.environ.get(k) for k in (*_ENV, *_UNSET, "STYLIZE_S3_ENDPOINT")}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide memory: start every server empty
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    try:
        os.environ.update(_ENV)
        for k in _UNSET:
            os.environ.pop(k, None)
        if set_env:
            os.environ["STYLIZE_S3_ENDPOINT"] = endpoint
        _clear_fs_caches()
        yield endpoint
    finally:
        _clear_fs_caches()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def create_bucket(endpoint: str, name: str) -> None:
    """Create ``name`` on the server at ``endpoint`` (no-op if it exists)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if name not in existing:
        client.create_bucket(Bucket=name)
