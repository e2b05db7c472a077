"""The report's frame: the analysis every section reads (:class:`ReportAnalysis`), what the data
is (first section) and the paper's known gaps (last section).

The provenance comes from the caller (:func:`bocb.report.build_report`'s ``provenance``); the
report never guesses it. The keys in :data:`EXPECTED` are always shown, as "not given" when missing,
so a reader sees what is unknown; any other keys follow in the caller's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from bocb.analysis import FailureRule, Results, flag, rule
from bocb.analysis.results import PAIR, selection_column, selection_rule
from bocb.report.document import Section, Table, Text

EXPECTED = ("source", "study", "trials", "epoch", "code_version", "date")
NOT_GIVEN = "not given"


@dataclass(frozen=True)
class ReportAnalysis:
    """What every section of one report reads, computed once and handed to each.

    ``results``: the validated results with their best-tuned runs, pair means and table cached
    (:class:`bocb.analysis.Results`); ``chosen``: the failure rule; ``flags``: :func:`bocb.analysis.flag`
    of the results under it. Building a report used to validate the frame and choose each pair's
    best setting once per statistic (18 and 16 times for a grid study with no weights); with this
    object each happens once per results frame (per metric).
    """

    results: Results
    chosen: FailureRule
    flags: pd.DataFrame

    @classmethod
    def of(cls, results: pd.DataFrame | Results, failure_rule: FailureRule | str | None = None,
           gamma: float | None = None) -> ReportAnalysis:
        """The analysis of ``results`` under ``failure_rule`` (a rule or its name; None: the shared
        ``DEFAULT_RULE``) with ``gamma`` as its floor (None: the rule's own)."""
        checked = Results.of(results)
        if isinstance(failure_rule, FailureRule):
            chosen = failure_rule if gamma is None else replace(failure_rule, floor=float(gamma))
        else:
            chosen = rule(failure_rule, gamma)
        return cls(checked, chosen, flag(checked, chosen))

    @property
    def frame(self) -> pd.DataFrame:
        """The validated results frame, one row per run."""
        return self.results.frame


def _value(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _span(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def data_section(analysis: ReportAnalysis, provenance: Mapping[str, object]) -> Section:
    """Provenance as given, then counts derived from the analysed results."""
    results = analysis.frame
    keys = list(EXPECTED) + [k for k in provenance if k not in EXPECTED]
    given = pd.DataFrame(
        {"value": [_value(provenance[k]) if k in provenance else NOT_GIVEN for k in keys]},
        index=pd.Index([k.replace("_", " ") for k in keys], name="provenance"),
    )
    backbones = results["backbone"].nunique()
    optimizers = results["optimizer"].nunique()
    runs = analysis.results.runs
    seeds = runs.groupby(PAIR, sort=False).size()
    pairs = len(seeds)
    counts = {
        "runs (rows)": str(len(results)),
        "backbones": str(backbones),
        "optimizers": str(optimizers),
        "pairs with a result": f"{pairs} of {backbones * optimizers}",
        "seeds per pair (best setting)": _span(seeds) + ("" if seeds.max() > 1 else " (no seeds)"),
    }
    knobs = [c for c in ("lr", "weight_decay") if c in results.columns]
    if knobs:
        settings = results.drop_duplicates(PAIR + knobs).groupby(PAIR, sort=False).size()
        counts["settings tried per pair"] = _span(settings)
    rule_used = selection_rule(results)
    counts["setting chosen on"] = (
        "each pair's lowest seed; statistics use the other seeds" if rule_used == "held-out seed"
        else "the same numbers that are reported" + (" (optimistic: several settings were tried)"
                                                      if knobs and settings.max() > 1 else ""))
    counts["selection set"] = (
        "training images held out per class (selection = holdout): settings and best epochs chosen on them, "
        "test accuracy reported for the choice" if selection_column(results) == "val_top1"
        else "the test set (the paper's way): settings and best epochs chosen on the numbers reported")
    derived = pd.DataFrame({"value": list(counts.values())},
                           index=pd.Index(list(counts), name="in the results"))
    return Section(
        title="The data",
        blocks=(
            Table(given, "Where the results come from, as recorded by whoever built this report."),
            Table(derived, "What the results contain."),
            Text(
                "Every number in this report starts from one value per backbone x optimizer pair: "
                "the top-1 accuracy at the pair's best-tuned learning rate and weight decay, "
                "averaged over seeds when there are several."
            ),
        ),
        how_to_read=(
            "Check the source and the epoch first: results from different epochs (best vs final) or "
            "different tuning budgets per pair are not comparable."
        ),
        gap=(
            "The paper does not say which epoch's accuracy it reports nor how many settings each "
            "pair was tuned over; both are listed above (or marked 'not given')."
        ),
    )


def gaps_section(
    provenance: Mapping[str, object], chosen: FailureRule, has_seeds: bool, has_hparams: bool,
    titles: Sequence[str] = (),
) -> Section:
    """The paper's known gaps (choices it leaves unstated, checks it does not make), each with where
    this report stands on it; ``titles``: the report's sections that draw something."""
    curves = next((t for t in titles if t.startswith("Learning curves")), None)
    epoch = _value(provenance["epoch"]) if "epoch" in provenance else "not given: this report cannot say"
    rows = {
        "which epoch is reported": f"stated in 'The data': {epoch}",
        "the exact failure rule": f"rule '{chosen.label}' with every parameter in 'Failure rule'",
        "the hyper-parameter encoding": (
            ("decades from the most common value chosen over backbones, lr and wd added; no grid; "
             "no weight decay is its own level, 1 decade from any decay")
            if has_hparams else "not applicable: no hyper-parameters given"
        ),
        "coupling vs optimizer quality": "additive model, interaction residuals and variance shares",
        "no significance tests": (
            "bootstrap confidence intervals over seeds" if has_seeds
            else "not possible here: no seeds, no CIs"
        ),
        "weight-metric settings": (
            "stated in the weight sections when weights were measured; otherwise not covered"),
        "training loss never shown": (f"shown per epoch in '{curves}'" if curves
                                      else "not covered by this report (needs per-epoch logs)"),
        "official settings as a baseline arm": "not covered by this report",
    }
    table = pd.DataFrame({"in this report": list(rows.values())},
                         index=pd.Index(list(rows), name="gap in the paper"))
    return Section(
        title="Known gaps",
        blocks=(Table(table, "The paper's known gaps and how this report treats each."),),
        how_to_read="Anything marked 'not covered' is a question this report does not answer.",
    )
