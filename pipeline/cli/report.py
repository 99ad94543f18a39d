"""`stylize report OUTPUT`."""

from __future__ import annotations


def report() -> None:
    """Write a self-contained HTML report for a finished job's OUTPUT."""
    raise NotImplementedError
