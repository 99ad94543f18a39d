"""One run at a time per output: a lease held under ``OUTPUT/_lease/``, renewed while the run runs.

A lease is a small JSON object (owner token, host, pid, Ray job id if any, started, heartbeat, expires)
written through ``pipeline.storage.Storage``. Leases are numbered generations, ``_lease/<n>.json``: a run
takes generation n+1 when generation n (the newest) is released or expired, renews only its own object,
and marks it released at the end. A run killed with SIGKILL simply stops renewing: its lease expires
``lease_seconds`` after its last heartbeat and the next run takes generation n+1; nothing is deleted by hand.
On the holder's own host (same host name and pid namespace) a lease whose process is gone is over at once.

What it guarantees:

* Local output (and any filesystem with exclusive create): two runs can never both take generation n+1
  (``Storage.create`` links the complete file into place, which fails if the name exists). A taker
  that was paused between looking and creating (so that it made an old, cleaned-up number) finds a newer
  live generation when it lists again and gives up; the holder of the newest live generation wins.
* Object stores (no portable conditional write): a taker writes its generation, waits ``SETTLE_SECONDS``
  and reads it back; of two runs that wrote the same generation only the one whose token it reads back
  proceeds. That holds on stores with read-after-write consistency (S3, GCS) when no PUT takes longer
  than the settle delay.
* Expiry compares the holder's ``expires`` (its wall clock) with the reader's: hosts' clocks must agree
  to well within ``lease_seconds``.
* A holder checks at each heartbeat that no newer live generation exists; if one does (it was paused past
  its expiry and was taken over), ``lost`` is set and the run stops with ``LeaseError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from pipeline.errors import LeaseError, StorageError
from pipeline.storage import Storage

PREFIX = "_lease/"
SETTLE_SECONDS = 1.0  # object stores: how long a taker waits before reading its generation back
KEEP = 2  # generations kept behind the newest (the rest are removed by the next taker)


def _key(generation: int) -> str:
    return f"{PREFIX}{generation:012d}.json"


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _job_id() -> str:
    """The Ray Jobs submission id when this driver runs under ``ray job submit`` (else "")."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
        return str(config.get("metadata", {}).get("job_submission_id", ""))
    return ""


def describe(record: dict[str, Any]) -> str:
    """Who holds a lease, in words: host, pid, job, start."""
    job = f", job {record['job_id']}" if record.get("job_id") else ""
    return f"host {record.get('host', '?')}, pid {record.get('pid', '?')}{job}, started {_when(record['started'])}"


def _pid_namespace() -> str:
    """What tells this machine's processes apart from another container's with the same host name."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _dead_here(record: dict[str, Any]) -> bool:
    """The holder ran on this host, in this pid namespace, and its process is gone (killed with SIGKILL):
    its lease is over now rather than at its expiry."""
    if record.get("host") != socket.gethostname() or not record.get("pidns") or record["pidns"] != _pid_namespace():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return False


def _live(record: dict[str, Any] | None, now: float) -> bool:
    if not record or record.get("released") or float(record.get("expires", 0)) <= now:
        return False
    return not _dead_here(record)


class Lease:
    """This run's lease on ``storage``'s output; ``acquire`` it, then ``renew`` / ``release``."""

    def __init__(self, storage: Storage, seconds: float) -> None:
        self.storage = storage
        self.seconds = float(seconds)
        self.generation = -1
        now = time.time()
        self.record: dict[str, Any] = {
            "token": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pidns": _pid_namespace(),
            "job_id": _job_id(),
            "started": now,
            "heartbeat": now,
            "expires": now + self.seconds,
            "released": False,
        }
        self.lost = threading.Event()

    # --- reading -----------------------------------------------------------------------------

    def _generations(self) -> list[int]:
        found = []
        for key in self.storage.list(PREFIX):
            name = key[len(PREFIX) :].removesuffix(".json")
            if name.isdigit():
                found.append(int(name))
        return sorted(found)

    def _read(self, generation: int) -> dict[str, Any] | None:
        data = self.storage.read_if_exists(_key(generation))
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return None  # a torn or foreign object holds nothing
        return record if isinstance(record, dict) and "started" in record else None

    def holder(self) -> dict[str, Any] | None:
        """The live lease of another run, if any (the newest generation)."""
        gens = self._generations()
        if not gens:
            return None
        record = self._read(gens[-1])
        mine = record is not None and record.get("token") == self.record["token"]
        return record if _live(record, time.time()) and not mine else None

    # --- taking and holding ------------------------------------------------------------------

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lease (None) or return the live lease of the run that holds it."""
        for _ in range(8):  # a lost race (another taker made the same generation) looks again
            gens = self._generations()
            newest = gens[-1] if gens else -1
            if newest >= 0:
                record = self._read(newest)
                if _live(record, time.time()):
                    return record
            if self._take(newest + 1):
                for old in gens:
                    if old < newest + 1 - KEEP:
                        with contextlib.suppress(StorageError):
                            self.storage.delete(_key(old))
                return None
        raise LeaseError(f"could not take the lease on {self.storage.root_uri}: other runs kept taking it")

    def _take(self, generation: int) -> bool:
        now = time.time()
        self.record.update(heartbeat=now, expires=now + self.seconds, started=now)
        if not self.storage.create(_key(generation), self._bytes()):
            return False
        if not self.storage.local:  # no exclusive create: the last writer of this generation wins
            time.sleep(SETTLE_SECONDS)
            back = self._read(generation)
            if not back or back.get("token") != self.record["token"]:
                return False
        self.generation = generation
        if self._newer_live():  # we made a stale number while a newer generation runs: theirs
            self.release()
            self.generation = -1
            return False
        return True

    def _newer_live(self) -> bool:
        now = time.time()
        return any(_live(self._read(g), now) for g in self._generations() if g > self.generation)

    def _bytes(self) -> bytes:
        return json.dumps(self.record, sort_keys=True).encode()

    def renew(self) -> None:
        """Push ``expires`` forward; sets ``lost`` if a newer run took the output over."""
        if self.generation < 0 or self.lost.is_set():
            return
        if self._newer_live():
            self.lost.set()
            return
        now = time.time()
        self.record.update(heartbeat=now, expires=now + self.seconds)
        self.storage.put(_key(self.generation), self._bytes())

    def release(self) -> None:
        """Mark this lease released (kept as a record of the last run; the next taker removes old ones)."""
        if self.generation < 0:
            return
        if not self._newer_live():
            self.record.update(released=True, heartbeat=time.time())
            with contextlib.suppress(StorageError):
                self.storage.put(_key(self.generation), self._bytes())
        self.generation = -1

    def refusal(self, holder: dict[str, Any]) -> LeaseError:
        return LeaseError(
            f"{self.storage.root_uri} is being written by another run ({describe(holder)}); its lease expires "
            f"{_when(float(holder['expires']))} unless renewed: rerun after that, or pass --wait-for-lease"
        )


@contextlib.contextmanager
def held(storage: Storage, seconds: float, *, wait: bool = False) -> Iterator[Lease]:
    """Hold the output's lease for the block: take it (or wait for it with ``wait``; else ``LeaseError``),
    renew it every ``seconds / 3`` from a daemon thread, release it at the end."""
    lease = Lease(storage, seconds)
    while True:
        holder = lease.try_acquire()
        if holder is None:
            break
        if not wait:
            raise lease.refusal(holder)
        # wake up around the holder's expiry, and often enough to notice its release
        time.sleep(max(0.2, min(seconds / 4, float(holder["expires"]) - time.time() + 0.1, 5.0)))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.seconds / 3):
            with contextlib.suppress(StorageError):  # a missed beat is retried; expiry is lease_seconds away
                lease.renew()

    thread = threading.Thread(target=beat, name="stylize-lease", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=5)
        lease.release()
