"""``bocb run STUDY.toml``: run a study's trials into the store, with a live view
(:func:`bocb.api.run_study` does the work; this module parses, draws and prints).

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

from bocb.api import MIN_LEASE_S
from bocb.commands.common import add_data_args, add_json_arg, add_store_arg, data_dirs, default_cache_dir, plugins_of
from bocb.commands.common import add_log_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study file's trials into the store (resumable)")
    p.add_argument("study", type=Path, help="study file (TOML)")
    add_run_args(p)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where results go and how trials run: shared by ``bocb run`` and ``bocb transfer``."""
    add_store_arg(p)
    p.add_argument("--artifacts", type=Path, help="checkpoints/weights (default: beside the store)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: worker processes on this machine (default); ray: Ray tasks (local Ray on "
                        "127.0.0.1, or --address)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray on 127.0.0.1)")
    p.add_argument("--slots", type=int, default=1, help="trials at once (per GPU with --gpus)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs to spread slots over (default: all visible)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each model (part of the trial's identity; costs 20-50 s per trial on CPU)")
    add_json_arg(p, "the final counts (one object)")
    p.add_argument("--retry-failed", action="store_true", help="run the study's failed trials again")
    p.add_argument("--lease", type=float, default=300.0,
                   help=f"claim lease in seconds, >= {MIN_LEASE_S:g} (default 300)")
    p.add_argument("--reclaim", action="store_true",
                   help="take over every trial of the study left running (DANGER: a runner still alive "
                        "elsewhere would have its trials run twice); dead runners on this host are "
                        "reclaimed without it")
    add_data_args(p, data=False)
    add_log_args(p, "the store's folder, e.g. bocb-results/")


def run_options(args: argparse.Namespace) -> dict:
    """The ``bocb run``/``bocb transfer`` options as :func:`bocb.api.run_study`'s keyword arguments
    (data and cache locations from the environment, which only the CLI reads)."""
    return dict(executor=args.executor, slots=args.slots, device=args.device, gpus=args.gpus, address=args.address,
                compile=args.compile, artifacts=args.artifacts, retry_failed=args.retry_failed, reclaim=args.reclaim,
                lease_s=args.lease, cache_dir=args.cache_dir or default_cache_dir(), data_dirs=data_dirs(),
                download=args.download, plugins=tuple(plugins_of(args)), log=tuple(args.log), log_dir=args.log_dir)


def run(args: argparse.Namespace) -> int:
    from bocb import api

    return show_run(lambda progress: api.run_study(args.study, args.store, progress=progress, **run_options(args)),
                    as_json=args.json)


def show_run(start, as_json: bool = False) -> int:
    """Run ``start(progress)`` (:func:`bocb.api.run_study` or ``run_transfer``) with the live view, then
    print the results table, the JSON counts line and the exit status (shared by run and transfer).
    With ``as_json`` the live view and the tables go to stderr, so stdout holds the JSON line alone."""
    from bocb.api import ExecutorUnavailable

    console = (Console(stderr=True, width=None if sys.stderr.isatty() else 160) if as_json
               else Console(width=None if sys.stdout.isatty() else 160))
    display = RunDisplay(console)
    try:
        summary = start(display)
    except ExecutorUnavailable as err:
        console.print(f"[red]error:[/] {err}", markup=True, highlight=False)
        return 1
    except KeyboardInterrupt:
        display.stop()
        console.print("[yellow]stopped: running trials were handed back and resume on the next run[/]")
        return 130
    finally:
        display.stop()
    console.print(_results_table(summary.trials))
    if summary.tuning is not None:
        from bocb.tuning.views import tuning_table

        console.print(tuning_table(summary.tuning))
    print(json.dumps({"study": summary.study, "study_id": summary.study_id, **summary.counts}), flush=True)
    return _exit_status(summary)


def _exit_status(summary) -> int:
    """0 when every trial is finished or being run by a live runner on this host; else 1 with a
    line on stderr (failed, pending, or running under a runner that cannot be seen alive)."""
    if not summary.unfinished:
        return 0
    counts, elsewhere = summary.counts, summary.held_elsewhere
    print(f"bocb: {summary.unfinished} trial(s) not finished: {counts['failed']} failed (--retry-failed runs them "
          f"again), {counts['pending']} pending, {counts['running'] - elsewhere} running under runners not seen "
          f"alive (exit status 1)", file=sys.stderr)
    return 1


class RunDisplay:
    """Draws :mod:`bocb.run_events` as ``bocb run`` always has: messages, a live view of the trials,
    then a progress bar while snapshots are measured."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.view: _LiveView | None = None
        self.bar: Progress | None = None
        self.bar_task = None

    def __call__(self, event) -> None:
        from bocb import run_events as ev

        console = self.console
        if isinstance(event, ev.Fitted):
            for note in event.notes:
                console.print(f"[yellow]fitted to the data[/]: {escape(note)}")
        elif isinstance(event, ev.NotTransferred):
            Console(stderr=True).print(
                f"[yellow]not transferred[/]: {escape(f'{event.backbone} / {event.optimizer}: {event.reason}')}")
        elif isinstance(event, ev.Pruned):
            console.print(f"keep_weights = \"{event.keep}\": deleted {event.files} final weights file(s), "
                          f"{event.bytes / 1e6:,.0f} MB; their weight diagnostics are in the store")
        elif isinstance(event, ev.Replaced):
            Console(stderr=True).print(
                f"{event.trials} fine-tuning trial(s) planned from other weights files (re-saved or changed) "
                f"were replaced in this study; their results stay in the store")
        elif isinstance(event, ev.Reclaimed):
            console.print(f"reclaimed {event.trials} trial(s) left running by {'dead ' if not event.every_running else ''}"
                          f"runner(s) {escape(', '.join(event.runners))}; they resume from their checkpoints")
        elif isinstance(event, ev.LeftToOthers):
            console.print(f"[yellow]{event.trials} trial(s) held by other runner(s) {escape(', '.join(event.runners))}: "
                          f"left to them until their leases expire; --reclaim takes them over[/]")
        elif isinstance(event, ev.Started):
            c = event.counts
            console.print(f"study [bold]{escape(event.study)}[/] ({event.study_id}): {c['total']} trials, {event.new} new, "
                          f"{c['done'] + c['diverged']} finished, {event.runnable} to run, "
                          f"{c['failed']} failed, {c['skipped']} skipped; store {escape(str(event.store))}")
            self.view = _LiveView(event.runnable)
            self.live = Live(self.view.render(None), console=console, refresh_per_second=2)
            self.live.start(refresh=True)
        elif isinstance(event, ev.RunUpdate) and self.live is not None:
            self.live.update(self.view.render(event))
            if isinstance(event, ev.RunEnded):
                self._stop_live()
                for note in event.stats.notes:
                    console.print(escape(note))
        elif isinstance(event, ev.Measuring):
            self.bar = Progress(TextColumn("[bold]weight diagnostics"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=console)
            self.bar_task = self.bar.add_task("snapshots", total=event.total)
            self.bar.start()
        elif isinstance(event, ev.Measured) and self.bar is not None:
            self.bar.update(self.bar_task, completed=event.done)
        elif isinstance(event, ev.MeasuringEnded) and self.bar is not None:
            self.bar.stop()
            self.bar = None

    def _stop_live(self) -> None:
        self.live.stop()
        self.live = None
        if not self.console.is_interactive:  # rich leaves the last frame without its newline there
            self.console.line()

    def stop(self) -> None:
        """Close whatever is still drawing (after an interrupt or an error)."""
        if self.live is not None:
            self._stop_live()
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class _LiveView:
    def __init__(self, total: int):
        self.progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("trials", total=total, info="")

    def render(self, update):
        """The progress bar alone before the first update; then bar, tuning line and running trials."""
        if update is None:
            return self.progress
        stats = update.stats
        ips = stats.images / stats.train_seconds if stats.train_seconds else 0.0
        counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.finished.items())) or "none finished yet"
        total = None
        if update.proposed is not None:  # adaptive: the total grows as the tuner proposes
            total = max(stats.done + len(stats.last_epoch), update.proposed)
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
        # No running trial, no table (an empty one draws a bare header).
        rows = (table,) if stats.last_epoch else ()
        if update.tuning is not None:
            return Group(self.progress, update.tuning, *rows)
        return Group(self.progress, *rows)


# Above this many trials the end of a run counts instead of listing (a 30,000-row table took 42 s
# of CPU to print and is read by nobody); `bocb export` gives every row.
MAX_LISTED = 60


def _results_table(rows: list[dict]) -> Table:
    if len(rows) > MAX_LISTED:
        return _counts_table(rows)
    transfer = any(r["pretrained"] for r in rows)
    # A trial's score is its task's headline metric: test top-1, or box / keypoint AP for detection / pose.
    table = Table(title="results (final / best: test top-1 %; box or keypoint AP % for detection or pose)")
    errors = any(r["error"] for r in rows)
    for col in ("pre-trained" if transfer else "backbone", "optimizer", "lr", "wd", "seed", "status", "final", "best",
                *(("error",) if errors else ())):
        table.add_column(col)
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        table.add_row(escape(str(r["pretrained"] if transfer else r["backbone"])), r["optimizer"], f"{r['lr']:g}",
                      f"{r['weight_decay'] or 0:g}", str(r["seed"]), r["status"], fmt(r["final_score"]),
                      fmt(r["best_score"]), *((escape(_first_line(r["error"])),) if errors else ()))
    return table


def _first_line(error: str | None, width: int = 80) -> str:
    line = (error or "").strip().splitlines()[-1:] or [""]  # a traceback's last line says what went wrong
    return line[0][:width]


def _counts_table(rows: list[dict]) -> Table:
    """Per backbone: trials by status and the best final score so far, with its optimizer."""
    from bocb.store import STATUSES

    key = "pretrained" if any(r["pretrained"] for r in rows) else "backbone"
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r)
    present = [s for s in STATUSES if any(r["status"] == s for r in rows)]
    table = Table(title=f"results: {len(rows)} trials (every row: bocb export STUDY)")
    for col in (key, *present, "best final", "with"):
        table.add_column(col, justify="right" if col in present else "left")
    for name, rs in groups.items():
        scored = [r for r in rs if r["final_score"] is not None and r["status"] in ("done", "diverged")]
        best = max(scored, key=lambda r: r["final_score"], default=None)
        table.add_row(escape(name), *(str(sum(r["status"] == s for r in rs)) for s in present),
                      "-" if best is None else f"{best['final_score']:.2f}",
                      "-" if best is None else escape(f"{best['optimizer']} (lr {best['lr']:g})"))
    return table
