"""``bocb analyze RESULTS.csv``: failure marks on any long-format results table.

``--flags-out`` writes every input row plus a boolean ``flagged`` column (a row is flagged when
its pair's mean over seeds, at the pair's best setting, falls under its backbone's threshold).
``--gamma`` defaults to 3 for both rules, the paper's CIFAR-100 value (method.md section 5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="flag failed backbone-optimizer pairs in a results table")
    p.add_argument("results", type=Path, help="CSV or Parquet with optimizer, backbone, top1 [seed, lr, weight_decay]")
    p.add_argument("--rule", default="fitted", help="fitted (median - max(0.75 IQR, gamma)) or paper (Eq. 1 literally)")
    p.add_argument("--gamma", type=float, default=3.0, help="the rule's floor (default 3)")
    p.add_argument("--flags-out", type=Path, help="write the input rows plus a boolean 'flagged' column here")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON line")


def run(args: argparse.Namespace) -> int:
    from bocb.analysis import compare_with_marks, flag, load_results, rule
    from bocb.commands.common import input_file, output_file

    if args.flags_out is not None:
        output_file(args.flags_out, "--flags-out")
    frame = load_results(input_file(args.results, "results file"))
    chosen = rule(args.rule, gamma=args.gamma)
    pairs = flag(frame, chosen)
    flags = pairs[["optimizer", "backbone", "flagged"]]
    out = frame.merge(flags, on=["optimizer", "backbone"], how="left")
    out["flagged"] = out["flagged"].fillna(False).astype(bool)
    if args.flags_out:
        if args.flags_out.suffix == ".parquet":
            out.to_parquet(args.flags_out, index=False)
        else:
            out.to_csv(args.flags_out, index=False)
    counts = {"rule": args.rule, "gamma": args.gamma, "pairs": len(pairs), "flagged": int(pairs["flagged"].sum())}
    if "mark" in frame.columns:
        counts.update(compare_with_marks(pairs, frame.drop_duplicates(["optimizer", "backbone"])))
    if args.json:
        print(json.dumps(counts))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"rule: {chosen.describe()}")
    table = Table(title=f"{counts['flagged']} of {counts['pairs']} pairs flagged")
    for col in ("backbone", "flagged optimizers"):
        table.add_column(col)
    for backbone, group in pairs.groupby("backbone", sort=False):
        names = ", ".join(f"{r.optimizer} ({r.top1:.2f})" for r in group.itertuples() if r.flagged)
        table.add_row(escape(str(backbone)), escape(names) or "-")
    console.print(table)
    if "hits" in counts:
        console.print(f"against the table's marks: {counts['hits']} of {counts['marked']} marked cells flagged, "
                      f"{counts['false_alarms']} others")
    if args.flags_out:
        console.print(f"wrote {escape(str(args.flags_out))}")
    return 0
