"""The results store contract (:class:`Store`). Callers (the runner, the tuner, the analysis, the
reports, weight diagnostics, transfer studies) use only this protocol; the implementations are
:class:`bocb.store.sqlite.SQLiteStore` (the default: one file shared by runners on several
processes and hosts) and :class:`bocb.store.memory.MemoryStore` (one process: tests, notebooks,
dry runs). Both pass one contract test suite (``tests/test_store_contract.py``).

A store keeps studies, their trials (keyed by ``trial_id``, the hash of the resolved spec, so a
trial shared by two studies is stored and run once), each trial's status and result record, its
per-epoch rows and its artifact paths. Specs, settings and records go in as JSON-ready dicts and
come back as fresh copies decoded from JSON (tuples come back as lists; changing a returned dict
never changes the store).

Statuses (:data:`STATUSES`): ``pending``, ``running``, ``done``, ``diverged``, ``failed``,
``skipped`` (a declared combination that cannot run, with its reason), ``paused`` (adaptive
tuning: stopped at a rung's epoch with its checkpoint; its per-epoch rows so far are
low-fidelity results, never a pair's value; a promotion makes it ``pending`` again and it
resumes). Only ``done`` and ``diverged`` are final (:data:`FINAL`); ``failed`` trials are run
again only on request (:meth:`Store.retry_failed`).

Leases. Runners take work with a claim/lease protocol; times are Unix seconds (``time.time()``)
of the process that calls the store:

- :meth:`Store.claim` atomically turns one ``pending`` trial, or a ``running`` one whose lease
  has expired (its runner died), into ``running`` for this runner with a lease of ``lease_s``
  seconds; two runners never get the same trial while its lease is live.
- :meth:`Store.renew` extends the lease while the trial runs; False when the runner no longer
  holds the trial (it was taken over or handed back): the runner must drop it.
- :meth:`Store.finish` stores the result only for the runner that holds the trial (the one named
  on the ``running`` row, even if its lease ran out and nobody took it over yet); a stale
  runner's finish stores nothing.
- :meth:`Store.release` hands an unfinished trial back (``pending``) when a runner stops cleanly;
  :meth:`Store.reclaim` does so for the trials of runners known to be dead.

Ordering. Rows scoped to a study come in the study's order: the position each trial was linked
at (links are appended; a trial linked again after :meth:`Store.unlink` goes last). Unscoped rows
come in the order the trials were first added to the store.

Weight diagnostics (issue 6) are stored per *snapshot*: a trial's final weights (``snapshot_id``
= its ``trial_id``) or a backbone's random initialisation for a study (``init:<hash>``), each with
one row of metrics per layer.

Adaptive tuning (issue 14) records its proposals as *rung rows*: (study, pair, trial, rung, epoch
to stop at). A trial's budget is the largest epoch its rung rows ask for (the full schedule when it
has none); :meth:`Store.add_proposals` inserts proposals idempotently, so two runners that
propose the same thing at once add it once.

This module also holds what every implementation shares (the summary row's columns, the layer
metric columns, how a spec is summarised, how a result is checked before it is stored), so the
implementations differ in storage only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np

from bocb.records import TrialResult

STATUSES = ("pending", "running", "done", "diverged", "failed", "skipped", "paused")
FINAL = ("done", "diverged")

# One summary row per trial (Store.trials), in this key order. `device` is the run's device dict as
# JSON text; `metric` names the task's headline metric, which `final_score`/`best_score` hold;
# `final_top1`/`best_top1` hold test top-1 only (None for detection and pose).
SUMMARY_COLUMNS = (
    "trial_id", "status", "backbone", "optimizer", "category", "lr", "weight_decay", "seed", "recipe",
    "tier", "pretrained", "metric", "final_score", "best_score", "final_top1", "best_top1", "best_epoch",
    "diverged_epoch", "error", "skip_reason", "attempts", "seconds_train", "seconds_eval", "seconds_wall",
    "images_per_second", "peak_memory_mb", "selection", "final_val", "best_val", "host", "device",
    "code_version", "started", "finished",
)  # fmt: skip

# Per-epoch rows (Store.epochs), in this key order.
EPOCH_COLUMNS = ("trial_id", "epoch", "train_loss", "test_top1", "test_top5", "test_loss", "lr",
                 "seconds_train", "seconds_eval", "score")

# Snapshot rows (Store.snapshots), in this key order; `settings` comes back as a dict.
SNAPSHOT_COLUMNS = ("snapshot_id", "trial_id", "source", "backbone", "seed", "path", "settings", "seconds",
                    "error", "created")

# Per-layer metric columns in the order of bocb.diagnostics.COLUMNS, shape split into rows/cols, and
# `moved` (distance from the trial's starting weights; None for init snapshots). A layer_metrics row
# is `snapshot_id`, `layer_index`, then these.
LAYER_COLUMNS = (
    "layer", "kind", "rows", "cols", "n_eig", "alpha", "alpha_status", "n_tail", "xmin", "entropy",
    "l2", "pca_energy", "log_norm", "log_spectral_norm", "stable_rank", "alpha_weighted", "moved",
)  # fmt: skip

# The rung rows of Store.tuning_rows, in this key order.
TUNING_COLUMNS = ("pair", "trial_id", "rung", "epochs", "status", "lr", "weight_decay", "seed", "final_score")


class Store(ABC):
    """The store protocol. Implementations: :class:`bocb.store.sqlite.SQLiteStore`,
    :class:`bocb.store.memory.MemoryStore`. A store is a context manager: ``with`` closes it."""

    # -- studies and trials -------------------------------------------------------------------------
    @abstractmethod
    def add_study(self, study_id: str, name: str, path: str, settings: dict[str, Any]) -> None:
        """Record a study. Idempotent: a study already known keeps its name, path, settings and
        creation time."""

    @abstractmethod
    def add_trials(self, study_id: str, trials: list[tuple[str, dict[str, Any]]],
                   skipped: list[tuple[str, dict[str, Any], str]] = ()) -> int:
        """Link ``(trial_id, spec)`` pairs to the study, inserting unknown trials as ``pending``,
        then ``(trial_id, spec, reason)`` ones as ``skipped`` with that reason. A trial already in
        the store (from this or another study) is left untouched, status and result included, and
        only linked; a trial already linked keeps its position. Returns how many trials were new
        to the store."""

    @abstractmethod
    def unlink(self, study_id: str, trial_ids: list[str]) -> int:
        """Remove trials from a study; the trials, their results and their other studies' links
        stay. Returns how many links were removed (unknown ones count 0)."""

    @abstractmethod
    def studies(self) -> list[dict[str, Any]]:
        """Known studies, oldest first: ``study_id``, ``name``, ``path``, ``created``."""

    # -- the claim/lease protocol ---------------------------------------------------------------
    @abstractmethod
    def claim(self, runner: str, lease_s: float, study_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
        """Take the first runnable trial of the study (of the store when None), in the order the
        module doc states: a ``pending`` one, or a ``running`` one whose lease has expired. (The
        SQLite store walks on from its own last claim, so a trial another process makes runnable
        again behind that point is taken once nothing lies ahead; see its ``claim``.)
        Atomically it becomes ``running`` under ``runner`` with a lease until now + ``lease_s``;
        its ``attempts`` count goes up by one and ``started`` is now. Returns ``(trial_id, spec)``,
        or None when nothing is runnable (``paused``, ``failed``, ``skipped`` and final trials
        never are)."""

    @abstractmethod
    def renew(self, trial_id: str, runner: str, lease_s: float) -> bool:
        """Extend the lease to now + ``lease_s`` if ``runner`` holds the trial (it is ``running``
        under that runner); False, and nothing changed, otherwise."""

    @abstractmethod
    def finish(self, trial_id: str, runner: str, record: dict[str, Any] | TrialResult) -> bool:
        """Store a trial's result if ``runner`` holds it (see the module doc); False, and nothing
        stored, otherwise. ``record`` is the run's record (read with
        :meth:`bocb.records.TrialResult.from_record`) or a :class:`TrialResult`.

        The trial takes the record's status (``done``, ``diverged``, ``failed`` or ``paused``;
        anything else raises ``ValueError`` naming it), its typed scores and costs, its epoch
        rows (replacing earlier ones), its artifacts (added, replacing the same kinds) and its
        weight diagnostics snapshot if any. A record holding NaN or infinity, or two rows for one
        epoch, raises ``ValueError`` before anything is stored (the runner then stores a
        ``failed`` record that says why)."""

    @abstractmethod
    def release(self, trial_id: str, runner: str) -> None:
        """Give a trial ``runner`` holds back as ``pending`` (its runner and lease cleared); a
        trial it does not hold is left as it is."""

    @abstractmethod
    def held(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """The ``running`` trials, expired leases included, in the module doc's order:
        ``trial_id``, ``runner``, ``lease_expires`` (to find dead runners)."""

    @abstractmethod
    def reclaim(self, held: list[tuple[str, str]]) -> int:
        """Give ``(trial_id, runner)`` trials back as ``pending`` when that runner still holds
        them (a runner known to be dead); returns how many."""

    @abstractmethod
    def retry_failed(self, study_id: str | None = None) -> int:
        """Turn the study's (the store's) ``failed`` trials back into ``pending``; their old
        record stays readable until they finish again. Returns how many."""

    # -- reading trials -------------------------------------------------------------------------
    @abstractmethod
    def counts(self, study_id: str | None = None) -> dict[str, int]:
        """Trials by status (every status of :data:`STATUSES`, zeros included) and ``total``."""

    @abstractmethod
    def trials(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """One summary row per trial (keys :data:`SUMMARY_COLUMNS`), in the module doc's order.
        The settings come from the spec; the rest is None until a result is stored."""

    @abstractmethod
    def specs(self, study_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Every trial's spec by trial id, in the module doc's order."""

    @abstractmethod
    def record(self, trial_id: str) -> dict[str, Any] | None:
        """The stored result record of a trial (its weight diagnostics' per-layer rows left
        out: they are in :meth:`layer_metrics`); None if it has none (unknown, pending, skipped)."""

    @abstractmethod
    def epochs(self, trial_id: str) -> list[dict[str, Any]]:
        """A trial's per-epoch rows (keys :data:`EPOCH_COLUMNS`), by epoch; ``score`` is the
        task's metric, ``test_top1`` top-1 only."""

    # -- artifacts --------------------------------------------------------------------------------
    @abstractmethod
    def set_artifact(self, trial_id: str, kind: str, path: str) -> None:
        """Remember where a trial's file of ``kind`` (checkpoint, final_weights, ...) is,
        replacing an earlier path of that kind."""

    @abstractmethod
    def drop_artifact(self, trial_id: str, kind: str) -> None:
        """Forget a trial's file of ``kind`` (its file was deleted); nothing when there is none."""

    @abstractmethod
    def artifacts(self, trial_id: str) -> dict[str, str]:
        """A trial's file paths by kind (kinds in sorted order; empty when none). Paths are
        stored as given (the runner gives absolute ones); how an implementation resolves a
        relative one is its own (SQLite: against its file's folder)."""

    # -- weight diagnostics -----------------------------------------------------------------------
    @abstractmethod
    def put_snapshot(self, snapshot: dict[str, Any], study_id: str | None = None) -> None:
        """Store one model snapshot's per-layer metrics, replacing an earlier computation of the
        same ``snapshot_id`` (which then counts as the newest snapshot).

        ``snapshot``: ``snapshot_id``, ``source`` (``final`` | ``init``), ``backbone``, ``layers``
        (rows with the columns of :data:`bocb.diagnostics.COLUMNS`, ``shape`` a (rows, cols)
        pair; NaN metrics are stored as None), and optionally ``trial_id``, ``seed``, ``path``,
        ``settings``, ``seconds``, ``error``. ``study_id`` links the snapshot to a study
        (random-init snapshots belong to studies, final ones to their trials)."""

    @abstractmethod
    def snapshots(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Snapshots (keys :data:`SNAPSHOT_COLUMNS`) of the study's trials plus those linked to
        the study (every one when None), oldest stored first."""

    @abstractmethod
    def layer_metrics(self, snapshot_ids: list[str]) -> list[dict[str, Any]]:
        """Per-layer rows (``snapshot_id``, ``layer_index``, :data:`LAYER_COLUMNS`) of the given
        snapshots, in the given snapshot order, then layer order."""

    # -- adaptive tuning ----------------------------------------------------------------------------
    @abstractmethod
    def add_proposals(self, study_id: str, pair: str, proposals: list[tuple[str, dict[str, Any], int, int]]) -> int:
        """Record a tuner's proposals ``(trial_id, spec, rung, epochs)`` for one pair,
        idempotently. Unknown trials are inserted ``pending``; every trial is linked to the study
        (if it is not yet); a rung row (study, trial, rung) that is new for a ``paused`` trial
        makes it ``pending`` (a promotion: it resumes to ``epochs``). A rung row that already
        exists changes nothing. Returns how many trials became runnable."""

    @abstractmethod
    def stop_epoch(self, trial_id: str, study_id: str | None = None) -> int | None:
        """The epoch a trial is to stop at: the largest its rung rows ask for (None: no rows), in
        ``study_id``'s rows when given (trial ids are shared across studies; one study's
        promotion must not move another's rung)."""

    @abstractmethod
    def tuning_rows(self, study_id: str, epochs: list[int]) -> tuple[list[dict[str, Any]], dict[tuple[str, int], float | None]]:
        """A study's rung rows (keys :data:`TUNING_COLUMNS`: the row with its trial's status and
        settings), ordered by pair, trial id, rung; and the scores of those trials' epoch rows at
        each of ``epochs`` (the rung epochs) that exist: ``{(trial_id, epoch): score}``."""

    @abstractmethod
    def trained_epochs(self, study_id: str) -> dict[str, int]:
        """Epoch rows stored per trial of the study (what a trial has trained so far); trials
        without any are left out."""

    # -- lifetime -----------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release what the store holds open (a no-op where nothing is)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- shared by the implementations ------------------------------------------------------------------


def summary_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's settings as summary-row fields."""
    opt = spec["optimizer"]
    return {
        "backbone": spec["backbone"]["short"], "optimizer": opt["short"], "category": opt["category"],
        "lr": opt["args"]["lr"], "weight_decay": opt["args"].get("weight_decay"), "seed": spec["seed"],
        "recipe": spec["recipe"]["name"], "tier": spec["recipe"]["tier"],
        "pretrained": (spec.get("pretrained") or {}).get("label"),
    }


def result_to_store(trial_id: str, record: dict[str, Any] | TrialResult) -> TrialResult:
    """The typed result of a record ``finish`` was given, or ``ValueError`` if it cannot be
    stored (a status a finish cannot set, NaN/infinity anywhere, two rows for one epoch). A record
    that does not name its task is read with the task of the spec it carries (a failure record
    written before the task started)."""
    if isinstance(record, TrialResult):
        result = record
    else:
        spec = record.get("spec")
        result = TrialResult.from_record(record, spec if isinstance(spec, dict) else None)
    if result.status not in STATUSES or result.status in ("pending", "running", "skipped"):
        raise ValueError(f"cannot finish trial {trial_id} with status {result.status!r}: valid: "
                         f"done, diverged, failed, paused")
    epochs = [r.epoch for r in result.epochs]
    if len(set(epochs)) != len(epochs):
        raise ValueError(f"cannot finish trial {trial_id}: its record has two rows for one epoch ({epochs})")
    return result


def layer_rows(snapshot: dict[str, Any]) -> list[tuple[Any, ...]]:
    """A snapshot's layers as ``(layer_index, *LAYER_COLUMNS)`` tuples of plain Python values."""
    rows = []
    for index, layer in enumerate(snapshot.get("layers") or []):
        n_rows, n_cols = layer["shape"]
        values = {**layer, "rows": n_rows, "cols": n_cols}
        rows.append((index, *(plain(values.get(c)) for c in LAYER_COLUMNS)))
    return rows


def plain(value: Any) -> Any:
    """NaN as None (SQLite has no NaN); numpy scalars as Python numbers."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = ["EPOCH_COLUMNS", "FINAL", "LAYER_COLUMNS", "SNAPSHOT_COLUMNS", "STATUSES", "SUMMARY_COLUMNS",
           "TUNING_COLUMNS", "Store", "layer_rows", "plain", "result_to_store", "summary_fields"]
