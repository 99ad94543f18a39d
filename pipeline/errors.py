"""One exception tree for the whole package.

The CLI turns any ``StylizeError`` into a one-line message and the exit code below;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StylizeError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1


class ConfigError(StylizeError):
    """A bad option, job config key or value (also bad style specs and masks)."""

    exit_code = 2


class InputError(StylizeError):
    """A tensor or image that breaks a documented contract (shape, range, size)."""

    exit_code = 2


class ModelNotFound(ConfigError):
    """An unknown stylizer name."""


class WeightsError(StylizeError):
    """Weights are missing, unreadable, unsafe, or do not fit the model."""

    exit_code = 3


class ManifestError(StylizeError):
    """A manifest that cannot be read or fails validation."""

    exit_code = 4


class DecodeError(StylizeError):
    """Bytes that are not an image we accept (per-row in batch jobs, never fatal there)."""

    exit_code = 5


class StorageError(StylizeError):
    """Reading or writing an object failed, or a key would escape its prefix."""

    exit_code = 6


class MachineError(StorageError):
    """A fault of the machine or the store, not of the photo: no space left, permission denied,
    credentials refused, the store still unreachable after its retries. A shard that meets one does not
    commit and the run stops with one line (no ``_SUCCESS``); the same command, once the fault is fixed,
    finishes the job. A plain ``StorageError`` raised out of a shard is transient: the driver retries the
    shard up to ``shard_retries`` times."""

    exit_code = 6


class WorkerCrashed(StylizeError):
    """An input that crashed the worker more times than ``max_retries`` allows (a failed row, never raised)."""

    exit_code = 1


class LeaseError(StylizeError):
    """Another run holds this output's lease (one run at a time per output)."""

    exit_code = 8


class JobError(StylizeError):
    """A batch or training job failed to start or finish."""

    exit_code = 7


def describe(exc: BaseException) -> str:
    """A failed row's reason: our errors as they read, anything else with its type."""
    return str(exc) if isinstance(exc, StylizeError) else f"{type(exc).__name__}: {exc}"
