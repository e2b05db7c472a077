"""``bocb status``, ``bocb plan`` and ``bocb export``: read the store (and a study file)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bocb.api import EFFECTIVE_FLOPS
from bocb.commands.common import (add_data_args, add_json_arg, add_store_arg, data_dirs, default_cache_dir,
                                  open_existing_store)
from bocb.store import STATUSES, Store

# `bocb status --watch` without a number: often enough to follow trials of minutes, rarely enough
# that reading the store (a few queries on a read-only connection) costs nothing noticeable.
WATCH_EVERY_S = 2.0
# Running trials listed by `bocb status`; past this many a line counts the rest.
MAX_RUNNING_ROWS = 20



def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="trial counts by status and the running trials, for a study or the whole store")
    s.add_argument("study", nargs="?", type=Path, help="study file (default: the whole store)")
    add_store_arg(s)
    add_json_arg(s, "the counts (and an adaptive study's tuning state)")
    # Read as text and checked in _watch: `--watch study.toml` would otherwise end in argparse's
    # "invalid float value" with a usage block, not a line that says to give the study first.
    s.add_argument("--watch", nargs="?", const=str(WATCH_EVERY_S), default=None, metavar="SECONDS",
                   help=f"redraw every SECONDS (default {WATCH_EVERY_S:g}) until no trial is pending or running "
                        "(exit 0) or Ctrl-C (exit 130); give it after the study file")
    s.set_defaults(func=status)

    p = sub.add_parser("plan", help="a study's trial count, compute estimate and what is done")
    p.add_argument("study", type=Path, help="study file (TOML)")
    add_store_arg(p, "SQLite store, to count what is already finished and read this machine's measured speed")
    add_json_arg(p, "the plan")
    add_data_args(p, data=False)
    p.add_argument("--measure", action="store_true",
                   help="time a few training steps of each backbone the store has no speed for on this machine "
                        "(CUDA when present, else CPU; about a second each) for the wall-time estimate")
    p.set_defaults(func=plan)

    e = sub.add_parser("export", help="one row per trial as CSV or Parquet")
    e.add_argument("study", nargs="?", type=Path, help="study file whose trials to export (default: the whole store)")
    add_store_arg(e)
    e.add_argument("--study", type=Path, dest="study_option", help=argparse.SUPPRESS)  # the old spelling
    e.add_argument("--format", choices=("csv", "parquet", "json"), default="csv",
                   help="csv (default), parquet (needs --out) or json (records)")
    e.add_argument("--json", action="store_const", dest="format", const="json", help="same as --format json")
    e.add_argument("--epochs", action="store_true",
                   help="one row per epoch of every trial (its settings, then the epoch's scores, loss, lr and "
                        "seconds) instead of one per trial")
    e.add_argument("--out", type=Path, help="output file (CSV default: stdout)")
    e.set_defaults(func=export)


def _study_id(path: Path | None) -> tuple[str | None, str | None]:
    if path is None:
        return None, None
    from bocb.commands.common import load_any_study

    study = load_any_study(path)
    return study.study_id, study.name


def status(args: argparse.Namespace) -> int:
    if args.watch is not None:
        return _watch(args)
    study_id, name = _study_id(args.study)
    with open_existing_store(args.store) as store:
        counts = store.counts(study_id)
        tuning = _tuning_rows(store, args.study)
    if args.json:
        extra = {"tuning": tuning} if tuning is not None else {}
        print(json.dumps({"study": name, "study_id": study_id, **counts, **extra}))
        return 0
    Console().print(*_status_view(args.store, args.study, study_id, name, tuning is not None)[0])
    return 0


def _status_view(store_path: str, study_path: Path | None, study_id: str | None, name: str | None,
                 adaptive: bool) -> tuple[list, int, int]:
    """What ``bocb status`` draws (the counts, the running trials, an adaptive study's tuning
    state), how many trials are pending or running, and how many the store holds."""
    with open_existing_store(store_path) as store:
        counts = store.counts(study_id)
        running = _running_table(store, study_id)
        tuning = None
        if adaptive:
            from bocb.tuning.adapter import states
            from bocb.tuning.views import tuning_table

            tuning = tuning_table(states(store, _load(study_path)))
    table = Table(title=escape(f"{name or 'all studies'} in {store_path}"))
    for s in (*STATUSES, "total"):
        table.add_column(s, justify="right")
    table.add_row(*[str(counts[s]) for s in (*STATUSES, "total")])
    parts = [p for p in (table, running, tuning) if p is not None]
    return parts, counts["pending"] + counts["running"], counts["total"]


def _running_table(store: Store, study_id: str | None) -> Group | None:
    """The running trials by name, with their runner, how long since they were claimed and the
    lease left. Epoch progress is not there: the store gets a trial's epochs when it finishes
    (the runner's live view shows it while it runs)."""
    import time

    from bocb.labels import clock, trial_label

    held = {r["trial_id"]: r for r in store.held(study_id)}
    if not held:
        return None
    trials = store.trials(study_id)
    rows = [r for r in trials if r["trial_id"] in held]
    seeds = len({r["seed"] for r in trials}) > 1
    now = time.time()
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("running trial", max_width=50, no_wrap=True, overflow="ellipsis")
    for col in ("runner", "for", "lease left"):
        table.add_column(col, justify="right" if col != "runner" else "left", no_wrap=True)
    for r in rows[:MAX_RUNNING_ROWS]:
        lease = held[r["trial_id"]]["lease_expires"]
        table.add_row(escape(trial_label(r, seeds)), escape(str(held[r["trial_id"]]["runner"])),
                      clock(now - r["started"] if r["started"] else None),
                      clock(lease - now if lease else None))
    if len(rows) > MAX_RUNNING_ROWS:
        table.add_row(f"... and {len(rows) - MAX_RUNNING_ROWS} more", "", "", "")
    return Group(table, Text("epoch progress: in the runner's live view (the store gets a trial's epochs when it "
                             "ends)", style="dim"))


def _watch(args: argparse.Namespace) -> int:
    """``bocb status --watch``: the status redrawn every ``args.watch`` seconds, in place on a
    terminal (one frame after another when piped), until no trial is pending or running (0) or
    Ctrl-C (130: stopped from outside, as every bocb command; the runs it watches go on)."""
    import math
    import time

    from rich.live import Live

    from bocb.commands.common import ignore_further_interrupts

    try:
        every = float(args.watch)
    except ValueError:
        raise ValueError(f"--watch takes a number of seconds, got {args.watch!r}; a study file goes first: "
                         f"bocb status {args.watch} --watch") from None
    if not (math.isfinite(every) and every > 0):
        raise ValueError(f"--watch takes a positive number of seconds, got {args.watch}")
    if args.json:
        raise ValueError("--watch redraws tables; --json prints the counts once: give one of them")
    study_id, name = _study_id(args.study)
    adaptive = _tuning_rows_wanted(args.study)
    console = Console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    footer = Text(f"every {every:g} s until no trial is pending or running; Ctrl-C stops watching (not the run)",
                  style="dim")
    try:
        if live is not None:
            live.start()
        while True:
            # Started beside `bocb run`, the store or the study's trials may not be there yet: wait.
            if not Path(args.store).exists():
                parts, open_trials, total = [Text(f"waiting for the store {args.store} (bocb run creates it)")], 1, 0
            else:
                parts, open_trials, total = _status_view(args.store, args.study, study_id, name, adaptive)
                if not total:
                    parts, open_trials = [*parts, Text("waiting for the study's trials (bocb run registers them)")], 1
            frame = Group(*parts, footer) if open_trials else Group(*parts)
            if live is not None:
                live.update(frame, refresh=True)
            else:
                console.print(frame)
            if not open_trials:
                break
            time.sleep(every)
    except KeyboardInterrupt:
        ignore_further_interrupts()
        if live is not None:
            live.stop()
        console.print("stopped watching; runs go on")
        return 130
    finally:
        if live is not None:
            live.stop()
    console.print("no trial pending or running")
    return 0


def _load(path: Path):
    from bocb.study import load_study

    return load_study(path)


def _tuning_rows_wanted(path: Path | None) -> bool:
    """Whether the study has a tuning state to show: an adaptive study (not a transfer one)."""
    from bocb.transfer.study import is_transfer_file

    return path is not None and not is_transfer_file(path) and _load(path).tuning == "adaptive"


def _tuning_rows(store: Store, path: Path | None) -> list[dict] | None:
    """Per-pair tuning state of an adaptive study (None for any other study or the whole store)."""
    if not _tuning_rows_wanted(path):
        return None
    study = _load(path)
    from bocb.tuning.adapter import states
    from bocb.tuning.views import state_rows

    return state_rows(states(store, study))


def plan(args: argparse.Namespace) -> int:
    from bocb import api

    found = api.plan(args.study, args.store, cache_dir=args.cache_dir or default_cache_dir(), data_dirs=data_dirs(),
                     download=args.download)
    study = found.study
    if study.tuning == "adaptive":
        from bocb.tuning.plan import plan_summary, print_plan

        expected, worst = _adaptive_this_machine(found, args)
        if args.json:
            print(json.dumps({**plan_summary(found.prepared, EFFECTIVE_FLOPS),
                              "this_machine": {"expected": expected.to_dict(), "worst": worst.to_dict()}}))
        else:
            print_plan(found.prepared, EFFECTIVE_FLOPS)
            sentence = expected.sentence()
            if expected.speeds:  # the same speeds priced the worst case
                from bocb.throughput import duration

                sentence += f"; at worst about {duration(worst.hours * 3600)}"
            Console(width=None if sys.stdout.isatty() else 160).print(escape(sentence))
        return 0
    wall = _this_machine(found, args)
    if args.json:
        print(json.dumps({
            "this_machine": wall.to_dict(),
            "study": study.name, "study_id": study.study_id, "tuning": study.tuning, "tier": study.tier,
            "trials": found.trials, "finished": found.finished, "pflop": found.flops / 1e15,
            "gpu_hours": found.gpu_hours, "effective_tflops": EFFECTIVE_FLOPS / 1e12,
            "disk_gb": {"final_weights": found.weights_bytes / 1e9, "store": found.store_bytes / 1e9,
                        "checkpoint_per_running_trial": found.checkpoint_bytes / 1e9},
            "per_backbone": {bb: {"trials": len(fs), "pflop": sum(fs) / 1e15, "processes_per_trial": found.processes.get(bb, 1)}
                             for bb, fs in found.per_backbone.items()},
            "skipped": dict(found.skipped),
        }))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=escape(f"plan: {study.name} ({study.study_id}), {study.tuning} tuning, tier {study.tier}"))
    for col in ("backbone", "trials", "PFLOP"):
        table.add_column(col, justify="right")
    for bb, fs in found.per_backbone.items():
        table.add_row(bb, str(len(fs)), f"{sum(fs) / 1e15:.3f}")
    console.print(table)
    console.print(escape(
        f"{found.trials} trials ({len(found.prepared.skipped)} pairs skipped), "
        f"{found.finished} already finished in {args.store}; compute {found.flops / 1e15:.2f} PFLOP "
        f"= about {_gpu_time(found.gpu_hours)} at {EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s "
        f"(one H100, bf16, measured on CIFAR ResNet-18; small models pack several per GPU)"
    ))
    several = {bb: n for bb, n in found.processes.items() if n > 1}
    if several:
        console.print(escape(
            "processes per trial: " + ", ".join(f"{bb} {n}" for bb, n in several.items())
            + " (one GPU each; the GPU-hours above count them all, so a trial takes about its share over that many GPUs)"))
    console.print(escape(
        f"disk: {_gb(found.weights_bytes)} of final weights (every trial's; fp32) and about "
        f"{_gb(found.store_bytes)} of store; while a trial runs its resume checkpoint adds up to "
        f"{_gb(found.checkpoint_bytes)} (deleted when it finishes)"))
    console.print(escape(wall.sentence()))
    for reason, n in found.skipped.items():
        console.print(escape(f"skipped ({n}): {reason}"))
    return 0


def _gpu_time(hours: float) -> str:
    from bocb.throughput import duration

    return f"{hours:,.1f} GPU-hours" if hours >= 1.5 else f"{duration(hours * 3600)} of one GPU"


def _speeds(args: argparse.Namespace, trials) -> dict:
    """This machine's training speed per backbone spec (bocb.throughput): from the store's finished
    trials here, and with --measure for the backbones of ``trials`` it lacks."""
    from bocb import throughput
    from bocb.store import open_existing

    speeds = {}
    if Path(args.store).exists():
        with open_existing(str(args.store)) as opened:
            speeds = throughput.from_store(opened)
    if args.measure:
        speeds.update(throughput.measure([t for t in trials
                                          if throughput.spec_key(t.backbone.to_dict()) not in speeds]))
    return speeds


def _this_machine(found, args: argparse.Namespace):
    """Hours of the trials left on this machine, one after another."""
    from bocb import throughput

    prepared = found.prepared
    return throughput.estimate(found.left, prepared.train_images, prepared.test_images, prepared.num_classes,
                               _speeds(args, found.left))


def _adaptive_this_machine(found, args: argparse.Namespace):
    """(expected, worst case) hours of an adaptive study on this machine: its trials are not known
    in advance, so each pair's planned FLOPs are priced at its backbone's speed."""
    from bocb import throughput
    from bocb.tuning.plan import plan_rows

    rows = plan_rows(found.prepared)
    speeds = _speeds(args, [r["spec"] for r in rows])
    return tuple(throughput.estimate_work([(r["spec"].backbone, r[k]) for r in rows], speeds,
                                          f"the expected adaptive tuning of {len(rows)} pairs" if k == "expected"
                                          else f"the worst-case adaptive tuning of {len(rows)} pairs")
                 for k in ("expected", "worst"))


EPOCH_EXPORT_KEYS = ("trial_id", "backbone", "optimizer", "lr", "weight_decay", "seed", "status")


def _epoch_rows(store: Store, trials: list[dict]):
    """``bocb export --epochs``: every stored epoch row of ``trials``, with the trial's settings."""
    import pandas as pd

    from bocb.store.base import EPOCH_COLUMNS

    out = [{**{k: t[k] for k in EPOCH_EXPORT_KEYS}, **{k: e[k] for k in EPOCH_COLUMNS if k != "trial_id"}}
           for t in trials for e in store.epochs(t["trial_id"])]
    return pd.DataFrame(out, columns=[*EPOCH_EXPORT_KEYS, *(k for k in EPOCH_COLUMNS if k != "trial_id")])


def _scores(store: Store, study_id: str | None):
    """``top1`` and ``val_top1`` of each finished trial as the analysis reads them (the final-epoch
    score; a diverged trial's last weights), so ``bocb analyze`` takes an export as it is."""
    import pandas as pd

    from bocb.analysis.from_store import results_frame

    try:
        return results_frame(store, study_id)[["trial_id", "top1", "val_top1"]]
    except ValueError:  # nothing finished yet
        return pd.DataFrame({"trial_id": pd.Series(dtype=str), "top1": pd.Series(dtype=float),
                             "val_top1": pd.Series(dtype=float)})


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def export(args: argparse.Namespace) -> int:
    import pandas as pd

    from bocb.commands.common import output_file

    if args.out is not None:
        output_file(args.out, "--out")
    if args.study is not None and args.study_option is not None:
        raise ValueError("give the study once: bocb export STUDY (--study is its old spelling)")
    study_id, _ = _study_id(args.study or args.study_option)
    with open_existing_store(args.store) as store:
        rows = store.trials(study_id)
        if args.epochs:
            frame = _epoch_rows(store, rows)
        else:
            frame = pd.DataFrame(rows)
            if rows:
                frame = frame.merge(_scores(store, study_id), on="trial_id", how="left")
    if args.format == "json":
        text = frame.to_json(orient="records")
        if args.out is None:
            print(text)
        else:
            args.out.write_text(text + "\n")
    elif args.format == "parquet":
        if args.out is None:
            raise ValueError("--format parquet needs --out FILE")
        frame.to_parquet(args.out, index=False)
    elif args.out is None:
        frame.to_csv(sys.stdout, index=False)
    else:
        frame.to_csv(args.out, index=False)
    if args.out is not None:  # stdout stays empty (the data went to the file); say where it went
        Console(stderr=True).print(escape(f"wrote {len(frame)} {'epoch' if args.epochs else 'trial'} rows to "
                                          f"{args.out} ({args.format})"), highlight=False)
    return 0
