"""``bocb report``: the HTML + Markdown report, from the paper's tables or a study in the store."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from rich.console import Console

from bocb.store import DEFAULT_STORE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the coupling report (HTML + Markdown)")
    p.add_argument("study", nargs="?", type=Path, help="study file whose trials to report (default: the whole store)")
    p.add_argument("--paper", action="store_true", help="report on the paper's published tables instead")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--out", type=Path, help="output folder (default: bocb-results/report-<name>)")
    p.add_argument("--rule", default="fitted", help="failure rule: fitted or paper (default fitted)")
    p.add_argument("--gamma", type=float, default=None, help="the rule's floor (default: the rule's own, fitted 2, paper 3)")
    p.add_argument("--metric", default="final", help="study reports: final (default) or best epoch top-1")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples when there are seeds")


def run(args: argparse.Namespace) -> int:
    from bocb.provenance import code_version
    from bocb.report import build_report

    today = datetime.date.today().isoformat()
    if args.paper:
        from bocb import paper

        results, hparams, name = paper.top1(), paper.best_hparams(), "paper"
        provenance = {
            "source": "the BOCB paper's Table 1 (CIFAR-100 top-1, mean of 3 runs) and Tables A4/A5 "
                      "(chosen lr/wd), arXiv 2410.06373v1, shipped in bocb/paper/data",
            "trials": f"{len(results)} published cells (per-seed results were not published)",
            "code_version": code_version(), "date": today,
        }
        title = "BOCB paper, CIFAR-100: backbone-optimizer coupling"
        extra = None
    else:
        results, hparams, name, provenance, title, extra = _from_store(args, today)
    out = args.out or Path("bocb-results") / f"report-{name}"
    paths = build_report(
        results, out, title=title, hparams=hparams, rule_name=args.rule, gamma=args.gamma,
        provenance=provenance, n_resamples=args.resamples, extra_sections=extra,
    )
    Console().print(f"report: {paths['html']} (and {paths['markdown']})")
    return 0


def _from_store(args: argparse.Namespace, today: str):
    from bocb.analysis.from_store import excluded, results_frame
    from bocb.analysis.robustness import best_settings
    from bocb.commands.common import open_existing_store
    from bocb.provenance import code_version
    from bocb.report import Section, Table, Text

    study = None
    if args.study is not None:
        from bocb.study import load_study

        study = load_study(args.study)
    with open_existing_store(args.store) as store:
        study_id = study.study_id if study else None
        results = results_frame(store, study_id, metric=args.metric)
        left_out = excluded(store, study_id)
        versions = sorted({t["code_version"] for t in store.trials(study_id) if t["code_version"]})
    # Robustness needs a tuned grid: with one setting per pair there is nothing to measure.
    hparams = None
    if study is None or study.tuning == "grid":
        hparams = best_settings(results)
    name = study.name if study else "store"
    provenance = {
        "source": f"bocb store {args.store}",
        "study": f"{study.name} ({study.study_id}), {study.tuning} tuning, tier {study.tier}, file {study.path}"
                 if study else "all studies in the store",
        "trials": f"{len(results)} finished (done or diverged), {len(left_out)} not results",
        "epoch": f"{args.metric}-epoch test top-1 per trial",
        "code_version": f"report {code_version()}; trials {', '.join(versions) or 'unknown'}",
        "date": today,
    }
    extra = []
    if len(left_out):
        extra.append(Section(
            "Trials that are not results",
            (Text("Failed, pending, running or skipped trials are left out of every statistic above."),
             Table(left_out.set_index("trial_id").astype(str))),
        ))
    title = f"bocb study '{name}': backbone-optimizer coupling"
    return results, hparams, name, provenance, title, extra or None
