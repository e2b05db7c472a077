"""``bocb probe --backbone X --data D [--budget 30m | --epochs N]``: which optimizer for your backbone,
from a short adaptive search that keeps to a time budget (:func:`bocb.api.probe` does the work).

Exit status: 0 with an answer (some optimizer finished a trial), 1 when the budget ran out before
any did (the same command continues), 2 for bad input, 130 on Ctrl-C (running trials are handed
back and resume on the next probe).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bocb.commands.common import add_data_args, add_log_args, data_dirs, default_cache_dir, plugins_of

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_budget(text: str) -> float:
    """``90s``, ``10m``, ``1.5h`` or a bare number of seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"--budget takes a duration such as 90s, 10m or 1h (a bare number is seconds), got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="which optimizer for your backbone: a short tuned search within a time budget")
    p.add_argument("--backbone", required=True,
                   help="a zoo name, timm:NAME or package.module:builder (your model)")
    add_data_args(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--budget", help="wall time for the whole probe, e.g. 10m, 1h (default 30m); sizes epochs "
                                       "and images per class from a measured throughput")
    size.add_argument("--epochs", type=int, help="epochs per full-budget trial instead of a budget (all images)")
    p.add_argument("--optimizers", help="comma-separated optimizers to probe (default: AdamW,LAMB,Adan,SGD-M)")
    p.add_argument("--out", type=Path, help="the probe's folder (default: bocb-results/probe-<backbone>); the same "
                                            "command again continues the probe there")
    p.add_argument("--slots", type=int, default=1, help="trials at once (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--json", action="store_true", help="also print the answer as JSON (the last stdout line)")
    add_log_args(p, "the probe's folder, --out")


def run(args: argparse.Namespace) -> int:
    from bocb import api
    from bocb.commands.run import RunDisplay
    from bocb.probe.run import Measured, Sized
    from bocb.report.probe import answer_lines

    started = getattr(args, "started", None) or time.time()  # set by bocb.cli.main as it begins
    budget = parse_budget(args.budget) if args.budget is not None else None
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()] if args.optimizers else None
    console = Console(width=None if sys.stdout.isatty() else 160)
    display = RunDisplay(console)

    def progress(event) -> None:
        if isinstance(event, Measured):
            s = event.throughput
            console.print(f"measured in {event.seconds:.0f} s: {1 / s.train_s:.0f} training images/s, "
                          f"{1 / s.eval_s if s.eval_s else float('inf'):.0f} test images/s, {s.launch_s:.1f} s to start a trial")
        elif isinstance(event, Sized):
            p = event.sizing
            what = "continuing" if event.resumed else "probing"
            per = "all" if p.train_per_class is None else p.train_per_class
            expected = f", expected {p.expected_s / 60:.1f} min" if p.expected_s == p.expected_s and p.expected_s > 0 else ""
            console.print(f"{what}: {p.epochs} epochs on {per} training images per class{expected} ({escape(p.why)}); "
                          f"study {escape(str(event.study))}")
        else:
            display(event)

    try:
        answer = api.probe(args.backbone, args.data, budget_s=budget, epochs=args.epochs, optimizers=optimizers,
                       out=args.out, slots=args.slots, device=args.device, label_column=args.label_column, image_column=args.image_column,
                       cache_dir=args.cache_dir or default_cache_dir(), data_dirs=data_dirs(), download=args.download,
                       plugins=tuple(plugins_of(args)), progress=progress, started=started, log=args.log,
                       log_dir=args.log_dir)
    except KeyboardInterrupt:
        display.stop()
        console.print("[yellow]stopped: running trials were handed back; the same command continues the probe[/]")
        return 130
    finally:
        display.stop()
    table = Table(title=f"bocb probe: {answer.backbone} ({answer.family}) on {answer.data}")
    for col in ("optimizer", "lr", "wd", "top-1 %", "epoch", "search", "trials", "paper gap"):
        table.add_column(col, justify="left" if col in ("optimizer", "search") else "right")
    for r in answer.optimizers:
        name = f"[dim]{r.optimizer} (fails)[/]" if r.flagged else (
            f"[bold green]{r.optimizer}[/]" if answer.use and r.optimizer == answer.use.optimizer else r.optimizer)
        table.add_row(name, "-" if r.lr is None else f"{r.lr:g}", "-" if r.weight_decay is None else f"{r.weight_decay:g}",
                      "-" if r.score is None else f"{r.score:.1f}", "-" if r.epoch is None else str(r.epoch),
                      escape(r.state), str(r.trials), "-" if r.paper_gap is None else f"{r.paper_gap:.1f}")
    console.print(table)
    for line in answer_lines(answer):
        console.print(escape(line))
    console.print(f"page: {escape(str(answer.html))}; wall time {answer.wall_s:.0f} s"
                  + (f" of a {answer.budget_s:.0f} s budget" if answer.budget_s is not None else ""))
    if args.json:
        sys.stdout.write(answer.to_json() + "\n")
    return 0 if answer.use is not None else 1
