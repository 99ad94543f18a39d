"""Entrypoints that `ray job submit` runs; both take their config the same way (``config_arguments``)."""

from __future__ import annotations

import argparse


def config_arguments(prog: str, doc: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--config URI`` (a YAML or JSON file, local or on a store) or ``--config-b64`` (what ``pipeline.submit``
    sends), then ``--set key=value`` overrides; the values go to ``pipeline.config.read_mapping``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a config file: a path or a URI (s3://, gs://, ...), YAML or JSON")
    source.add_argument("--config-b64", help="the config as urlsafe-base64 JSON")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser.parse_args(argv)
