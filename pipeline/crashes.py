"""The one crash-count rule of shards and video segments.

A worker crash (a segfault or OOM kill in a native library) is counted against the input that was being
worked on when it happened: the image a shard named in its attempt marker, or the segment whose attempt
file was left behind. ``max_retries`` is how many such crashes an input may cause and still be tried again:
with 0 it is tried once, and a crash fails it.
"""

from __future__ import annotations

from pipeline.errors import WorkerCrashed


def crash_limit(crashes: int, max_retries: int) -> WorkerCrashed | None:
    """The error an input fails with once it has crashed the worker ``crashes`` times, or None to try it again."""
    if crashes > max_retries:
        return WorkerCrashed(f"crashed the worker {crashes} times; gave up (max_retries={max_retries})")
    return None
