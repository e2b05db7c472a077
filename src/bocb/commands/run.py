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
from rich.constrain import Constrain
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from bocb.api import MIN_LEASE_S
from bocb.commands.common import (add_data_args, add_json_arg, add_log_args, add_store_arg, data_dirs,
                                  default_cache_dir, ignore_further_interrupts, plugins_of)
from bocb.labels import DASH
from bocb.run_events import RunUpdate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study file's trials into the store (resumable)")
    p.add_argument("study", type=Path, help="study file (TOML)")
    add_run_args(p)
    p.add_argument("--processes-per-trial", type=int, default=None, metavar="N",
                   help="run every trial on N processes, one GPU each (default: the study's "
                        "processes_per_trial, else 1); the recipe's batch is split between them")


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

    return show_run(lambda progress: api.run_study(args.study, args.store, progress=progress,
                                                   processes_per_trial=args.processes_per_trial, **run_options(args)),
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
        ignore_further_interrupts()
        display.stop()
        console.print(f"[yellow]{escape(display.interrupted())}[/]")
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
    then a progress bar while snapshots are measured; and says what a Ctrl-C stopped
    (:meth:`interrupted`)."""

    def __init__(self, console: Console):
        self.console = console
        self.live: Live | None = None
        self.view: _LiveView | None = None
        self.bar: Progress | None = None
        self.bar_task = None
        self.phase = "starting"  # then "trials", "after" (the trials ended), "measuring"
        self.last: RunUpdate | None = None
        self.running = 0  # trials running at the last update (the runner empties its board on a stop)

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
            self.phase = "trials"
            self.view = _LiveView(event.runnable, event.seeds)
            self.live = Live(self.view.render(None), console=console, refresh_per_second=2)
            self.live.start(refresh=True)
        elif isinstance(event, ev.RunUpdate) and self.live is not None:
            ended = isinstance(event, ev.RunEnded)
            self.last, self.running = event, 0 if ended else len(event.stats.progress)
            self.live.update(self.view.render(event, final=ended))
            if ended:
                self.phase = "after"
                self._stop_live()
                for note in event.stats.notes:
                    console.print(escape(note))
        elif isinstance(event, ev.Measuring):
            self.phase = "measuring"
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
        """Close whatever is still drawing (after an interrupt or an error). The live view's last
        frame keeps the counts and drops the running trials: they are not running any more."""
        if self.live is not None:
            if self.last is not None:
                self.live.update(self.view.render(self.last, final=True))
            self._stop_live()
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def interrupted(self) -> str:
        """The one line a Ctrl-C ends with: what was stopped and how to go on (the same command
        again; the runner has handed its running trials back as pending by then)."""
        if self.phase == "starting":
            return "stopped before any trial started; rerun the same command to run the study"
        if self.phase == "trials":
            return (f"stopped: {self.running} running trial(s) handed back, finished ones stored; rerun the same "
                    f"command to resume")
        return ("stopped after the trials ran (their results are stored), while measuring weight snapshots; rerun "
                "the same command to measure the rest")


# The live view is drawn at most this wide whatever the terminal (a wide one otherwise lets a table
# grow with its longest name); the names' column gives way first, ending in an ellipsis.
VIEW_WIDTH = 100
NAME_WIDTH = 50


def _of(k: int | None, n: int | None) -> str:
    return DASH if k is None else f"{k}/{n if n is not None else '?'}"


def _number(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


class _LiveView:
    """The trials bar; one line of finished counts, running trials, their throughput and the ETA;
    then a row per running trial: its name, epoch k/N, step within the epoch, training img/s, the
    last evaluated epoch's score and train loss, and its time left (:mod:`bocb.trial_progress`
    says how each is measured)."""

    def __init__(self, total: int, seeds: int = 1):
        self.progress = Progress(TextColumn("[bold]trials"), BarColumn(bar_width=40), MofNCompleteColumn(),
                                 TimeElapsedColumn())
        self.task = self.progress.add_task("trials", total=total)
        self.show_seed = seeds > 1

    def render(self, update, final: bool = False):
        """The bar alone before the first update; then bar, summary line, tuning line and the running
        trials (none in a ``final`` frame: the run ended or was stopped)."""
        if update is None:
            return self.progress
        from bocb.labels import clock, trial_label

        stats = update.stats
        board = stats.progress
        running = [] if final else board.running()
        task = self.progress.tasks[0]
        total = task.total
        if update.proposed is not None:  # adaptive: the total grows as the tuner proposes
            total = max(stats.done + len(running), update.proposed)
        self.progress.update(self.task, completed=stats.done, total=total)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.finished.items())) or "none finished yet"
        line = f"finished: {counts}"
        if not final:
            pending = max(0, int(total or 0) - stats.done - len(running))
            ips = board.images_per_s()
            line += (f"; {len(running)} running, {_number(ips, ',.0f')} img/s; "
                     f"ETA {clock(board.eta(pending))}")
        parts = [self.progress, Text(line, overflow="fold")]
        if update.tuning is not None:
            parts.append(Text(update.tuning))
        if running:  # no running trial, no table (an empty one draws a bare header)
            table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            table.add_column("running trial", max_width=NAME_WIDTH, no_wrap=True, overflow="ellipsis")
            for col in ("epoch", "step", "img/s", "top-1/AP", "loss", "left"):
                table.add_column(col, justify="right", no_wrap=True)
            for p in running:
                name = trial_label(p.settings, self.show_seed) if p.settings else p.trial_id
                table.add_row(escape(name), _of(p.epoch, p.epochs), _of(p.step, p.steps),
                              _number(p.images_per_s, ",.0f"), _number(p.score, ".2f"),
                              _number(p.train_loss, ".3f"), clock(p.seconds_left))
            parts.append(table)
        return Constrain(Group(*parts), VIEW_WIDTH)


# Above this many trials the end of a run counts instead of listing (a 30,000-row table took 42 s
# of CPU to print and is read by nobody); `bocb export` gives every row.
MAX_LISTED = 60


def _results_table(rows: list[dict]) -> Table:
    if len(rows) > MAX_LISTED:
        return _counts_table(rows)
    transfer = any(r["pretrained"] for r in rows)
    # A trial's score is its task's headline metric: test top-1, or box / keypoint AP for detection / pose.
    metrics = sorted({r.get("metric") or "top1" for r in rows})
    words = {"top1": "test top-1 %", "box_ap": "box AP %", "keypoint_ap": "keypoint AP %"}
    table = Table(title=f"results (final / best: {'; '.join(words.get(m, m) for m in metrics)})")
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
