"""``bocb run STUDY.toml``: run a study's trials into the store, with a live view."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bocb.commands.common import add_data_args, data_dirs, default_cache_dir
from bocb.store import DEFAULT_STORE


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
    p.add_argument("--lease", type=float, default=300.0, help="claim lease in seconds (default 300)")
    add_data_args(p, data=False)


def run(args: argparse.Namespace) -> int:
    from bocb.commands.study_setup import prepare, register
    from bocb.store import SQLiteStore

    cache_dir = args.cache_dir or default_cache_dir()
    prepared = prepare(args.study, cache_dir, data_dirs(), args.download)
    store = SQLiteStore(args.store)
    new = register(store, prepared)
    tuner = None
    if prepared.study.tuning == "adaptive":
        from bocb.tuning.adapter import Tuner

        tuner = Tuner(store, prepared.study, prepared.num_classes)
    return run_registered(args, store, prepared.study, new, tuner)


def run_registered(args: argparse.Namespace, store, study, new: int, tuner=None) -> int:
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
    counts = store.counts(study.study_id)
    runnable = counts["pending"] + counts["running"]
    console.print(f"study [bold]{study.name}[/] ({study.study_id}): {counts['total']} trials, {new} new, "
                  f"{counts['done'] + counts['diverged']} finished, {runnable} to run, "
                  f"{counts['failed']} failed, {counts['skipped']} skipped; store {args.store}")
    artifacts = args.artifacts or Path(args.store).resolve().parent / "artifacts"
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
    except KeyboardInterrupt:
        console.print("[yellow]stopped: running trials were handed back and resume on the next run[/]")
        return 130
    # Random-init snapshots (and any final weights not yet measured), once per study. In this
    # process: a few cheap snapshots cost less than starting a pool (`bocb diagnose` uses one).
    diagnose_study(store, study.study_id, workers=1, console=console, conv=config.weight_conv)
    counts = store.counts(study.study_id)
    console.print(_results_table(store, study.study_id))
    if tuner is not None:
        from bocb.tuning.views import tuning_table

        console.print(tuning_table(tuner.states()))
    print(json.dumps({"study": study.name, "study_id": study.study_id, **counts}), flush=True)
    store.close()
    return 0


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
            score = row.get("test_top1")
            loss = row.get("train_loss")
            table.add_row(trial_id, str(row.get("epoch", "-")), "-" if score is None else f"{score:.2f}",
                          "-" if loss is None else f"{loss:.3f}")
        if self.tuner is not None:
            return Group(self.progress, self.tuner.summary_line(), table)
        return Group(self.progress, table)


def _results_table(store, study_id: str) -> Table:
    rows = store.trials(study_id)
    transfer = any(r["pretrained"] for r in rows)
    # A trial's headline metric: test top-1, or box / keypoint AP for detection / pose (final_top1 holds it).
    table = Table(title="results (final / best: test top-1 %; box or keypoint AP % for detection or pose)")
    for col in ("pre-trained" if transfer else "backbone", "optimizer", "lr", "wd", "seed", "status", "final", "best"):
        table.add_column(col)
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        table.add_row(r["pretrained"] if transfer else r["backbone"], r["optimizer"], f"{r['lr']:g}",
                      f"{r['weight_decay'] or 0:g}", str(r["seed"]), r["status"], fmt(r["final_top1"]),
                      fmt(r["best_top1"]))
    return table
