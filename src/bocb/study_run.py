"""A study run end to end, below :func:`bocb.api.run_study` and :func:`bocb.api.run_transfer`:
the run options and their checks, taking back trials of dead runners, the executor, the trials
(:func:`bocb.runner.run_study`), the missing weight snapshots, and the :class:`RunSummary` read back
from the store. Progress goes out as :mod:`bocb.run_events` values; nothing here prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb import run_events as ev

Progress = Callable[[ev.RunEvent], None]

EXECUTORS = ("local", "ray")
# Leases are renewed every third of their length from a loop that polls once a second: 3 s
# leaves two renewals per lease. A lease of 0 expired at once and let this runner's second slot
# claim the trial its first slot was running.
MIN_LEASE_S = 3.0


class ExecutorUnavailable(RuntimeError):
    """The executor could not start (e.g. a private Ray that would listen beyond loopback).
    Raised after the study is registered and before any trial runs (CLI exit status 1)."""


@dataclass(frozen=True)
class RunSummary:
    """A study run's outcome, read back from the store after the run.

    ``counts``: trials by status plus ``total``; ``new``: trials new to the store on this run;
    ``held_elsewhere``: trials running under another live runner on this host; ``trials``: one
    row per trial (:meth:`bocb.store.SQLiteStore.trials`); ``notes``: one line each for the user
    (lost leases, refused stale results); ``tuning``: adaptive studies' per-pair states
    (:class:`bocb.tuning.adapter.PairState`), else None; ``out_of_time``: the run reached its deadline.
    """

    study: str
    study_id: str
    store: str
    counts: dict[str, int]
    new: int
    held_elsewhere: int
    trials: list[dict[str, Any]]
    notes: tuple[str, ...] = ()
    tuning: list[Any] | None = None
    out_of_time: bool = False  # stopped at ``RunOptions.deadline``, running trials handed back

    @property
    def unfinished(self) -> int:
        """Trials failed, pending, or running under a runner not seen alive (0: the study is complete
        or being finished by a live runner on this host)."""
        c = self.counts
        return c["failed"] + c["pending"] + c["running"] - self.held_elsewhere


@dataclass(frozen=True)
class RunOptions:
    store: str
    executor: str
    slots: int
    device: str
    gpus: int | None
    address: str | None
    compile: bool
    artifacts: Path | None
    retry_failed: bool
    reclaim: bool
    lease_s: float
    cache_dir: Path | None
    data_dirs: tuple[Path, ...]
    download: bool
    plugins: tuple[str, ...] = ()
    # A time budget (``bocb probe``): a ``time.time()`` past which the run stops and hands its
    # running trials back (:func:`bocb.runner.run_study`); and whether to measure the weight
    # snapshots of finished trials after the run (the probe has no use for them).
    deadline: float | None = None
    snapshots: bool = True
    # Experiment trackers (:mod:`bocb.trackers`), checked by make_options; their files go under
    # ``log_dir`` (None: the store's folder).
    log: tuple[str, ...] = ()
    log_dir: Path | None = None
    # Processes per trial for every trial of the run (``bocb run --processes-per-trial``), over
    # the study's ``processes_per_trial``; None: the study's.
    processes_per_trial: int | None = None

    def check(self) -> None:
        """Out-of-range options, refused before the store is touched."""
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}: valid: {', '.join(EXECUTORS)}")
        if not (math.isfinite(self.lease_s) and self.lease_s >= MIN_LEASE_S):
            raise ValueError(f"--lease must be a number of seconds >= {MIN_LEASE_S:g}, got {self.lease_s}")
        if self.slots < 1:
            raise ValueError(f"--slots must be >= 1, got {self.slots}")
        if self.gpus is not None and self.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {self.gpus}")
        if self.processes_per_trial is not None and not 1 <= self.processes_per_trial <= 1024:
            raise ValueError(f"--processes-per-trial must be from 1 to 1024, got {self.processes_per_trial}")

    def check_study(self, study: Any) -> None:
        """What the chosen executor cannot honour, refused before the store is opened."""
        if study.memory_limit_gb is not None and self.executor == "ray":
            raise ValueError(f"{study.path}: memory_limit_gb is enforced by the local executor only (Ray "
                             f"schedules by memory but does not cap a task): drop it or use --executor local")


def make_options(store: str | Path, executor: str, slots: int, device: str, gpus: int | None, address: str | None,
             compile: bool, artifacts: str | Path | None, retry_failed: bool, reclaim: bool, lease_s: float,
             cache_dir: str | Path | None, data_dirs: Sequence[str | Path], download: bool,
             plugins: Sequence[str] = (), log: Sequence[str] = (), log_dir: str | Path | None = None,
             processes_per_trial: int | None = None) -> RunOptions:
    """The options of a run, checked; ``plugins`` are imported here (:mod:`bocb.plugins`), and so
    are the libraries of the trackers in ``log`` (:func:`bocb.trackers.check`)."""
    from bocb.plugins import load_plugins

    load_plugins(plugins)
    if log:
        from bocb.trackers import check

        log = check(log)
    options = RunOptions(
        store=str(store), executor=executor, slots=slots, device=device, gpus=gpus, address=address,
        compile=compile, artifacts=None if artifacts is None else Path(artifacts), retry_failed=retry_failed,
        reclaim=reclaim, lease_s=float(lease_s), cache_dir=None if cache_dir is None else Path(cache_dir),
        data_dirs=tuple(Path(d) for d in data_dirs), download=download, plugins=tuple(plugins),
        log=tuple(log), log_dir=None if log_dir is None else Path(log_dir),
        processes_per_trial=processes_per_trial,
    )
    options.check()
    return options


def expand_transfer(study: Any, found: Any, options: RunOptions) -> list:
    if study.task == "classification":
        from bocb.data import open_data
        from bocb.transfer.study import expand_classification

        # Opening the data up front makes missing data fail before any trial, as bocb.api.run_study does.
        dataset = open_data(study.data, cache_dir=options.cache_dir, data_dirs=options.data_dirs,
                            download=options.download)
        return expand_classification(study, found, dataset.num_classes)
    from bocb.transfer.study import expand_coco

    return expand_coco(study, found)


def emit(progress: Progress | None, event: ev.RunEvent) -> None:
    if progress is not None:
        progress(event)


def run_registered(options: RunOptions, store: Any, study: Any, new: int, tuner: Any,
                    progress: Progress | None) -> RunSummary:
    """Run a registered study's runnable trials, then measure missing snapshots; closes ``store``.

    ``study``: a :class:`bocb.study.Study` or :class:`bocb.transfer.study.TransferStudy`; ``tuner``
    (:class:`bocb.tuning.adapter.Tuner`, adaptive studies) proposes trials as they are needed.
    """
    from bocb.diagnose import weight_conv
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study as run_trials

    try:
        if options.retry_failed:
            store.retry_failed(study.study_id)
        _take_back(store, study.study_id, options.reclaim, progress)
        counts = store.counts(study.study_id)
        runnable = counts["pending"] + counts["running"]
        emit(progress, ev.Started(study.name, study.study_id, options.store, dict(counts), new, runnable,
                                  seeds=len(getattr(study, "seeds", ())) or 1))
        # Absolute, so the paths stored with each trial's results mean the same from any working
        # directory (diagnose, transfer and reruns read them back).
        artifacts = (options.artifacts or Path(options.store).parent / "artifacts").resolve()
        config = WorkerConfig(
            artifacts_dir=str(artifacts), cache_dir=None if options.cache_dir is None else str(options.cache_dir),
            data_dirs=tuple(str(d) for d in options.data_dirs), download=options.download,
            device=options.device, compile=options.compile, weight_conv=weight_conv(study),
            plugins=tuple(dict.fromkeys((*options.plugins, *getattr(study, "plugins", ())))),
        )
        try:
            executor = _executor(options, config, study)
        except RuntimeError as err:  # e.g. RayExposedError: a private Ray that would listen beyond loopback
            raise ExecutorUnavailable(str(err)) from err

        def update(stats: Any) -> None:
            emit(progress, _update(stats, tuner, ended=False))

        session = _trackers(options, study.name)
        try:
            stats = run_trials(store, study.study_id, executor, lease_s=options.lease_s, on_update=update,
                               propose=tuner.propose if tuner else None, deadline=options.deadline,
                               observer=session)
        finally:
            executor.shutdown()  # whatever stopped the run, no worker outlives it (twice is harmless)
            if session is not None:
                session.close()  # runs of trials handed back end `interrupted`
        if session is not None:
            stats.notes.extend([*session.notes, *session.where()])
        emit(progress, _update(stats, tuner, ended=True))
        # Random-init snapshots (and any final weights not yet measured), once per study. In this
        # process: a few cheap snapshots cost less than starting a pool (`bocb diagnose` uses one).
        if options.snapshots:
            measure_snapshots(store, study.study_id, workers=1, conv=config.weight_conv, progress=progress)
        keep = getattr(study, "keep_weights", "all")  # transfer studies keep every fine-tuned model's
        if keep != "all":
            from bocb.prune import prune_weights

            files, size = prune_weights(store, study.study_id, keep)
            if files:
                emit(progress, ev.Pruned(keep, files, size))
        from bocb.runner import runner_alive

        counts = store.counts(study.study_id)
        elsewhere = sum(runner_alive(r["runner"]) is True for r in store.held(study.study_id))
        return RunSummary(
            study=study.name, study_id=study.study_id, store=options.store, counts=counts, new=new,
            held_elsewhere=elsewhere, trials=store.trials(study.study_id), notes=tuple(stats.notes),
            tuning=tuner.states() if tuner is not None else None, out_of_time=stats.out_of_time,
        )
    finally:
        store.close()


def _trackers(options: RunOptions, study: str) -> Any:
    """The run's :class:`bocb.trackers.Session` (None without ``log``): in this process, the
    runner's, fed by the workers' events (why: :mod:`bocb.trackers`)."""
    if not options.log:
        return None
    from bocb.trackers import Session

    return Session(options.log, options.log_dir or Path(options.store).parent, study)


def _update(stats: Any, tuner: Any, ended: bool) -> ev.RunEvent:
    proposed = tuner.proposed if tuner is not None else None
    line = tuner.summary_line() if tuner is not None else None
    cls = ev.RunEnded if ended else ev.RunUpdate
    return cls(stats, proposed, line)


def _take_back(store: Any, study_id: str, reclaim_all: bool, progress: Progress | None) -> None:
    """Reclaim trials held by dead runners of this host (all running ones with ``reclaim_all``);
    report the rest, which wait for their leases."""
    from bocb.runner import held_trials

    dead, other = held_trials(store, study_id)
    taken = dead + (other if reclaim_all else [])
    if taken:
        n = store.reclaim([(r["trial_id"], r["runner"]) for r in taken])
        emit(progress, ev.Reclaimed(n, tuple(sorted({r["runner"] for r in taken})), reclaim_all))
    if other and not reclaim_all:
        emit(progress, ev.LeftToOthers(len(other), tuple(sorted({r["runner"] for r in other}))))


def _executor(options: RunOptions, config: Any, study: Any) -> Any:
    if options.executor == "ray":
        from bocb.executors.ray_executor import RayExecutor

        return RayExecutor(config, slots=options.slots, address=options.address, gpus=options.gpus,
                           time_limit_s=study.time_limit_s, processes=processes_of(options, study))
    from bocb.executors.local import LocalExecutor

    devices = local_devices(options)
    slots = options.slots * (len(devices) if devices[0].startswith("cuda") else 1)
    return LocalExecutor(config, slots=slots, devices=devices, time_limit_s=study.time_limit_s,
                         memory_limit_gb=study.memory_limit_gb, processes=processes_of(options, study))


def local_devices(options: RunOptions) -> list[str]:
    """The devices the local executor spreads its slots over: every visible GPU (or ``--gpus`` of
    them) for ``auto``/``cuda`` on a CUDA machine, else the one device asked for."""
    if options.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            n = options.gpus or torch.cuda.device_count()
            return [f"cuda:{i}" for i in range(n)]
    return [options.device]


def check_processes(options: RunOptions, study: Any, trials: Sequence[Any]) -> None:
    """Refuse, before the store is opened, a run whose trials ask for more processes than the local
    executor can ever give one trial (its slots on a CPU, its GPUs on a GPU machine): each would
    be stored failed. ``trials``: the expanded specs (an adaptive study has none yet: its backbone
    entries and the study's own setting are read instead). Ray clusters are sized when they are
    reached; the Ray executor refuses such a trial then."""
    if options.executor != "local":
        return
    need = processes_of(options, study)
    # Without expanded trials (adaptive), the most any backbone entry or the study asks for.
    most = max((need(t.to_dict()) for t in trials), default=None) or options.processes_per_trial or max(
        [getattr(study, "processes_per_trial", 1),
         *(b.get("processes_per_trial", 1) for b in getattr(study, "backbones", ()))])
    if most <= 1:
        return
    devices = local_devices(options)
    on_gpus = devices[0].startswith("cuda")
    capacity = len(devices) if on_gpus else options.slots
    if most > capacity:
        have = f"{capacity} GPU(s) (--gpus)" if on_gpus else f"{capacity} slot(s) (--slots)"
        raise ValueError(f"{study.path}: trials run on up to {most} processes (processes_per_trial, "
                         f"--processes-per-trial) but this run has {have}: give the run {most}, or ask for fewer")


def processes_of(options: RunOptions, study: Any) -> Any:
    """``spec -> processes`` for the executor: the run's ``--processes-per-trial``, else the study's
    (a backbone's own first); 1 for a study without the key (transfer studies)."""
    if options.processes_per_trial is not None:
        return lambda spec: options.processes_per_trial
    return getattr(study, "processes_for", lambda spec: 1)


def measure_snapshots(store: Any, study_id: str, workers: int | None = None, force: bool = False,
                      conv: str | None = None, progress: Progress | None = None) -> list[dict]:
    """Measure the study's missing weight snapshots (``force``: all again) in ``workers`` processes
    (None: the CPU count); returns the new snapshots. Emits :class:`~bocb.run_events.Measuring`, one
    :class:`~bocb.run_events.Measured` per snapshot and :class:`~bocb.run_events.MeasuringEnded`
    when there is anything to measure."""
    import os

    from bocb import diagnose
    from bocb.diagnostics.metrics import DEFAULT_CONV

    jobs = diagnose.plan(store, study_id, force=force, conv=conv or DEFAULT_CONV)
    if not jobs:
        return []
    emit(progress, ev.Measuring(len(jobs)))
    done = 0

    def on_done(job: Any, snap: Any) -> None:
        nonlocal done
        done += 1
        emit(progress, ev.Measured(done, len(jobs)))

    try:
        return diagnose.run(store, study_id, jobs, workers=workers or os.cpu_count() or 1, on_done=on_done)
    finally:
        emit(progress, ev.MeasuringEnded())
