"""Sections on hyper-parameter robustness (method.md section 6) and the optimizer ranking (section 8).

Hyper-parameters come from the caller (the paper's Tables A4/A5) or, when the results carry
``lr``/``weight_decay``, from the results. Robustness needs each optimizer's grid from the zoo
(``bocb.optim``); when that fails (an optimizer the zoo does not know) the section says why and the
ranking leaves robustness out rather than the whole report failing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bocb.analysis import (
    WEIGHTS,
    FailureRule,
    distance_summary,
    hparam_distances,
    pair_means,
    rank_optimizers,
    ranking_agreement,
)
from bocb.analysis.plots import hparam_boxplots
from bocb.paper import RANKING
from bocb.report.document import Plot, Section, Table, Text, fmt, percent

POINTS = 5  # the paper's 5-value grids per knob
PAPER_RANKING_MIN = 3  # fewer common optimizers make a rank correlation meaningless


@dataclass(frozen=True)
class Robustness:
    """The robustness section and the distances it used (None when it could not compute them)."""

    section: Section
    distances: pd.DataFrame | None
    hparams: pd.DataFrame | None


def _usual(optimizer: str, lr_mode: int, wd_mode: int) -> tuple[str, str]:
    from bocb.optim import get_optimizer_info  # torch-heavy; hparam_distances has loaded it already

    info = get_optimizer_info(optimizer)
    return f"{info.lr_grid(POINTS)[lr_mode]:g}", f"{info.wd_grid(POINTS)[wd_mode]:g}"


def robustness_section(results: pd.DataFrame, hparams: pd.DataFrame | None) -> Robustness:
    """Box plots and tables of each pair's distance to its optimizer's usual (lr, wd)."""
    title = "Hyper-parameter robustness"
    how = ("Each pair's best learning rate and weight decay are written as positions on the optimizer's "
           "5-point grids; the optimizer's usual setting is the most common position over backbones. "
           "Distance = grid steps from the usual setting (lr steps + wd steps). Low distance: the usual "
           "setting transfers, little tuning needed; high: this optimizer (or backbone) needs its own search.")
    gap = ("The paper does not state how it encodes settings; here: nearest grid point in log space, "
           "off-grid values clipped to the grid's ends (counted above), a tie for the mode going to the "
           "index nearest the other backbones' settings.")
    if hparams is None and {"lr", "weight_decay"} <= set(results.columns):
        hparams = results
    if hparams is None:
        text = Text("No hyper-parameters were given and the results have no lr/weight_decay columns: "
                    "robustness is not assessed, and the ranking leaves it out.")
        return Robustness(Section(title, (text,), how, gap), None, None)
    try:
        distances = hparam_distances(hparams, POINTS)
    except (KeyError, ValueError) as err:  # an optimizer the zoo does not know, malformed columns
        text = Text(f"Robustness could not be computed, and the ranking leaves it out: {err}")
        return Robustness(Section(title, (text,), how, gap), None, None)

    by_opt = distance_summary(distances, "optimizer")
    modes = distances.drop_duplicates("optimizer").set_index("optimizer")[["lr_mode", "wd_mode"]]
    usual = {o: _usual(o, int(modes.loc[o, "lr_mode"]), int(modes.loc[o, "wd_mode"])) for o in by_opt.index}
    opt_cells = pd.DataFrame({
        "mean distance": by_opt["mean"].map(lambda v: fmt(v, 2)),
        "median": by_opt["median"].map(lambda v: fmt(v, 1)),
        "max": by_opt["max"].map(lambda v: str(int(v))),
        "backbones": by_opt["pairs"].map(str),
        "usual lr": [usual[o][0] for o in by_opt.index],
        "usual wd": [usual[o][1] for o in by_opt.index],
    })
    by_bb = distance_summary(distances, "backbone")
    bb_cells = pd.DataFrame({
        "mean distance": by_bb["mean"].map(lambda v: fmt(v, 2)),
        "median": by_bb["median"].map(lambda v: fmt(v, 1)),
        "max": by_bb["max"].map(lambda v: str(int(v))),
        "optimizers": by_bb["pairs"].map(str),
    })
    notes = [f"{len(distances)} pairs with settings; {int(distances['off_grid'].sum())} of them lie off "
             "the grid (more than 1 % from every grid value) and were mapped to the nearest grid point."]
    only_h = sorted(set(distances["backbone"]) - set(results["backbone"]))
    only_r = sorted(set(results["backbone"]) - set(distances["backbone"]))
    if only_h:
        notes.append(f"Backbones with settings but not in the results (kept here): {', '.join(only_h)}.")
    if only_r:
        notes.append(f"Backbones in the results without settings: {', '.join(only_r)}.")
    blocks = (
        Plot(hparam_boxplots(distances), "hparam_distances",
             "Distance of each pair's best (lr, wd) to its optimizer's usual setting, in grid steps; "
             "top: per backbone, bottom: per optimizer; most robust first."),
        Text(" ".join(notes)),
        Table(opt_cells, "Per optimizer, most robust first, with its usual setting (the mode over backbones)."),
        Table(bb_cells, "Per backbone, least tuning needed first."),
    )
    return Robustness(Section(title, blocks, how, gap), distances, hparams)


def ranking_section(results: pd.DataFrame, robustness: Robustness, chosen: FailureRule) -> Section:
    """The 40/20/20/20 ranking with its components and the weights actually used."""
    # Pair means only: the ranking needs one top-1 per pair, and the robustness input is given
    # explicitly so results with lr/wd columns are not re-read as hyper-parameters.
    means = pair_means(results)[["optimizer", "backbone", "top1"]]
    hparams, reasons = robustness.hparams, {"robustness": "no hyper-parameters", "cost": "no cost table given"}
    if robustness.distances is not None:
        lacking = sorted(set(means["optimizer"]) - set(robustness.distances["optimizer"]))
        if lacking:  # robustness must cover every ranked optimizer or none
            hparams, reasons["robustness"] = None, f"no hyper-parameters for {', '.join(lacking)}"
    ranked = rank_optimizers(means, hparams=hparams, failure_rule=chosen)
    used, excluded = ranked.attrs["weights"], ranked.attrs["excluded"]
    cells = pd.DataFrame(index=pd.Index(ranked["rank"].map(str), name="rank"))
    cells["optimizer"] = ranked["optimizer"].to_numpy()
    cells["score"] = ranked["score"].map(lambda v: fmt(v, 3)).to_numpy()
    for component in WEIGHTS:
        if component in ranked.columns:
            cells[component] = ranked[component].map(lambda v: fmt(v, 2)).to_numpy()
    cells["mean top-1"] = ranked["mean_top1"].map(lambda v: fmt(v, 2)).to_numpy()
    cells["flagged"] = ranked["flagged_share"].map(lambda v: percent(v, 0)).to_numpy()
    if "mean_distance" in ranked.columns:
        cells["mean distance"] = ranked["mean_distance"].map(lambda v: fmt(v, 2)).to_numpy()
    weights = ", ".join(f"{k} {percent(w, 0)}" for k, w in used.items())
    text = f"Weights used: {weights} (the paper's 40/20/20/20, rescaled over the components with data)."
    if excluded:
        text += " Left out: " + "; ".join(f"{k} ({reasons.get(k, 'no data')})" for k in excluded) + "."
    blocks: list = [Text(text), Table(cells, "Optimizers, best first: overall score and its components "
                                             "(each 0 to 1, higher is better), with the raw numbers behind them.")]
    common = [o for o in ranked["optimizer"] if o in RANKING]
    if len(common) >= PAPER_RANKING_MIN:
        agree = ranking_agreement(list(ranked["optimizer"]), list(RANKING))
        blocks.append(Text(
            f"Against the paper's overall ranking (its Table 4) over the {agree['n']} optimizers both "
            f"rank: Spearman rho {fmt(agree['spearman'], 2)}, Kendall tau-b {fmt(agree['kendall'], 2)}."))
    return Section(
        title="Optimizer ranking",
        blocks=tuple(blocks),
        how_to_read=(
            "performance: top-1 scaled 0 (worst) to 1 (best) within each backbone, averaged; robustness: "
            "1 minus the mean hyper-parameter distance over the largest; bocb: 1 minus the share of the "
            "optimizer's pairs that the failure rule flags; cost: cheapest over this one. A high rank "
            "means a safe first choice on an unknown backbone, not the best choice for every backbone."
        ),
        gap=("The paper gives the weights but not how each component is scored; every component and "
             "weight is stated here."),
    )
