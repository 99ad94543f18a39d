"""The entrypoint ``ray job submit`` runs for training: a training config in, a checkpoint out.

    python -m jobs.train_job --config train.yaml [--set key=value ...]   (a TrainConfig as YAML or JSON, any URI)
    python -m jobs.train_job --config-b64 <urlsafe base64 TrainConfig JSON>   (what `stylize train --submit` sends)

Inside a Ray job, ``ray.init()`` joins the job's cluster and ``TorchTrainer`` spreads the
workers over it. Resubmitting the same config resumes from the newest checkpoint in ``output``.
The last stdout line is the summary as JSON; a ``StylizeError`` exits with its code.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def parse_config(argv: list[str] | None = None) -> Any:
    from jobs import config_arguments
    from pipeline.config import read_mapping
    from pipeline.train.config import TrainConfig

    args = config_arguments("train_job", __doc__, argv)
    return TrainConfig(**read_mapping(args.config, args.set, payload=args.config_b64, fields=TrainConfig.model_fields))


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
