"""The entrypoint ``ray job submit`` runs: a job config in, ``pipeline.runner.run`` out.

    python -m jobs.run_job --config job.yaml [--set key=value ...]
    python -m jobs.run_job --config-b64 <urlsafe base64 of the JobConfig JSON>   (what `stylize submit` sends)

Progress goes to stdout one line per update (it ends up in `stylize logs JOB`); the last line
is the run summary as JSON. A ``StylizeError`` exits with its code and a one-line message.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def parse_config(argv: list[str] | None = None) -> Any:
    from jobs import config_arguments
    from pipeline.config import load_config

    args = config_arguments("run_job", __doc__, argv)
    return load_config(args.config, args.set, payload=args.config_b64)


def main(argv: list[str] | None = None) -> int:
    from pipeline import runner
    from pipeline.errors import StylizeError

    try:
        config = parse_config(argv)
        last = [0.0]

        def progress(state: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] >= 5 or state["done"] == state["total"]:
                last[0] = now
                print(
                    f"progress {state['done']}/{state['total']} failed={state['failed']} images/s={state['rate']:.2f}",
                    flush=True,
                )

        summary = runner.run(config, progress=progress)
    except StylizeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
