"""Sections on hyper-parameter robustness (distances in decades) and the optimizer ranking.

Hyper-parameters come from the caller (the paper's Tables A4/A5) or, when the results carry
``lr``/``weight_decay``, from the results. Distances need no grid or registry, so any optimizer and
any setting (on a grid or not) is measured; malformed settings make the section say why and the
ranking leave robustness out rather than the whole report failing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bocb.analysis import (
    WEIGHTS,
    Results,
    distance_summary,
    hparam_distances,
    rank_optimizers,
    ranking_agreement,
    reading_agreement,
)
from bocb.report.context import ReportAnalysis
from bocb.report.plots import hparam_boxplots
from bocb.analysis.ranking import DEFAULT_VARIANT
from bocb.analysis.robustness import ZERO_WD, ZERO_WD_DISTANCE, usual_settings
from bocb.paper import FIG5_LEAST, FIG5_ROBUST, RANKING
from bocb.report.document import Plot, Section, Table, Text, fmt, percent

PAPER_RANKING_MIN = 3  # fewer common optimizers make a rank correlation meaningless


@dataclass(frozen=True)
class Robustness:
    """The robustness section and the distances it used (None when it could not compute them)."""

    section: Section
    distances: pd.DataFrame | None
    hparams: pd.DataFrame | Results | None


def _wd(value: float) -> str:
    return "0 (no decay)" if value == 0 else f"{value:g}"


def robustness_section(analysis: ReportAnalysis, hparams: pd.DataFrame | None) -> Robustness:
    """Box plots and tables of each pair's distance to its optimizer's usual (lr, wd); ``hparams``:
    best settings per pair (None: the analysed results' own, when they have lr/weight_decay)."""
    results = analysis.frame
    title = "Hyper-parameter robustness"
    how = ("Each optimizer's usual setting is the most common learning rate and the most common weight "
           "decay among the settings its backbones were given. A pair's distance is how far its own best "
           "setting lies from that, in decades: |log10 lr - log10 usual lr| + the same for weight decay "
           "(a factor of 10 counts 1, a factor of 2 counts 0.3). Weight decay "
           f"<= {ZERO_WD:g} is 'no decay', its own level: 0 from 'no decay', {ZERO_WD_DISTANCE:g} decade from "
           "any non-zero decay. Low distance: the usual setting transfers, little tuning needed; high: this "
           "optimizer (or backbone) needs its own search. Optimizers and backbones are ordered by the median.")
    gap = ("The paper does not state how it encodes settings. Here no grid is assumed: values are measured "
           "as chosen (no snapping or clipping); a tie for the most common value goes to the most central "
           "one (smallest total distance to the others), then the smaller; switching decay off is counted "
           f"as {ZERO_WD_DISTANCE:g} decade, a stated constant rather than a guessed floor value for 0.")
    if hparams is None and {"lr", "weight_decay"} <= set(results.columns):
        hparams = analysis.results
    if hparams is None:
        text = Text("No hyper-parameters were given and the results have no lr/weight_decay columns: "
                    "robustness is not assessed, and the ranking leaves it out.")
        return Robustness(Section(title, (text,), how, gap), None, None)
    try:
        distances = hparam_distances(hparams)
    except (KeyError, ValueError) as err:  # malformed columns, a zero learning rate
        text = Text(f"Robustness could not be computed, and the ranking leaves it out: {err}")
        return Robustness(Section(title, (text,), how, gap), None, None)

    by_opt = distance_summary(distances, "optimizer")
    usual = usual_settings(distances)
    opt_cells = pd.DataFrame({
        "median distance": by_opt["median"].map(lambda v: fmt(v, 2)),
        "mean": by_opt["mean"].map(lambda v: fmt(v, 2)),
        "max": by_opt["max"].map(lambda v: fmt(v, 2)),
        "backbones": by_opt["pairs"].map(str),
        "usual lr": [f"{usual.loc[o, 'lr_mode']:g}" for o in by_opt.index],
        "usual wd": [_wd(usual.loc[o, "wd_mode"]) for o in by_opt.index],
    })
    by_bb = distance_summary(distances, "backbone")
    bb_cells = pd.DataFrame({
        "median distance": by_bb["median"].map(lambda v: fmt(v, 2)),
        "mean": by_bb["mean"].map(lambda v: fmt(v, 2)),
        "max": by_bb["max"].map(lambda v: fmt(v, 2)),
        "optimizers": by_bb["pairs"].map(str),
    })
    notes = [f"{len(distances)} pairs with settings, measured as chosen (no grid)."]
    only_h = sorted(set(distances["backbone"]) - set(results["backbone"]))
    only_r = sorted(set(results["backbone"]) - set(distances["backbone"]))
    if only_h:
        notes.append(f"Backbones with settings but not in the results (kept here): {', '.join(only_h)}.")
    if only_r:
        notes.append(f"Backbones in the results without settings: {', '.join(only_r)}.")
    named = [o for o in (*FIG5_ROBUST, *FIG5_LEAST) if o in by_opt.index]
    if len(named) == len(FIG5_ROBUST) + len(FIG5_LEAST):
        agree = reading_agreement(by_opt, FIG5_ROBUST, FIG5_LEAST)
        notes.append(
            f"Against the paper's reading of its Fig. 5 (most robust {', '.join(FIG5_ROBUST)}; least "
            f"{', '.join(FIG5_LEAST)}), as a three-level order over these {agree['n']} optimizers: Spearman "
            f"rho {fmt(agree['spearman'], 2)}, Kendall tau-b {fmt(agree['kendall'], 2)}; here the named robust "
            f"ones are at positions {agree['robust_positions']} and the named least robust at "
            f"{agree['least_positions']} of {agree['n']}.")
    blocks = (
        Plot(hparam_boxplots(distances), "hparam_distances",
             "Distance of each pair's best (lr, wd) to its optimizer's usual setting, in decades; "
             "top: per backbone, bottom: per optimizer; most robust (lowest median) first."),
        Text(" ".join(notes)),
        Table(opt_cells, "Per optimizer, most robust first, with its usual setting (the most common over backbones)."),
        Table(bb_cells, "Per backbone, least tuning needed first."),
    )
    return Robustness(Section(title, blocks, how, gap), distances, hparams)


def ranking_section(analysis: ReportAnalysis, robustness: Robustness, variant: str = DEFAULT_VARIANT,
                    cost: pd.DataFrame | None = None) -> Section:
    """The 40/20/20/20 ranking (``variant`` paper or continuous) with its components and the
    weights actually used; ``cost``: :func:`bocb.analysis.cost_table` (None: stated as missing)."""
    # Pair means only: the ranking needs one top-1 per pair, and the robustness input is given
    # explicitly so results with lr/wd columns are not re-read as hyper-parameters.
    means = analysis.results.pair_level()
    chosen = analysis.chosen
    hparams, reasons = robustness.hparams, {}
    if robustness.distances is not None:
        lacking = sorted(set(means.frame["optimizer"]) - set(robustness.distances["optimizer"]))
        if lacking:  # robustness must cover every ranked optimizer or none
            hparams, reasons["robustness"] = None, f"no hyper-parameters for {', '.join(lacking)}"
    if cost is not None:
        lacking = [o for o in dict.fromkeys(means.frame["optimizer"])
                   if o not in cost.index or cost.loc[o].isna().all()]
        if lacking or cost.isna().all().all():
            cost, reasons["cost"] = None, ("not measured for " + ", ".join(lacking) if lacking
                                           else "no measured time or memory")
    ranked = rank_optimizers(means, hparams=hparams, cost=cost, failure_rule=chosen, variant=variant)
    used, excluded = ranked.attrs["weights"], ranked.attrs["excluded"]
    reasons = {**ranked.attrs["reasons"], **reasons}
    cells = pd.DataFrame(index=pd.Index(ranked["rank"].map(str), name="rank"))
    cells["optimizer"] = ranked["optimizer"].to_numpy()
    cells["score"] = ranked["score"].map(lambda v: fmt(v, 3)).to_numpy()
    for component in WEIGHTS:
        if component in ranked.columns:
            cells[component] = ranked[component].map(lambda v: fmt(v, 2)).to_numpy()
    cells["mean top-1"] = ranked["mean_top1"].map(lambda v: fmt(v, 2)).to_numpy()
    cells["flagged"] = [f"{n} ({percent(s, 0)})" for n, s in zip(ranked["flagged"], ranked["flagged_share"],
                                                                  strict=True)]
    for column, label in (("median_distance", "median distance"), ("mean_distance", "mean distance"),
                          ("relative_time", "relative time"), ("relative_memory", "relative memory")):
        if column in ranked.columns:
            cells[label] = ranked[column].map(lambda v: fmt(v, 2)).to_numpy()
    weights = ", ".join(f"{k} {percent(w, 0)}" for k, w in used.items())
    text = (f"Variant '{variant}', failure rule '{ranked.attrs['rule']}'. Weights used: {weights} (the paper's "
            "40/20/20/20 over the components with data, rescaled to sum to 100 %).")
    if excluded:
        text += " Missing, so left out: " + "; ".join(f"{k} ({reasons.get(k, 'no data')})" for k in excluded) + "."
    blocks: list = [Text(text), Table(cells, "Optimizers, best first: overall score and its components "
                                             "(each 0 to 1, higher is better), with the raw numbers behind them.")]
    common = [o for o in ranked["optimizer"] if o in RANKING]
    if len(common) >= PAPER_RANKING_MIN:
        agree = ranking_agreement(list(ranked["optimizer"]), list(RANKING))
        blocks.append(Text(
            f"Against the paper's overall ranking (its Table 4: {', '.join(RANKING)}) over the {agree['n']} "
            f"optimizers both rank: Spearman rho {fmt(agree['spearman'], 2)}, Kendall tau-b "
            f"{fmt(agree['kendall'], 2)}."))
    if variant == "paper":
        how = ("performance: top-1 scaled 0 (the backbone's worst optimizer) to 1 (its best) within each "
               "backbone, averaged over backbones; robustness: 1 minus the optimizer's median distance over "
               "the largest median; bocb: 0 when the failure rule flags at least "
               f"{ranked.attrs['bocb_min_flags']} of the optimizer's pairs ('has BOCB'), else 1; cost: "
               "cheapest over this one, from measured train seconds and peak memory (each relative to the "
               "cheapest optimizer on the same backbone, geometric mean over backbones; their mean when both "
               "are measured).")
    else:
        how = ("As the 'paper' variant, except robustness uses the mean distance and bocb is 1 minus the "
               "share of the optimizer's pairs that the failure rule flags.")
    how += " A high rank means a safe first choice on an unknown backbone, not the best choice for every backbone."
    return Section(
        title="Optimizer ranking",
        blocks=tuple(blocks),
        how_to_read=how,
        gap=("The paper gives the weights but not how each component is scored; every component and "
             "weight is stated here, and a component without data is named, not silently dropped."),
    )
