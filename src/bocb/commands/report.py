"""``bocb report``: the HTML + Markdown report, from the paper's tables or a study in the store
(:func:`bocb.api.report` does the work)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bocb.commands.common import add_json_arg, add_ranking_arg, add_rule_args, add_store_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the coupling report (HTML + Markdown)")
    p.add_argument("study", nargs="?", type=Path, help="study file whose trials to report (default: the whole store)")
    p.add_argument("--paper", action="store_true", help="report on the paper's published tables instead")
    add_store_arg(p)
    add_json_arg(p, "the files written")
    p.add_argument("--out", type=Path, help="output folder (default: bocb-results/report-<name>)")
    add_rule_args(p)
    add_ranking_arg(p)
    p.add_argument("--metric", default="final", help="study reports: final (default) or best epoch top-1")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples when there are seeds")


def run(args: argparse.Namespace) -> int:
    from bocb import api

    files = api.report(args.study, args.store, args.out, paper=args.paper, rule=args.rule, gamma=args.gamma,
                       ranking=args.ranking, metric=args.metric, resamples=args.resamples)
    if args.json:
        print(json.dumps({"html": str(files.html), "markdown": str(files.markdown),
                          "figures": {k: str(v) for k, v in files.figures.items()}}))
    else:
        Console().print(escape(f"report: {files.html} (and {files.markdown})"))
    return 0
