"""The results store contract. Only store modules write SQL; they know value types only.

A store keeps studies, their trials (keyed by ``trial_id``, the hash of the resolved spec, so a
trial shared by two studies is run once), each trial's status and result record, its per-epoch
rows and its artifact paths. Runners take work with a claim/lease protocol:

- :meth:`Store.claim` atomically turns one ``pending`` trial (or a ``running`` one whose lease
  expired: its runner died) into ``running`` for this runner, with a lease of ``lease_s`` seconds;
  two runners never get the same trial while its lease is live.
- :meth:`Store.renew` extends the lease while the trial runs (returns False when the trial was
  taken over: the runner must drop it).
- :meth:`Store.finish` stores the result record if the runner still holds the lease.
- :meth:`Store.release` hands an unfinished trial back (``pending``) when a runner stops cleanly.

Weight diagnostics (issue 6) are stored per *snapshot*: a trial's final weights (``snapshot_id`` =
its ``trial_id``) or a backbone's random initialisation for a study (``init:<hash>``), each with
one row of metrics per layer.

Statuses: ``pending``, ``running``, ``done``, ``diverged``, ``failed``, ``skipped`` (a declared
combination that cannot run, with its reason), ``paused`` (adaptive tuning: stopped at a rung's
epoch with its checkpoint; its per-epoch rows so far are low-fidelity results, never a pair's
value; a promotion makes it ``pending`` again and it resumes). Only ``done`` and ``diverged`` are
final; ``failed`` trials are retried on request (:meth:`Store.retry_failed`).

Adaptive tuning (issue 14) records its proposals as *rung rows*: (study, pair, trial, rung, epoch
to stop at). A trial's budget is the largest epoch its rung rows ask for (the full schedule when it
has none); :meth:`SQLiteStore.add_proposals` inserts proposals idempotently, so two runners that
propose the same thing at once add it once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

STATUSES = ("pending", "running", "done", "diverged", "failed", "skipped", "paused")
FINAL = ("done", "diverged")


class Store(ABC):
    """Abstract store; :class:`bocb.store.sqlite.SQLiteStore` is the implementation."""

    @abstractmethod
    def add_study(self, study_id: str, name: str, path: str, settings: dict[str, Any]) -> None:
        """Record a study (idempotent)."""

    @abstractmethod
    def add_trials(self, study_id: str, trials: list[tuple[str, dict[str, Any]]],
                   skipped: list[tuple[str, dict[str, Any], str]] = ()) -> int:
        """Link ``(trial_id, spec)`` pairs to the study, inserting unknown ones as ``pending``
        and ``(trial_id, spec, reason)`` as ``skipped``. Existing trials are left untouched.
        Returns how many trials were new."""

    @abstractmethod
    def claim(self, runner: str, lease_s: float, study_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """Take one runnable trial of the study (any study when None): ``(trial_id, spec)``."""

    @abstractmethod
    def renew(self, trial_id: str, runner: str, lease_s: float) -> bool:
        """Extend this runner's lease; False when it no longer holds the trial."""

    @abstractmethod
    def finish(self, trial_id: str, runner: str, record: dict[str, Any]) -> bool:
        """Store a trial's result record; False (and nothing stored) if the lease was lost."""

    @abstractmethod
    def release(self, trial_id: str, runner: str) -> None:
        """Give an unfinished trial back as ``pending``."""

    @abstractmethod
    def held(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """The ``running`` trials (``trial_id``, ``runner``, ``lease_expires``), to find dead runners."""

    @abstractmethod
    def reclaim(self, held: list[tuple[str, str]]) -> int:
        """Give ``(trial_id, runner)`` trials back as ``pending`` when that runner still holds them
        (a runner known to be dead); returns how many."""

    @abstractmethod
    def unlink(self, study_id: str, trial_ids: list[str]) -> int:
        """Remove trials from a study; the trials and their results stay in the store."""

    @abstractmethod
    def set_artifact(self, trial_id: str, kind: str, path: str) -> None:
        """Remember where a trial's file of ``kind`` (checkpoint, final_weights, ...) is."""

    @abstractmethod
    def counts(self, study_id: str | None = None) -> dict[str, int]:
        """Trials by status (every status present, zeros included) and ``total``."""

    @abstractmethod
    def trials(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """One summary row per trial: id, status, backbone, optimizer, lr, wd, seed, accuracy..."""

    @abstractmethod
    def specs(self, study_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Every trial's spec (the study's, or all), by trial id."""

    @abstractmethod
    def record(self, trial_id: str) -> dict[str, Any] | None:
        """The full result record of a finished trial (None if it has none yet)."""

    @abstractmethod
    def epochs(self, trial_id: str) -> list[dict[str, Any]]:
        """Per-epoch rows of a trial, in order."""

    @abstractmethod
    def studies(self) -> list[dict[str, Any]]:
        """Known studies: id, name, path, created."""

    @abstractmethod
    def retry_failed(self, study_id: str | None = None) -> int:
        """Turn ``failed`` trials back into ``pending``; returns how many."""

    @abstractmethod
    def put_snapshot(self, snapshot: dict[str, Any], study_id: str | None = None) -> None:
        """Store (or replace) one snapshot's per-layer weight metrics; link it to ``study_id``."""

    @abstractmethod
    def snapshots(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of the study's trials plus those linked to the study (all when None)."""

    @abstractmethod
    def layer_metrics(self, snapshot_ids: list[str]) -> list[dict[str, Any]]:
        """Per-layer metric rows of the snapshots, in order."""

    @abstractmethod
    def close(self) -> None: ...
