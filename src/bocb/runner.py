"""The study runner: claims trials from the store, feeds an executor, stores what comes back.

The runner is the store's only writer (executors hand records back; workers never open the
store), so any executor — local process slots or Ray tasks on a cluster — works against the same
SQLite file. Leases are renewed while trials run; a runner killed with SIGKILL simply stops
renewing, and the next runner takes its trials over when their leases expire (they resume from
their checkpoints). On Ctrl-C (or SIGTERM) the runner stops its workers and hands its running
trials back as ``pending``, leaving the store consistent.

Adaptive tuning: with ``propose`` (a callable that asks the tuner for the study's next trials,
records them in the store and returns how many became runnable), the runner calls it whenever it
finds nothing to claim after a result came in. A trial the store gives a stop epoch (a tuning
rung) runs with ``stop_at_epoch`` and is stored ``paused`` when it stops there.

Every claim gets a fresh token (:func:`bocb.fencing.new_token`) that the executor fences into
the trial's directory before a worker sees it; the worker's files and its record carry it. A
record whose token is not the runner's current claim on that trial is refused (counted in
``stale_results``), as the store refuses a finish from a runner that lost its lease: between the
two, a stale worker's result and files never land. Workers die with the runner
(:mod:`bocb.executors.orphans`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bocb.fencing import new_token
from bocb.store import Store
from bocb.trial_progress import ProgressBoard


class Executor(Protocol):
    free_slots: int
    running: list[str]

    def submit(self, trial_id: str, spec: dict[str, Any], claim: str) -> None: ...
    def poll(self, timeout: float = 1.0) -> list[tuple[str, dict[str, Any]]]: ...
    def events(self) -> list[tuple[str, dict]]: ...
    def shutdown(self) -> None: ...


class Observer(Protocol):
    """Told of each trial this runner submits, its progress events and how its attempt ended
    (the experiment trackers, :class:`bocb.trackers.Session`). Called on the runner's thread;
    must not raise (a raise would stop the run as a failing store does)."""

    def started(self, trial_id: str, spec: dict[str, Any]) -> None: ...
    def event(self, trial_id: str, event: dict[str, Any]) -> None: ...
    def finished(self, trial_id: str, record: dict[str, Any], status: str) -> None: ...


@dataclass
class RunStats:
    """What one runner did, for its live view and summary."""

    started: float = field(default_factory=time.time)
    finished: dict[str, int] = field(default_factory=dict)  # by status
    images: int = 0
    train_seconds: float = 0.0
    trial_seconds: list[float] = field(default_factory=list)
    lost_leases: int = 0
    stale_results: int = 0  # records from a superseded claim, refused
    progress: ProgressBoard = field(default_factory=ProgressBoard)  # the trials running now
    notes: list[str] = field(default_factory=list)  # one line each, for the user after the run
    out_of_time: bool = False  # stopped at its deadline
    handed_back: int = 0  # running trials handed back at the deadline

    @property
    def done(self) -> int:
        """Trials finished for good (a ``paused`` tuning rung is not)."""
        return sum(n for status, n in self.finished.items() if status != "paused")


def runner_id() -> str:
    """``host:pid:nonce``: the host and pid let a later run tell that this runner is dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def runner_alive(runner: str | None) -> bool | None:
    """Whether the runner behind a claim still lives: True/False on this host, None elsewhere
    (another host's processes cannot be seen; its lease decides) or for an unreadable id.

    A reused pid reads as alive: the error is on the safe side (the trial waits for its lease
    instead of being run twice)."""
    host, _, rest = (runner or "").partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def held_trials(store: Store, study_id: str | None) -> tuple[list[dict], list[dict]]:
    """The study's ``running`` trials split into (held by a dead runner of this host, the others)."""
    dead, other = [], []
    for row in store.held(study_id):
        (dead if runner_alive(row["runner"]) is False else other).append(row)
    return dead, other


class _Stop(Exception):
    pass


class _OutOfTime(Exception):
    pass


def run_study(
    store: Store,
    study_id: str | None,
    executor: Executor,
    *,
    lease_s: float = 300.0,
    on_update: Callable[[RunStats], None] | None = None,
    max_trials: int | None = None,
    propose: Callable[[], int] | None = None,
    deadline: float | None = None,
    observer: Observer | None = None,
) -> RunStats:
    """Run the study's runnable trials until none is left (or ``max_trials`` were started).

    ``deadline`` (a ``time.time()`` value): past it the run stops as a Ctrl-C does (workers
    stopped, running trials handed back to resume from their checkpoints on the next run), but
    returns its stats with ``out_of_time`` set instead of raising: a time budget is an outcome.

    ``observer`` hears of every submitted trial, its events and its end: ``finished`` with the
    status stored, ``pending`` when handed back unfinished, ``lost`` when the store refused the
    result (lease lost) and ``stale`` for a superseded claim's record. A trial still running when
    the run stops is not reported: the observer's owner closes what it holds."""
    me = runner_id()
    stats = RunStats()
    leases: dict[str, float] = {}  # trial_id -> when last renewed
    stops: dict[str, int] = {}  # trial_id -> the rung epoch it was sent to stop at
    claims: dict[str, str] = {}  # trial_id -> this runner's current claim token
    started = 0
    fresh_results = True  # the tuner may have work to propose

    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    # Signal handlers can only be set from the main thread; a run started from another thread
    # (a notebook's background job, a server) stops on the caller's terms instead.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    previous_int = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        while True:
            if deadline is not None and time.time() >= deadline:
                raise _OutOfTime
            while executor.free_slots and (max_trials is None or started < max_trials):
                claimed = store.claim(me, lease_s, study_id)
                if claimed is None and propose is not None and fresh_results:
                    fresh_results = False
                    if propose():
                        claimed = store.claim(me, lease_s, study_id)
                if claimed is None:
                    break
                trial_id, spec = claimed
                rung_stop = store.stop_epoch(trial_id, study_id) if propose is not None else None
                if rung_stop is not None:
                    stops[trial_id] = rung_stop
                    spec = {**spec, "stop_at_epoch": rung_stop}
                claims[trial_id] = new_token()
                executor.submit(trial_id, spec, claims[trial_id])
                stats.progress.start(trial_id, spec)
                if observer is not None:
                    observer.started(trial_id, spec)
                leases[trial_id] = time.time()
                started += 1
            if not executor.running:
                break
            for trial_id, record in executor.poll(timeout=1.0):
                current = claims.get(trial_id)
                if current is None or record.get("claim") != current:
                    stats.stale_results += 1  # not this runner's current attempt: never stored
                    continue  # its tracker run was closed when the lease was lost
                del claims[trial_id]
                leases.pop(trial_id, None)
                stats.progress.end(trial_id)
                status = _store_result(store, me, trial_id, record, stats, stops.pop(trial_id, None))
                if observer is not None:
                    observer.finished(trial_id, record, status)
                fresh_results = True
            for trial_id, event in executor.events():
                # An event read after its trial's result (the two travel apart) is not a running
                # trial's: the board drops it, as kept it left finished trials in the live view.
                stats.progress.update(trial_id, event)
                if observer is not None and trial_id in claims:
                    observer.event(trial_id, event)
            now = time.time()
            for trial_id, renewed in list(leases.items()):
                if now - renewed > lease_s / 3:
                    if store.renew(trial_id, me, lease_s):
                        leases[trial_id] = now
                    else:  # another runner took it over (our lease had expired)
                        stats.lost_leases += 1
                        leases.pop(trial_id)
                        # Its late record is then a stale result, not a second lost lease.
                        claims.pop(trial_id, None)
                        stops.pop(trial_id, None)
                        stats.progress.end(trial_id)  # no longer this runner's to show
                        if observer is not None:  # closed now: a later claim of it opens a new run
                            observer.finished(trial_id, {}, "lost")
            if on_update:
                on_update(stats)
    except (KeyboardInterrupt, _Stop, _OutOfTime) as stopped:
        if main_thread:  # a second Ctrl-C must not break off the hand-back: trials would stay `running`
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        executor.shutdown()
        stats.progress.clear()
        # Every trial this runner holds, not only those in `leases`: a Ctrl-C can land after a
        # claim was committed and before the loop noted it (seen on a loaded machine).
        try:
            mine = {row["trial_id"] for row in store.held(study_id) if row["runner"] == me}
        except Exception:  # noqa: BLE001 - a failing store: hand back what this runner knows of
            mine = set()
        for trial_id in sorted(mine | set(leases)):
            store.release(trial_id, me)
        if not isinstance(stopped, _OutOfTime):
            raise KeyboardInterrupt from None
        stats.out_of_time = True
        stats.handed_back = len(mine | set(leases))
        return stats
    except Exception:
        # The store failed under us (disk full, file damaged): stop the workers, hand back what
        # can still be handed back, and let the caller report the fault in one line. Trials that
        # cannot be handed back stay `running` under this (soon dead) runner: the next run on
        # this host reclaims them, see held_trials.
        executor.shutdown()
        for trial_id in list(leases):
            try:
                store.release(trial_id, me)
            except Exception:  # noqa: BLE001 - the store is already failing; the original error matters
                break
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
            if previous_int is not None:  # None: a handler not set from Python, left as it is
                signal.signal(signal.SIGINT, previous_int)
    executor.shutdown()
    return stats


def _store_result(store: Store, me: str, trial_id: str, record: dict[str, Any], stats: RunStats,
                  stop: int | None = None) -> str:
    """Store a worker's record; returns the trial's status after it (``pending`` when handed back,
    ``lost`` when the store refused it: this runner's lease had gone)."""
    status = record.get("status", "failed")
    rows = record.get("epochs") or []
    if status == "interrupted" and stop is not None and rows and rows[-1]["epoch"] >= stop:
        record, status = {**record, "status": "paused"}, "paused"  # at its rung: the tuner decides
    if status in ("running", "interrupted"):  # never final: hand it back for another run
        store.release(trial_id, me)
        return "pending"
    resume = None
    if status in ("done", "diverged") and "checkpoint" in (record.get("artifacts") or {}):
        # A finished trial never resumes: its resume checkpoint (optimizer state beside the
        # weights, 2-3x their size; about 9-12 TB over the paper's grid) goes once the store holds
        # the result. The final weights stay. Deleted only after the finish commits, so a runner
        # killed in between leaves a trial that resumes rather than restarts.
        artifacts = dict(record["artifacts"])
        resume = artifacts.pop("checkpoint")
        record = {**record, "artifacts": artifacts}
    try:
        stored = store.finish(trial_id, me, record)
    except (ValueError, TypeError) as exc:
        # A record the store cannot hold (a NaN somewhere, an unknown status) must not leave the
        # trial `running` for every later run to claim and crash on: it becomes a failed trial
        # whose error says why; `--retry-failed` runs it again.
        status = "failed"
        stored = store.finish(trial_id, me, _unstorable(trial_id, record, exc))
    if record.get("checkpoint_set_aside"):
        stats.notes.append(f"trial {trial_id}: unreadable checkpoint set aside, restarted from epoch 0: "
                           f"{record['checkpoint_set_aside']}")
    if stored and resume and status != "failed":
        try:
            Path(resume).unlink(missing_ok=True)
        except OSError as exc:  # the result is stored; a file left behind only costs disk
            stats.notes.append(f"trial {trial_id}: its resume checkpoint could not be deleted ({exc})")
    if stored:
        stats.finished[status] = stats.finished.get(status, 0) + 1
        seconds = record.get("seconds", {})
        stats.train_seconds += seconds.get("train", 0.0) or 0.0
        stats.images += sum(r.get("images", 0) for r in record.get("epochs", []))
        if seconds.get("wall"):
            stats.trial_seconds.append(seconds["wall"])
    else:
        stats.lost_leases += 1
    return status if stored else "lost"


def _non_finite(value: Any, where: str = "") -> list[str]:
    """Paths (``seconds.train``, ``epochs.0.lr``) of the NaN/inf floats in a record."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where} = {value}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{where}.{i}")]
    return []


def _unstorable(trial_id: str, record: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """The failed record stored in place of one the store refused: the spec and the reason."""
    spec = record.get("spec")
    try:
        json.dumps(spec, allow_nan=False)
    except (ValueError, TypeError):
        spec = None
    bad = _non_finite(record)
    why = f"non-finite number(s) at {', '.join(bad[:5])}" if bad else f"{type(exc).__name__}: {exc}"
    return {"trial_id": trial_id, "spec": spec, "status": "failed", "epochs": [],
            "error": f"the trial's result could not be stored: {why}",
            "seconds": {k: v for k, v in (record.get("seconds") or {}).items()
                        if isinstance(v, (int, float)) and math.isfinite(v)}}
