"""``bocb recommend --backbone NAME``: optimizers to try first, from the paper and/or your store
(:func:`bocb.api.recommend` does the work)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rich.console import Console
from rich.table import Table

from bocb.commands.common import add_rule_args
from bocb.store import DEFAULT_STORE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="optimizers to try first for a backbone or design family")
    p.add_argument("--backbone", required=True, help="a zoo/paper name, or design words ('classical CNN', 'hierarchical attention')")
    p.add_argument("--evidence", choices=("paper", "store", "both"), default="paper",
                   help="the paper's Table 1, your store's finished trials, or both (default: paper)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"the store for --evidence store/both (default: {DEFAULT_STORE})")
    p.add_argument("--study", help="a study file: only its trials from the store")
    add_rule_args(p)
    p.add_argument("--top", type=int, default=10, help="how many optimizers to show (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print the answer as one JSON document on stdout (the table goes to stderr)")


def run(args: argparse.Namespace) -> int:
    from bocb import api

    found = api.recommend(args.backbone, evidence=args.evidence, store=args.store, rule=args.rule, gamma=args.gamma,
                          study=args.study)
    # With --json, stdout holds the JSON alone (the CLI's convention): the table goes to stderr.
    console = Console(stderr=True) if args.json else Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"optimizers to try first for {args.backbone!r}")
    for col in ("#", "optimizer", "expected gap to best (points)", "failure risk", "usual lr", "usual wd"):
        table.add_column(col, justify="right" if col != "optimizer" else "left")
    for i, r in enumerate(found.optimizers[:args.top], 1):
        gap = f"{r.expected_gap:.2f}" + (f" ± {r.gap_std:.2f}" if r.backbones > 1 else "")
        table.add_row(str(i), r.optimizer, gap, f"{100 * r.failure_risk:.0f}% of {r.backbones}",
                      f"{r.lr:g}", f"{r.weight_decay:g}")
    console.print(table)
    # What to avoid is shown whatever --top cuts: the paper's failures are half of its answer.
    avoid = sorted((r for r in found.optimizers if r.failure_risk >= 0.5),
                   key=lambda r: (-r.failure_risk, -r.expected_gap))  # the surest failure first
    if avoid:
        console.print("avoid: " + "; ".join(
            f"{r.optimizer} (flagged by the failure rule in {r.failure_risk * r.backbones:.0f} of {r.backbones} "
            f"evidence column{'s' if r.backbones != 1 else ''}, {r.expected_gap:.1f} points below the best)"
            for r in avoid), highlight=False)
    console.print(f"evidence: {found.evidence}; ranked by failure risk, then gap.")
    if args.json:
        answer = dataclasses.asdict(found)
        for o in answer["optimizers"]:  # an optimizer without a known setting: null, not NaN (strict JSON)
            o.update({k: None if v != v else round(v, 6) for k, v in o.items() if isinstance(v, float)})
        sys.stdout.write(json.dumps(answer, allow_nan=False) + "\n")
    return 0
