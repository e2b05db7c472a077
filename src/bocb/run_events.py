"""What a study run reports as it goes: the events :func:`bocb.api.run_study` and
:func:`bocb.api.run_transfer` hand to their ``progress`` callback, in this order.

:class:`Fitted` (budget values fitted to small data), :class:`Reclaimed` / :class:`LeftToOthers`
(trials left running by other runners), then
:class:`Started` (the study's counts before any trial), :class:`RunUpdate` after every event of the
runner's loop and one :class:`RunEnded`, then, when snapshots are missing, :class:`Measuring`,
one :class:`Measured` per snapshot and :class:`MeasuringEnded`. A transfer run first reports
:class:`NotTransferred` per pair it cannot fine-tune and :class:`Replaced` once.

Plain frozen values, so a caller can log, count or draw them (the CLI's live view is one such caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fitted:
    """Budget values the study left to its tier, changed to fit small data (:mod:`bocb.fit`),
    one line each."""

    notes: tuple[str, ...]


@dataclass(frozen=True)
class Reclaimed:
    """``trials`` taken back from ``runners`` (dead on this host; every runner when ``every_running``)."""

    trials: int
    runners: tuple[str, ...]
    every_running: bool


@dataclass(frozen=True)
class LeftToOthers:
    """``trials`` held by ``runners`` not known dead: left to them until their leases expire."""

    trials: int
    runners: tuple[str, ...]


@dataclass(frozen=True)
class Started:
    """The study as registered, before any trial runs: ``counts`` by status plus ``total``;
    ``new``: trials new to the store; ``runnable``: pending plus running; ``seeds``: how many seeds
    the study has (a view names a trial's seed only when there is more than one)."""

    study: str
    study_id: str
    store: str
    counts: dict[str, int]
    new: int
    runnable: int
    seeds: int = 1


@dataclass(frozen=True)
class RunUpdate:
    """The runner's statistics so far (:class:`bocb.runner.RunStats`: finished counts, images, and
    ``stats.progress``, the trials running now with their epoch, step, throughput and time left,
    :class:`bocb.trial_progress.ProgressBoard`). Adaptive studies add how many trials the tuner ``proposed`` and its
    one-line ``tuning`` summary; both None otherwise."""

    stats: Any
    proposed: int | None = None
    tuning: str | None = None


@dataclass(frozen=True)
class RunEnded(RunUpdate):
    """The last :class:`RunUpdate`: every runnable trial has finished, or the run reached its
    deadline (``stats.out_of_time``)."""


@dataclass(frozen=True)
class Measuring:
    """Weight snapshots are about to be measured: ``total`` of them."""

    total: int


@dataclass(frozen=True)
class Measured:
    """``done`` of ``total`` snapshots measured."""

    done: int
    total: int


@dataclass(frozen=True)
class MeasuringEnded:
    """Snapshot measuring stopped (finished or interrupted)."""


@dataclass(frozen=True)
class NotTransferred:
    """A transfer pair left out: its pre-trained model is not available, for ``reason``."""

    backbone: str
    optimizer: str
    reason: str


@dataclass(frozen=True)
class Replaced:
    """``trials`` fine-tuning trials planned from changed weights files were replaced in the study
    (their results stay in the store)."""

    trials: int


@dataclass(frozen=True)
class Pruned:
    """The study's ``keep_weights`` deleted ``files`` final weights files (``bytes`` in all) after
    the run (:mod:`bocb.prune`)."""

    keep: str
    files: int
    bytes: int


RunEvent = (Reclaimed | LeftToOthers | Started | RunUpdate | RunEnded | Measuring | Measured | MeasuringEnded
            | NotTransferred | Replaced | Pruned)
