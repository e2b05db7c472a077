"""What a report is built from: a study in the store, a transfer study, or the paper's tables.

Each ``*_inputs`` function reads what it needs (the store is opened read-only and closed before the
report is drawn), analyses the results once (:class:`~bocb.report.context.ReportAnalysis`) and
returns a :class:`ReportInputs` for :func:`bocb.report.build_report`; :func:`bocb.api.report` is the
caller. Provenance states the source, the study, the trial counts, the epoch and the code versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bocb.compute import EFFECTIVE_FLOPS
from bocb.report.budget import budget_of
from bocb.report.context import ReportAnalysis
from bocb.report.document import Section


@dataclass(frozen=True)
class ReportInputs:
    """Everything :func:`bocb.report.build_report` needs besides the output folder."""

    analysis: ReportAnalysis
    hparams: pd.DataFrame | None
    name: str
    title: str
    provenance: dict[str, str]
    cost: pd.DataFrame | None = None
    extra: list[Section] | None = None
    lead: list[Section] | None = None  # before the data section: the answer
    banner: str = ""  # above the contents: a toy or reduced budget


def paper_inputs(today: str, rule: str | None, gamma: float | None) -> ReportInputs:
    """The paper's Table 1 (CIFAR-100 top-1) and Tables A4/A5 (chosen lr/wd)."""
    from bocb import paper
    from bocb.provenance import code_version

    results, hparams = paper.top1(), paper.best_hparams()
    provenance = {
        "source": "the BOCB paper's Table 1 (CIFAR-100 top-1, mean of 3 runs) and Tables A4/A5 "
                  "(chosen lr/wd), arXiv 2410.06373v1, shipped in bocb/paper/data",
        "trials": f"{len(results)} published cells (per-seed results were not published)",
        "code_version": code_version(), "date": today,
        "cost": "the paper's tables shipped here (1, A4, A5 and Table 4's order) hold no per-optimizer "
                "time or memory, so the ranking's cost component is missing",
    }
    # The paper publishes no per-optimizer time or memory: no cost.
    from bocb.report.answer import answer_section

    analysis = ReportAnalysis.of(results, rule, gamma)
    lead = answer_section(analysis, "grid", None, None,
                          evidence="the paper's: grid-tuned, each cell the mean of 3 runs whose spread is not published")
    return ReportInputs(analysis, hparams, "paper", "BOCB paper, CIFAR-100: backbone-optimizer coupling", provenance,
                        lead=[lead])


def _cost(results: pd.DataFrame) -> pd.DataFrame | None:
    """The measured cost per optimizer (None when the trials recorded neither time nor memory)."""
    from bocb.analysis import cost_table

    try:
        return cost_table(results)
    except ValueError:
        return None


def store_inputs(study_file: Path | None, store: str, today: str, rule: str | None, gamma: float | None,
                 metric: str, resamples: int) -> ReportInputs:
    """A study in the store (``study_file``; None: every trial in the store)."""
    from bocb.analysis.from_store import excluded, results_frame, snapshot_errors, weights_frame
    from bocb.analysis.robustness import best_settings
    from bocb.store import open_existing

    study = None
    if study_file is not None:
        from bocb.study import load_study

        study = load_study(study_file)
    with open_existing(store) as opened:
        study_id = study.study_id if study else None
        analysis = ReportAnalysis.of(results_frame(opened, study_id, metric=metric), rule, gamma)
        left_out = excluded(opened, study_id)
        weights = weights_frame(opened, study_id)
        weight_errors = snapshot_errors(opened, study_id)
        versions = sorted({t["code_version"] for t in opened.trials(study_id) if t["code_version"]})
        tuned = None
        if study is not None and study.tuning == "adaptive":
            from bocb.tuning.adapter import states

            tuned = states(opened, study)
        from bocb.report.curves import curve_runs

        curves = curve_runs(opened, analysis.results, analysis.flags)
        specs = opened.specs(study_id)
    # One spec per pair (its best-tuned run's) says what budget the results were trained with.
    chosen = [specs[t] for t in analysis.results.runs.drop_duplicates(["optimizer", "backbone"])["trial_id"]
              if t in specs]
    budget = budget_of(chosen, EFFECTIVE_FLOPS)
    chance = {s["backbone"]["short"]: 100.0 / s["backbone"]["num_classes"] for s in chosen
              if s.get("backbone", {}).get("num_classes")}
    # Robustness needs tuned settings: with one setting per pair there is nothing to measure.
    hparams = None
    if study is None or study.tuning in ("grid", "adaptive"):
        hparams = best_settings(analysis.results)
    name = study.name if study else "store"
    described = (f"{study.name} ({study.study_id}), {study.tuning} tuning, tier {study.tier}, file {study.path}"
                 if study else "all studies in the store")
    provenance = _provenance(store, metric, today, described, analysis.frame, left_out, versions, "test top-1")
    extra = _not_results(left_out)
    if tuned is not None:
        from bocb.report.adaptive import adaptive_section

        extra.append(adaptive_section(tuned))
    from bocb.report.curves import curves_section
    from bocb.report.weights import weights_sections

    extra.append(curves_section(curves))
    extra.extend(weights_sections(analysis, weights, errors=weight_errors, n_resamples=resamples))
    title = f"bocb study '{name}': backbone-optimizer coupling"
    from bocb import paper
    from bocb.report.answer import answer_section, versus_section

    lead = answer_section(analysis, study.tuning if study else None, budget, paper.top1(), chance=chance)
    versus = versus_section(analysis, paper.top1())
    if versus is not None:
        extra.insert(0, versus)
    return ReportInputs(analysis, hparams, name, title, provenance, _cost(analysis.frame), extra or None,
                        lead=[lead], banner=budget.banner())


def transfer_inputs(study_file: Path, store: str, today: str, rule: str | None, gamma: float | None,
                    metric: str, resamples: int) -> ReportInputs:
    """A transfer study: the pre-train x fine-tune table (columns are pre-trained models). The same
    default rule as every other table: the paper's gamma 3 for its transfer table belongs to its
    literal Eq. (1), which flags far more than the paper marks (see bocb.analysis.failure)."""
    from bocb.analysis.from_store import excluded, snapshot_errors, transfer_frame, weights_frame
    from bocb.analysis.robustness import best_settings
    from bocb.report.transfer import transfer_section
    from bocb.report.weights import weights_sections
    from bocb.store import open_existing
    from bocb.transfer.study import load_transfer

    study = load_transfer(study_file)
    with open_existing(store) as opened:
        results = transfer_frame(opened, study.study_id, metric=metric)
        left_out = excluded(opened, study.study_id)
        finetuned = weights_frame(opened, study.study_id)
        pre_ids = results.drop_duplicates("backbone").set_index("backbone")["pretrain_trial"].dropna().to_dict()
        pretrained = weights_frame(opened, None, snapshot_ids=set(pre_ids.values()))
        pre_specs = opened.specs(None)
        weight_errors = snapshot_errors(opened, study.study_id)
        versions = sorted({t["code_version"] for t in opened.trials(study.study_id) if t["code_version"]})
    analysis = ReportAnalysis.of(results, rule, gamma)
    hparams = best_settings(analysis.results) if study.tuning == "grid" else None
    mode = f", {study.finetune} fine-tuning" if study.task == "classification" else ""
    described = (f"{study.name} ({study.study_id}), transfer ({study.task}{mode}), {study.tuning} tuning, "
                 f"tier {study.tier}, file {study.path}")
    from bocb.tasks import TASKS

    measure = "test top-1" if study.task == "classification" else TASKS.get(study.task).metric_label.removesuffix(" (%)")
    provenance = _provenance(store, metric, today, described, results, left_out, versions, measure)
    extra = [transfer_section(analysis.frame, analysis.flags, analysis.chosen, finetuned, pretrained, pre_ids),
             *_not_results(left_out)]
    # Weight sections per pre-trained model (the table's columns). A fine-tuned model's reference is
    # its pre-trained model, so that snapshot takes the place the random init has in a study report.
    label_of = {sid: label for label, sid in pre_ids.items()}
    reference = pretrained.assign(source="init", optimizer="init", pretrained=None,
                                  backbone=pretrained["snapshot_id"].map(label_of))
    relabelled = pd.concat([finetuned[finetuned["source"] == "final"].assign(backbone=lambda f: f["pretrained"]),
                            reference], ignore_index=True)
    extra.extend(weights_sections(analysis, relabelled, errors=weight_errors, n_resamples=resamples,
                                  reference="pre-trained"))
    title = f"bocb transfer study '{study.name}': pre-training x fine-tuning optimizers"
    from bocb.report.answer import answer_section

    # The paper's CIFAR-100 table is not a transfer result: no comparison column. The budget is the
    # pre-training's (the fine-tuning specs are another task's), which a toy transfer demo shares.
    budget = budget_of([pre_specs[t] for t in results["pretrain_trial"].dropna().unique() if t in pre_specs])
    lead = answer_section(analysis, study.tuning, budget, None)
    return ReportInputs(analysis, hparams, study.name, title, provenance, _cost(analysis.frame), extra, lead=[lead],
                        banner=budget.banner())


def _provenance(store: str, metric: str, today: str, study: str, results: pd.DataFrame, left_out: pd.DataFrame,
                versions: list[str], measure: str) -> dict[str, str]:
    from bocb.provenance import code_version

    return {
        "source": f"bocb store {store}",
        "study": study,
        "trials": f"{len(results)} finished (done or diverged), {len(left_out)} not results",
        "epoch": f"{metric}-epoch {measure} per trial",
        "code_version": f"report {code_version()}; trials {', '.join(versions) or 'unknown'}",
        "date": today,
    }


def _not_results(left_out: pd.DataFrame) -> list[Section]:
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
