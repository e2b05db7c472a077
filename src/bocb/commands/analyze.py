"""``bocb analyze RESULTS.csv``: failure marks on any long-format results table.

``--flags-out`` writes every input row plus a boolean ``flagged`` column (a row is flagged when
its pair's mean over seeds, at the pair's best setting, falls under its backbone's threshold) and a
``failure_rule`` column naming the rule and its gamma. Without ``--rule``/``--gamma`` the rule is
:data:`bocb.analysis.failure.DEFAULT_RULE`, the same one ``report`` and ``recommend`` use; a
named rule without ``--gamma`` keeps its own floor (fitted 2, paper 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bocb.commands.common import add_rule_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="flag failed backbone-optimizer pairs in a results table")
    p.add_argument("results", type=Path,
                   help="CSV or Parquet with optimizer, backbone, top1 [seed, lr, weight_decay, status] "
                        "(bocb export writes one)")
    add_rule_args(p)
    p.add_argument("--flags-out", type=Path, help="write the input rows plus a boolean 'flagged' column here")
    p.add_argument("--json", action="store_true",
                   help="print the counts and the flagged pairs (with their cut-offs) as one JSON document")


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
    out["failure_rule"] = chosen.label
    if args.flags_out:
        if args.flags_out.suffix == ".parquet":
            out.to_parquet(args.flags_out, index=False)
        else:
            out.to_csv(args.flags_out, index=False)
    counts = {"rule": chosen.name, "gamma": chosen.floor, "pairs": len(pairs), "flagged": int(pairs["flagged"].sum()),
              "rows_left_out": frame.attrs.get("left_out", 0)}
    if "mark" in frame.columns:
        counts.update(compare_with_marks(pairs, frame.drop_duplicates(["optimizer", "backbone"])))
    if args.json:
        flagged = pairs[pairs["flagged"]]
        counts["flagged_pairs"] = [
            {"optimizer": r.optimizer, "backbone": r.backbone, "top1": round(float(r.top1), 4),
             "threshold": round(float(r.threshold), 4)} for r in flagged.itertuples()]
        print(json.dumps(counts))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"rule: {chosen.describe()}")
    if counts["rows_left_out"]:
        console.print(f"left out {counts['rows_left_out']} row(s) that are not results (status other than done or "
                      "diverged: pending, paused, failed, ...)")
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
