"""The entrypoint ``ray job submit`` runs for training: a training config in, a checkpoint out.

    python -m jobs.train_job --config train.json            (a TrainConfig as JSON or YAML)
    python -m jobs.train_job --config-b64 <urlsafe base64 TrainConfig JSON>   (what `stylize train --submit` sends)

Inside a Ray job, ``ray.init()`` joins the job's cluster and ``TorchTrainer`` spreads the
workers over it. Resubmitting the same config resumes from the newest checkpoint in ``output``.
The last stdout line is the summary as JSON; a ``StylizeError`` exits with its code.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any


def parse_config(argv: list[str] | None = None) -> Any:
    from pipeline.errors import ConfigError
    from pipeline.train.config import TrainConfig

    parser = argparse.ArgumentParser(prog="train_job", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a TrainConfig JSON or YAML file")
    source.add_argument("--config-b64", help="the TrainConfig as urlsafe-base64 JSON")
    args = parser.parse_args(argv)
    if args.config_b64:
        data = json.loads(base64.urlsafe_b64decode(args.config_b64.encode()))
    else:
        import yaml

        try:
            with open(args.config) as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the training config {args.config}: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError("the training config must be a mapping of TrainConfig keys")
    return TrainConfig(**data)


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import StylizeError
    from pipeline.train.launch import run

    try:
        summary = run(parse_config(argv))
    except StylizeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
