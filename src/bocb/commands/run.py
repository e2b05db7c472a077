"""``bocb run STUDY.toml``: run a study's trials into the store, with a live view.

Exit status (``bocb run`` and ``bocb transfer``): 0 when every trial of the study is finished
(done, diverged or skipped) or being run by another live runner on this host; 1 when some are
failed, pending, or running under a runner that cannot be seen alive (another host's, until its
lease expires); 2 for bad input or a store/file fault (one line on stderr, nothing
stored is lost); 130 when stopped with Ctrl-C (running trials are handed back).

Trials left ``running`` by a runner that died (a crash, SIGKILL, a full disk) are found at start:
on this host a dead runner's pid is checked and its trials are taken back with a printed line;
trials of runners on other hosts are reported and wait for their lease to expire, unless
``--reclaim`` takes over every running trial of the study (only safe when no other runner works
on this study: a live one would have its trials run twice).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bocb.commands.common import add_data_args, data_dirs, default_cache_dir
from bocb.store import DEFAULT_STORE, Store


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study file's trials into the store (resumable)")
    p.add_argument("study", type=Path, help="study file (TOML)")
    add_run_args(p)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where results go and how trials run: shared by ``bocb run`` and ``bocb transfer``."""
    p.add_argument("--store", default=DEFAULT_STORE, help=f"SQLite store (default: {DEFAULT_STORE})")
    p.add_argument("--artifacts", type=Path, help="checkpoints/weights (default: beside the store)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray on 127.0.0.1)")
    p.add_argument("--slots", type=int, default=1, help="trials at once (per GPU with --gpus)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to spread slots over (default: all visible)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--retry-failed", action="store_true", help="run the study's failed trials again")
    p.add_argument("--lease", type=float, default=300.0,
                   help=f"claim lease in seconds, >= {MIN_LEASE_S:g} (default 300)")
    p.add_argument("--reclaim", action="store_true",
                   help="take over every trial of the study left running (DANGER: a runner still alive "
                        "elsewhere would have its trials run twice); dead runners on this host are "
                        "reclaimed without it")
    add_data_args(p, data=False)


# Leases are renewed every third of their length from a loop that polls once a second: 3 s
# leaves two renewals per lease. A lease of 0 expired at once and let this runner's second slot
# claim the trial its first slot was running.
MIN_LEASE_S = 3.0


def check_run_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range run options before the store is touched (ValueError, one line)."""
    import math

    if not (math.isfinite(args.lease) and args.lease >= MIN_LEASE_S):
        raise ValueError(f"--lease must be a number of seconds >= {MIN_LEASE_S:g}, got {args.lease}")
    if args.slots < 1:
        raise ValueError(f"--slots must be >= 1, got {args.slots}")
    if args.gpus is not None and args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")


def check_study_run(args: argparse.Namespace, study) -> None:
    """Refuse what the chosen executor cannot honour, before the store is opened."""
    if study.memory_limit_gb is not None and args.executor == "ray":
        raise ValueError(f"{study.path}: memory_limit_gb is enforced by the local executor only (Ray "
                         f"schedules by memory but does not cap a task): drop it or use --executor local")


def run(args: argparse.Namespace) -> int:
    from bocb.commands.study_setup import prepare, register
    from bocb.store import SQLiteStore

    check_run_args(args)
    cache_dir = args.cache_dir or default_cache_dir()
    prepared = prepare(args.study, cache_dir, data_dirs(), args.download)
    check_study_run(args, prepared.study)
    store = SQLiteStore(args.store)
    new = register(store, prepared)
    tuner = None
    if prepared.study.tuning == "adaptive":
        from bocb.tuning.adapter import Tuner

        tuner = Tuner(store, prepared.study, prepared.num_classes)
    return run_registered(args, store, prepared.study, new, tuner)


def run_registered(args: argparse.Namespace, store: Store, study, new: int, tuner=None) -> int:
    """Run a registered study's runnable trials with the live view, then measure missing snapshots.

    ``study`` is a :class:`bocb.study.Study` or :class:`bocb.transfer.study.TransferStudy` (name,
    study_id, time_limit_s, memory_limit_gb). Shared by ``bocb run`` and ``bocb transfer``.
    ``tuner`` (:class:`bocb.tuning.adapter.Tuner`, adaptive studies) proposes trials as they are needed.
    """
    from bocb.commands.diagnose import diagnose_study, weight_conv
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study

    console = Console(width=None if sys.stdout.isatty() else 160)
    cache_dir = args.cache_dir or default_cache_dir()
    if args.retry_failed:
        store.retry_failed(study.study_id)
    _take_back(store, study.study_id, args.reclaim, console)
    counts = store.counts(study.study_id)
    runnable = counts["pending"] + counts["running"]
    console.print(f"study [bold]{escape(study.name)}[/] ({study.study_id}): {counts['total']} trials, {new} new, "
                  f"{counts['done'] + counts['diverged']} finished, {runnable} to run, "
                  f"{counts['failed']} failed, {counts['skipped']} skipped; store {escape(str(args.store))}")
    # Absolute, so the paths stored with each trial's results mean the same from any working
    # directory (diagnose, transfer and reruns read them back).
    artifacts = (args.artifacts or Path(args.store).parent / "artifacts").resolve()
    config = WorkerConfig(
        artifacts_dir=str(artifacts), cache_dir=str(cache_dir),
        data_dirs=tuple(str(d) for d in data_dirs()), download=args.download, device=args.device,
        compile=args.compile, weight_conv=weight_conv(study),
    )
    try:
        executor = _executor(args, config, study)
    except RuntimeError as err:  # e.g. RayExposedError: a private Ray that would listen beyond loopback
        console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
        return 1
    view = _LiveView(runnable, tuner)
    try:
        with Live(view.render(None), console=console, refresh_per_second=2) as live:
            stats = run_study(store, study.study_id, executor, lease_s=args.lease,
                              on_update=lambda s: live.update(view.render(s)),
                              propose=tuner.propose if tuner else None)
            live.update(view.render(stats))
        for note in stats.notes:
            console.print(escape(note))
    except KeyboardInterrupt:
        console.print("[yellow]stopped: running trials were handed back and resume on the next run[/]")
        return 130
    # Random-init snapshots (and any final weights not yet measured), once per study. In this
    # process: a few cheap snapshots cost less than starting a pool (`bocb diagnose` uses one).
    diagnose_study(store, study.study_id, workers=1, console=console, conv=config.weight_conv)
    counts = store.counts(study.study_id)
    elsewhere = _held_by_live_runners(store, study.study_id)
    console.print(_results_table(store, study.study_id))
    if tuner is not None:
        from bocb.tuning.views import tuning_table

        console.print(tuning_table(tuner.states()))
    print(json.dumps({"study": study.name, "study_id": study.study_id, **counts}), flush=True)
    store.close()
    return _exit_status(counts, elsewhere)


def _held_by_live_runners(store: Store, study_id: str) -> int:
    """Running trials whose runner is a live process on this host (another `bocb run` at work)."""
    from bocb.runner import runner_alive

    return sum(runner_alive(r["runner"]) is True for r in store.held(study_id))


def _exit_status(counts: dict[str, int], elsewhere: int) -> int:
    """0 when every trial is finished or being run by a live runner on this host; else 1 with a
    line on stderr (failed, pending, or running under a runner that cannot be seen alive)."""
    unfinished = counts["failed"] + counts["pending"] + counts["running"] - elsewhere
    if not unfinished:
        return 0
    print(f"bocb: {unfinished} trial(s) not finished: {counts['failed']} failed (--retry-failed runs them again), "
          f"{counts['pending']} pending, {counts['running'] - elsewhere} running under runners not seen alive "
          f"(exit status 1)", file=sys.stderr)
    return 1


def _take_back(store: Store, study_id: str, reclaim_all: bool, console: Console) -> None:
    """Reclaim trials held by dead runners of this host (all running ones with ``--reclaim``);
    name the rest, which wait for their leases."""
    from bocb.runner import held_trials

    dead, other = held_trials(store, study_id)
    taken = dead + (other if reclaim_all else [])
    if taken:
        n = store.reclaim([(r["trial_id"], r["runner"]) for r in taken])
        runners = sorted({r["runner"] for r in taken})
        console.print(f"reclaimed {n} trial(s) left running by {'dead ' if not reclaim_all else ''}"
                      f"runner(s) {escape(', '.join(runners))}; they resume from their checkpoints")
    if other and not reclaim_all:
        runners = sorted({r["runner"] for r in other})
        console.print(f"[yellow]{len(other)} trial(s) held by other runner(s) {escape(', '.join(runners))}: "
                      f"left to them until their leases expire; --reclaim takes them over[/]")


def _executor(args: argparse.Namespace, config, study):
    if args.executor == "ray":
        from bocb.executors.ray_executor import RayExecutor

        return RayExecutor(config, slots=args.slots, address=args.address, gpus=args.gpus,
                           time_limit_s=study.time_limit_s)
    from bocb.executors.local import LocalExecutor

    devices = [args.device]
    if args.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            n = args.gpus or torch.cuda.device_count()
            devices = [f"cuda:{i}" for i in range(n)]
    slots = args.slots * (len(devices) if devices[0].startswith("cuda") else 1)
    return LocalExecutor(config, slots=slots, devices=devices, time_limit_s=study.time_limit_s,
                         memory_limit_gb=study.memory_limit_gb)


class _LiveView:
    def __init__(self, total: int, tuner=None):
        self.tuner = tuner
        self.progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("trials", total=total, info="")

    def render(self, stats):
        if stats is None:
            return self.progress
        ips = stats.images / stats.train_seconds if stats.train_seconds else 0.0
        counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.finished.items())) or "none finished yet"
        total = None
        if self.tuner is not None:  # adaptive: the total grows as the tuner proposes
            total = max(stats.done + len(stats.last_epoch), self.tuner.proposed)
        self.progress.update(self.task, completed=stats.done, **({"total": total} if total else {}),
                             info=f"{counts}; {len(stats.last_epoch)} reporting; {ips:.0f} img/s per slot")
        table = Table(show_header=True, box=None)
        for col in ("running trial", "epoch", "test top-1 / AP", "train loss"):
            table.add_column(col)
        for trial_id, event in stats.last_epoch.items():
            row = event["row"]
            # A number an epoch does not have (no evaluation yet) shows as "-", never a crash.
            score = row.get("score")
            loss = row.get("train_loss")
            table.add_row(trial_id, str(row.get("epoch", "-")), "-" if score is None else f"{score:.2f}",
                          "-" if loss is None else f"{loss:.3f}")
        if self.tuner is not None:
            return Group(self.progress, self.tuner.summary_line(), table)
        return Group(self.progress, table)


def _results_table(store: Store, study_id: str) -> Table:
    rows = store.trials(study_id)
    transfer = any(r["pretrained"] for r in rows)
    # A trial's score is its task's headline metric: test top-1, or box / keypoint AP for detection / pose.
    table = Table(title="results (final / best: test top-1 %; box or keypoint AP % for detection or pose)")
    for col in ("pre-trained" if transfer else "backbone", "optimizer", "lr", "wd", "seed", "status", "final", "best"):
        table.add_column(col)
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        table.add_row(escape(str(r["pretrained"] if transfer else r["backbone"])), r["optimizer"], f"{r['lr']:g}",
                      f"{r['weight_decay'] or 0:g}", str(r["seed"]), r["status"], fmt(r["final_score"]),
                      fmt(r["best_score"]))
    return table
