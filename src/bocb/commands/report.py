"""``bocb report``: the HTML + Markdown report, from the paper's tables or a study in the store."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bocb.commands.common import add_ranking_arg, add_rule_args
from bocb.store import DEFAULT_STORE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the coupling report (HTML + Markdown)")
    p.add_argument("study", nargs="?", type=Path, help="study file whose trials to report (default: the whole store)")
    p.add_argument("--paper", action="store_true", help="report on the paper's published tables instead")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--out", type=Path, help="output folder (default: bocb-results/report-<name>)")
    add_rule_args(p)
    add_ranking_arg(p)
    p.add_argument("--metric", default="final", help="study reports: final (default) or best epoch top-1")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples when there are seeds")


def run(args: argparse.Namespace) -> int:
    from bocb.provenance import code_version
    from bocb.report import build_report
    from bocb.transfer.study import is_transfer_file

    today = datetime.date.today().isoformat()
    if args.paper:
        from bocb import paper

        results, hparams, name = paper.top1(), paper.best_hparams(), "paper"
        provenance = {
            "source": "the BOCB paper's Table 1 (CIFAR-100 top-1, mean of 3 runs) and Tables A4/A5 "
                      "(chosen lr/wd), arXiv 2410.06373v1, shipped in bocb/paper/data",
            "trials": f"{len(results)} published cells (per-seed results were not published)",
            "code_version": code_version(), "date": today,
            "cost": "the paper's tables shipped here (1, A4, A5 and Table 4's order) hold no per-optimizer "
                    "time or memory, so the ranking's cost component is missing",
        }
        title = "BOCB paper, CIFAR-100: backbone-optimizer coupling"
        extra, cost = None, None  # the paper publishes no per-optimizer time or memory
    elif args.study is not None and is_transfer_file(args.study):
        # The same default rule as every other table: the paper's gamma 3 for its transfer table
        # belongs to its literal Eq. (1), which flags far more than the paper marks (see failure.py).
        results, hparams, name, provenance, title, extra = _from_transfer(args, today)
        cost = _cost(results)
    else:
        results, hparams, name, provenance, title, extra = _from_store(args, today)
        cost = _cost(results)
    out = args.out or Path("bocb-results") / f"report-{name}"
    paths = build_report(
        results, out, title=title, hparams=hparams, rule_name=args.rule, gamma=args.gamma,
        ranking=args.ranking, cost=cost, provenance=provenance, n_resamples=args.resamples, extra_sections=extra,
    )
    Console().print(escape(f"report: {paths['html']} (and {paths['markdown']})"))
    return 0


def _cost(results):
    """The measured cost per optimizer (None when the trials recorded neither time nor memory)."""
    from bocb.analysis import cost_table

    try:
        return cost_table(results)
    except ValueError:
        return None


def _from_store(args: argparse.Namespace, today: str):
    from bocb.analysis import rule
    from bocb.analysis.from_store import excluded, results_frame, snapshot_errors, weights_frame
    from bocb.analysis.robustness import best_settings
    from bocb.commands.common import open_existing_store

    study = None
    if args.study is not None:
        from bocb.study import load_study

        study = load_study(args.study)
    with open_existing_store(args.store) as store:
        study_id = study.study_id if study else None
        results = results_frame(store, study_id, metric=args.metric)
        left_out = excluded(store, study_id)
        weights = weights_frame(store, study_id)
        weight_errors = snapshot_errors(store, study_id)
        versions = sorted({t["code_version"] for t in store.trials(study_id) if t["code_version"]})
        tuned = None
        if study is not None and study.tuning == "adaptive":
            from bocb.tuning.adapter import states

            tuned = states(store, study)
    # Robustness needs tuned settings: with one setting per pair there is nothing to measure.
    hparams = None
    if study is None or study.tuning in ("grid", "adaptive"):
        hparams = best_settings(results)
    name = study.name if study else "store"
    described = (f"{study.name} ({study.study_id}), {study.tuning} tuning, tier {study.tier}, file {study.path}"
                 if study else "all studies in the store")
    provenance = _provenance(args, today, described, results, left_out, versions, "test top-1")
    extra = _not_results(left_out)
    if tuned is not None:
        from bocb.report.adaptive import adaptive_section

        extra.append(adaptive_section(tuned))
    from bocb.report.weights import weights_sections

    extra.extend(weights_sections(results, weights, rule(args.rule, args.gamma), errors=weight_errors,
                                  n_resamples=args.resamples))
    title = f"bocb study '{name}': backbone-optimizer coupling"
    return results, hparams, name, provenance, title, extra or None


def _from_transfer(args: argparse.Namespace, today: str):
    """A transfer study: the pre-train x fine-tune table (columns are pre-trained models)."""
    from bocb.analysis import flag, rule
    from bocb.analysis.from_store import excluded, snapshot_errors, transfer_frame, weights_frame
    from bocb.analysis.robustness import best_settings
    from bocb.commands.common import open_existing_store
    from bocb.report.transfer import transfer_section
    from bocb.report.weights import weights_sections
    from bocb.transfer.study import load_transfer

    import pandas as pd

    study = load_transfer(args.study)
    with open_existing_store(args.store) as store:
        results = transfer_frame(store, study.study_id, metric=args.metric)
        left_out = excluded(store, study.study_id)
        finetuned = weights_frame(store, study.study_id)
        pre_ids = results.drop_duplicates("backbone").set_index("backbone")["pretrain_trial"].dropna().to_dict()
        pretrained = weights_frame(store, None, snapshot_ids=set(pre_ids.values()))
        weight_errors = snapshot_errors(store, study.study_id)
        versions = sorted({t["code_version"] for t in store.trials(study.study_id) if t["code_version"]})
    chosen = rule(args.rule, args.gamma)
    flags = flag(results, chosen)
    hparams = best_settings(results) if study.tuning == "grid" else None
    mode = f", {study.finetune} fine-tuning" if study.task == "classification" else ""
    described = (f"{study.name} ({study.study_id}), transfer ({study.task}{mode}), {study.tuning} tuning, "
                 f"tier {study.tier}, file {study.path}")
    from bocb.tasks import TASKS

    measure = "test top-1" if study.task == "classification" else TASKS.get(study.task).metric_label.removesuffix(" (%)")
    provenance = _provenance(args, today, described, results, left_out, versions, measure)
    extra = [transfer_section(results, flags, chosen, finetuned, pretrained, pre_ids), *_not_results(left_out)]
    # Weight sections per pre-trained model (the table's columns). A fine-tuned model's reference is
    # its pre-trained model, so that snapshot takes the place the random init has in a study report.
    label_of = {sid: label for label, sid in pre_ids.items()}
    reference = pretrained.assign(source="init", optimizer="init", pretrained=None,
                                  backbone=pretrained["snapshot_id"].map(label_of))
    relabelled = pd.concat([finetuned[finetuned["source"] == "final"].assign(backbone=lambda f: f["pretrained"]),
                            reference], ignore_index=True)
    extra.extend(weights_sections(results, relabelled, chosen, errors=weight_errors, n_resamples=args.resamples,
                                  reference="pre-trained"))
    title = f"bocb transfer study '{study.name}': pre-training x fine-tuning optimizers"
    return results, hparams, study.name, provenance, title, extra


def _provenance(args: argparse.Namespace, today: str, study: str, results, left_out, versions: list[str],
                measure: str) -> dict[str, str]:
    from bocb.provenance import code_version

    return {
        "source": f"bocb store {args.store}",
        "study": study,
        "trials": f"{len(results)} finished (done or diverged), {len(left_out)} not results",
        "epoch": f"{args.metric}-epoch {measure} per trial",
        "code_version": f"report {code_version()}; trials {', '.join(versions) or 'unknown'}",
        "date": today,
    }


def _not_results(left_out) -> list:
    """The section listing failed, pending, running or skipped trials (none when there are none)."""
    from bocb.report import Section, Table, Text

    if not len(left_out):
        return []
    return [Section(
        "Trials that are not results",
        (Text("Failed, pending, running or skipped trials are left out of every statistic above, and so are "
              "paused ones: adaptive-tuning candidates stopped at a low-fidelity rung."),
         Table(left_out.set_index("trial_id").astype(str))),
    )]
