"""Claim fences: a worker whose claim on a trial went stale can no longer write its files.

A runner killed with SIGKILL, or one whose lease expired while it stalled, may leave a worker
still training; another runner then claims the trial and runs it again. The store already
refuses the stale runner's result (:meth:`bocb.store.base.Store.finish` checks the lease); this
module fences the *files*: checkpoints and final weights in ``artifacts/<trial_id>/``.

Each claim gets a random token. Before any worker sees the trial, the claimant writes the token
to ``<trial_dir>/.claim`` (:func:`raise_fence`), which also deletes temporary files a dead or
stale writer left behind (``*.tmp``, and safetensors' own ``.tmp*`` that it renames to ours). A worker holds a :class:`Fence` (the directory and its own token) and
publishes every file through :meth:`Fence.replace`: under an exclusive ``flock`` on the claim
file it compares the token and only then renames its temporary file into place; a stale worker's
file is deleted and :class:`StaleClaimError` stops its trial. Because both sides take the lock,
no write can land after a newer claim was fenced in. Writes made by a stale worker *before* the
new claim are harmless: they are complete files of the same deterministic trial, written by an
atomic rename.

Why a fence file rather than asking the store: workers never open the store (on a Ray cluster
they may not reach it), while the trial directory is, by the cluster contract, on a filesystem
both see. Why not per-attempt directories promoted by the runner: the runner would have to copy
or rename every epoch's checkpoint, and a resume would have to pick among attempts.
``flock`` is advisory and needs a filesystem that implements it (local disks; NFSv4 maps it to
byte-range locks).
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLAIM_FILE = ".claim"
TEMP_SUFFIX = ".tmp"


class StaleClaimError(RuntimeError):
    """This worker's claim was superseded; its write was refused."""


def new_token() -> str:
    return uuid.uuid4().hex


def temp_path(dest: Path) -> Path:
    """A temporary name beside ``dest`` that no other writer uses (two writers never share one)."""
    return dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


@contextmanager
def _locked(trial_dir: Path) -> Iterator[int]:
    trial_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(trial_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing drops the lock


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode(errors="replace").strip()


def raise_fence(trial_dir: Path, token: str) -> None:
    """Make ``token`` the trial's only valid claim and clear stale writers' temporary files."""
    with _locked(trial_dir) as fd:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, token.encode())
        os.fsync(fd)
        # Ours (*.tmp) and safetensors' own (.tmpXXXXXX, written first and renamed to ours).
        for leftover in [*trial_dir.glob(f"*{TEMP_SUFFIX}"), *trial_dir.glob(".tmp*")]:
            leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class Fence:
    """A worker's claim on one trial directory."""

    trial_dir: Path
    token: str

    def check(self) -> None:
        """Raise :class:`StaleClaimError` unless this claim is still the trial's current one."""
        with _locked(self.trial_dir) as fd:
            self._verify(fd)

    def replace(self, tmp: Path, dest: Path) -> None:
        """Rename ``tmp`` over ``dest`` if this claim is current; else delete ``tmp`` and raise."""
        with _locked(self.trial_dir) as fd:
            try:
                self._verify(fd)
            except StaleClaimError:
                Path(tmp).unlink(missing_ok=True)
                raise
            os.replace(tmp, dest)

    def _verify(self, fd: int) -> None:
        current = _read(fd)
        if current != self.token:
            raise StaleClaimError(f"claim on {self.trial_dir.name} superseded (current claim "
                                  f"{current[:8] or 'none'}, this worker's {self.token[:8]}): write refused")


def fence_for(artifacts_dir: str | Path, trial_id: str, claim: str | None) -> Fence | None:
    """The fence of one attempt at a trial (None without a claim: nothing to check)."""
    return Fence(Path(artifacts_dir) / trial_id, claim) if claim is not None else None
