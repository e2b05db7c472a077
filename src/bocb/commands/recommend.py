"""``bocb recommend --backbone NAME``: optimizers to try first, from the paper and/or your store."""

from __future__ import annotations

import argparse
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
    p.add_argument("--store", default=DEFAULT_STORE)
    add_rule_args(p)
    p.add_argument("--top", type=int, default=10, help="how many optimizers to show (default 10)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from bocb import paper
    from bocb.analysis.recommend import recommend

    frames, settings = [], None
    if args.evidence in ("paper", "both"):
        frames.append(paper.top1()[["optimizer", "backbone", "top1"]])
        settings = paper.best_hparams()
    if args.evidence in ("store", "both"):
        from bocb.analysis.from_store import results_frame
        from bocb.commands.common import open_existing_store

        with open_existing_store(args.store) as store:
            mine = results_frame(store, None)
        # The paper's cells and a study's trials are different experiments: keep them apart.
        mine = mine.assign(backbone=mine["backbone"] + (" (yours)" if args.evidence == "both" else ""))
        frames.append(mine[["optimizer", "backbone", "top1", "seed", "lr", "weight_decay"]])
    results = pd.concat(frames, ignore_index=True)
    ranked, evidence = recommend(results, args.backbone, failure_rule=args.rule, gamma=args.gamma,
                                  settings=settings)
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"optimizers to try first for {args.backbone!r}")
    for col in ("#", "optimizer", "expected gap to best (points)", "failure risk", "usual lr", "usual wd"):
        table.add_column(col, justify="right" if col != "optimizer" else "left")
    for i, r in enumerate(ranked.head(args.top).itertuples(), 1):
        gap = f"{r.expected_gap:.2f}" + (f" ± {r.gap_std:.2f}" if r.backbones > 1 else "")
        table.add_row(str(i), r.optimizer, gap, f"{100 * r.failure_risk:.0f}% of {r.backbones}",
                      f"{r.lr:g}", f"{r.weight_decay:g}")
    console.print(table)
    console.print(f"evidence: {evidence}; ranked by failure risk, then gap.")
    return 0
