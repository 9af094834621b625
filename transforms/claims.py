"""Claims: at most one run computes a pair at a time, across runs that share an output folder.

Before computing a pair, a run creates ``OUTPUT/claims/<id>.json`` exclusively (storage's
``create_exclusive``: a hard link on local disk, a does-not-exist precondition on object stores)
and removes it once the pair's outputs are written or it failed: :func:`claimed` is the one
owner of a claim, from its creation to its release, whatever ends the block. Another run that finds a live
claim leaves the pair alone. A claim lasts ``TTL_SECONDS`` and its holder renews it every
``RENEW_SECONDS`` while it works (``renew_if_due``), so a live run keeps it however long the pair
takes, and a killed run's claims expire within minutes; on the same machine a claim whose
process is gone is taken over at once. Clocks of different machines are trusted to agree within
minutes. Whatever slips through (a clock far off, a holder stalled for longer than the TTL, two
runs taking over one expired claim at the same instant) is caught by the next run's verified
skip check: an image and a log from different runs do not match the log's digest, and are redone.

Imports: storage and reading; no Beam, no torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Final

from transforms import reading, storage

logger = logging.getLogger(f"beam_style_transfer.{__name__}")  # the names logs had (docs/development.md)

FOLDER: Final = "claims"
TTL_SECONDS: Final = 600.0
RENEW_SECONDS: Final = 60.0
# How far machines' clocks may disagree: a claim that expires later than a lease from now plus
# this is not honoured, so that no claim blocks its pair for longer than a lease.
CLOCK_SKEW_SECONDS: Final = 300.0


def claim_location(output: str, pair_id: str) -> str:
    return storage.join(output, FOLDER, f"{pair_id}.json")


@dataclass(frozen=True)
class Claim:
    """Who holds a pair; truthy when the caller of :func:`acquire` holds it."""

    run_id: str
    expires_at: float
    host: str
    pid: int
    held_by_caller: bool = False

    def __bool__(self) -> bool:
        return self.held_by_caller

    @property
    def expired(self) -> bool:
        """Past its expiry, valid for longer than any lease (a clock far ahead, a forged
        record), or left by a process of this machine that is gone."""
        now = time.time()
        if not now < self.expires_at <= now + TTL_SECONDS + CLOCK_SKEW_SECONDS:  # NaN too
            return True
        return self.host == socket.gethostname() and self.pid > 0 and not process_exists(self.pid)

    def describe(self) -> str:
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
        return f"run {self.run_id} on {self.host} (pid {self.pid}), claim expires {expiry}"

    def to_json(self) -> bytes:
        record = asdict(self)
        del record["held_by_caller"]
        return json.dumps(record).encode()


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` of this machine (and PID namespace) is alive."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


class NotAClaimError(OSError):
    """A file where a claim goes that this job did not write: it is left alone."""


def _read(location: str, output: str) -> Claim | None:
    """The claim at ``location`` (below ``output``); None if it is gone.

    Raises:
        NotAClaimError: a file that does not parse as a claim (a user's note, a link, a folder,
            a file over 4 KiB or JSON past the reader's caps: reading.py).
    """
    try:
        record = reading.read_json(location, _MAX_CLAIM_BYTES, inside=output)
        if not isinstance(record, dict) or set(record) != _FIELDS:
            raise ValueError("not a claim's fields")
        run_id, expires_at, host, pid = (record[name] for name in ("run_id", "expires_at", "host", "pid"))
        if not (
            isinstance(run_id, str)
            and isinstance(host, str)
            and isinstance(pid, int)
            and not isinstance(pid, bool)
            and isinstance(expires_at, int | float)
            and not isinstance(expires_at, bool)
        ):
            raise ValueError("not a claim's types")
        # Every value accepted here is one the checks after it can use: os.kill takes a pid_t.
        if not 0 < pid <= MAX_PID:
            raise ValueError(f"pid {pid} is not a process id")
        return Claim(run_id, float(expires_at), host, pid)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        reason = str(exc).removeprefix(f"{location}: ")  # the location is said once
        raise NotAClaimError(f"{location} is not a claim this job wrote ({reason}); move it away") from None


_FIELDS: Final = frozenset(("run_id", "expires_at", "host", "pid"))
# The largest process id a claim may name: pid_t's (os.kill refuses larger ones with OverflowError).
MAX_PID: Final = 2**31 - 1
# A claim is about 150 bytes.
_MAX_CLAIM_BYTES: Final = 4096


def acquire(output: str, pair_id: str, run_id: str, seconds: float = TTL_SECONDS) -> Claim:
    """Claim ``pair_id`` for ``run_id`` for ``seconds``; the result is falsy (the holder) if taken.

    A claim of the same run is the caller's (a runner retrying a bundle). An expired claim is
    removed and claimed anew.

    Raises:
        NotAClaimError: a file this job did not write is where the claim goes (left alone).
        OSError: the claim cannot be written (a full disk, a link in the way).
    """
    location = claim_location(output, pair_id)
    mine = Claim(run_id, time.time() + seconds, socket.gethostname(), os.getpid(), held_by_caller=True)
    held: Claim | None = None
    for _ in range(3):
        if storage.create_exclusive(location, mine.to_json(), inside=output):
            return mine
        held = _read(location, output)
        if held is None:
            continue  # released between our attempt and the read: try again
        if held.run_id == run_id:
            return mine
        if not held.expired:
            return held
        try:
            storage.remove(location, inside=output)  # expired: its run was killed or is gone
        except FileNotFoundError:
            pass
    return held or Claim("unknown", 0.0, "?", 0)


def renew_if_due(output: str, pair_id: str, claim: Claim, seconds: float = TTL_SECONDS) -> Claim:
    """``claim``, renewed for ``seconds`` from now if ``RENEW_SECONDS`` have passed since it was
    made or renewed; call it as often as convenient (each iteration: a clock read, no I/O)."""
    if claim.expires_at - time.time() > seconds - RENEW_SECONDS:
        return claim
    renewed = Claim(claim.run_id, time.time() + seconds, claim.host, claim.pid, held_by_caller=True)
    try:
        storage.write_atomic(claim_location(output, pair_id), renewed.to_json(), inside=output)
    except OSError as exc:
        # The pair goes on: at worst another run takes the claim over once it expires, and the
        # digest check sorts out the outputs.
        logger.warning("%s: could not renew the claim (%s)", pair_id, exc)
        return claim
    return renewed


def remove_expired(output: str) -> int:
    """Remove the expired claims under ``OUTPUT/claims``; how many went.

    A run killed after writing a pair but before releasing its claim leaves a claim nobody
    acquires again (later runs skip the finished pair), so each run sweeps them at its start.
    Only files this job wrote and that parse as claims go: nothing else under ``claims/`` (a
    note, a link, another program's file) is touched.
    """
    return _remove_where(output, lambda claim: claim.expired)


def release_run(output: str, run_id: str) -> int:
    """Remove every claim of ``run_id`` under ``OUTPUT/claims`` (an interrupted run's, whose
    worker processes were stopped before they could), then the empty claim folders; how many
    claims went."""
    removed = _remove_where(output, lambda claim: claim.run_id == run_id)
    remove_empty_folders(output)
    return removed


def remove_empty_folders(output: str) -> None:
    """Remove the empty folders under ``OUTPUT/claims`` that this job made, and ``claims/`` itself
    when nothing is left in it: the end of a run leaves no trace of claims. Ours are the tree
    layout's class folders, which ``logs/`` has too; any other folder is a user's and stays,
    empty or not."""
    storage.remove_empty_folders(storage.join(output, FOLDER), mirrored_in=storage.join(output, "logs"))


def _remove_where(output: str, chosen: Callable[[Claim], bool]) -> int:
    removed = 0
    # storage.find lists regular files only, and follows no link.
    for location in storage.find(storage.join(output, FOLDER)):
        name = posixpath.basename(location)
        if name.startswith(storage.TEMPORARY_PREFIX) or not name.endswith(".json"):
            continue  # another run's claim being created (stale ones go with the temporary sweep), or not a claim
        try:
            held = _read(location, output)
        except NotAClaimError:
            continue
        if held is not None and chosen(held):
            with contextlib.suppress(FileNotFoundError):
                storage.remove(location, inside=output)
                removed += 1
    return removed


def release(output: str, pair_id: str, run_id: str) -> None:
    """Remove ``run_id``'s claim on ``pair_id``; another run's claim, or a file that is not a
    claim, is left alone."""
    location = claim_location(output, pair_id)
    try:
        held = _read(location, output)
    except NotAClaimError:
        return
    if held is not None and held.run_id == run_id:
        try:
            storage.remove(location, inside=output)
        except FileNotFoundError:
            pass


class Lease:
    """The claim on one pair inside :func:`claimed`: ``held`` when this run holds it (then
    ``renew_if_due`` keeps it alive); else ``claim`` says who does."""

    def __init__(self, output: str, pair_id: str, claim: Claim) -> None:
        self.output = output
        self.pair_id = pair_id
        self.claim = claim

    @property
    def held(self) -> bool:
        return bool(self.claim)

    def renew_if_due(self) -> None:
        """Call as often as convenient while working on the pair (a clock read, no I/O)."""
        if self.held:
            self.claim = renew_if_due(self.output, self.pair_id, self.claim)


@contextlib.contextmanager
def claimed(output: str, pair_id: str, run_id: str) -> Iterator[Lease]:
    """Claim ``pair_id`` for ``run_id`` for the block, and release it however the block ends (a
    result, a failure, an interrupt). Whether the claim was had: the lease's ``held``."""
    lease = Lease(output, pair_id, acquire(output, pair_id, run_id))
    try:
        yield lease
    finally:
        if lease.held:
            release(output, pair_id, run_id)
