"""The section beyond the paper (the reviewers' objection to Table 1): is there coupling
once each optimizer's general quality is taken out?

The additive model is fitted by median polish (resistant to collapses, needs no failure rule). With
seeds, every statistic gets a percentile bootstrap CI over seeds (:func:`bocb.analysis.bootstrap`);
without seeds the section says so plainly instead of printing intervals it cannot have.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bocb.analysis import (
    bootstrap as bootstrap_ci,
)
from bocb.analysis import (
    coupling_scores,
    fit_additive,
    flag_table,
    mean_off_diagonal,
    order_agreement,
    variance_shares,
    wide,
)
from bocb.analysis.results import Results
from bocb.report.context import ReportAnalysis
from bocb.report.plots import interaction_heatmap
from bocb.report.document import Plot, Section, Table, Text, fmt, fmt_ci, percent

LEVEL = 0.95
NO_SEEDS = (
    "No seeds, no CIs: every pair has a single result, so nothing can be resampled. The numbers "
    "below are point estimates; a difference between them is not shown to be more than noise."
)


def _ci_status(results: Results, bootstrap: bool, n_resamples: int) -> tuple[pd.DataFrame | None, str]:
    """(bootstrap table or None, one sentence saying which)."""
    if not results.replicates:
        return None, NO_SEEDS
    if not bootstrap:
        return None, "The results have seeds, but confidence intervals were not computed (bootstrap off)."
    boot = bootstrap_ci(results, n_resamples=n_resamples, level=LEVEL)
    return boot, (
        f"Intervals: {int(LEVEL * 100)} % percentile bootstrap over seeds, {n_resamples} resamples "
        "(each pair's seeds redrawn with replacement, its best setting held fixed). With few seeds "
        "they are optimistic: with 3 seeds about 0.8 times as wide as they should be."
    )


def _ci(boot: pd.DataFrame | None, statistic: str, name: str, scale: float = 1.0, digits: int = 2) -> str:
    if boot is None or (statistic, name) not in boot.index:
        return "–"
    row = boot.loc[(statistic, name)]
    return fmt_ci(scale * row["lo"], scale * row["hi"], digits)


def coupling_section(analysis: ReportAnalysis, bootstrap: bool = True, n_resamples: int = 1000) -> Section:
    """Variance shares, interaction residuals, coupling and generality scores, and the agreement of
    optimizer orderings between backbones, with CIs when the results have seeds."""
    results, chosen = analysis.results, analysis.chosen
    table = wide(results)
    fit = fit_additive(table, method="median_polish")
    boot, status = _ci_status(results, bootstrap, n_resamples)
    with_ci = boot is not None

    shares = variance_shares(fit)
    without = variance_shares(fit, exclude=flag_table(table, chosen))
    components = ("backbone", "optimizer", "interaction")
    share_cells = pd.DataFrame(
        {"share": [percent(shares[c]) for c in components]}, index=pd.Index(components, name="component"))
    if with_ci:
        share_cells["95 % CI"] = [_ci(boot, "share", c, 100, 1) for c in components]
    share_cells[f"without flagged cells ({without['cells']} cells)"] = [percent(without[c]) for c in components]

    coupling = coupling_scores(fit, "backbone")
    per_backbone = pd.DataFrame({"coupling (RMS residual)": coupling.map(lambda v: fmt(v, 2))})
    if with_ci:
        per_backbone["95 % CI"] = [_ci(boot, "coupling", b) for b in coupling.index]
    per_backbone["backbone effect"] = fit.backbone_effect.reindex(coupling.index).map(lambda v: fmt(v, 2))
    if with_ci:
        per_backbone["effect 95 % CI"] = [_ci(boot, "backbone_effect", b) for b in coupling.index]
    per_backbone.index.name = "backbone"

    generality = fit.optimizer_effect.sort_values(ascending=False, kind="stable")
    per_optimizer = pd.DataFrame({"generality (main effect)": generality.map(lambda v: fmt(v, 2))})
    if with_ci:
        per_optimizer["95 % CI"] = [_ci(boot, "generality", o) for o in generality.index]
    per_optimizer["coupling (RMS residual)"] = coupling_scores(fit, "optimizer").reindex(
        generality.index).map(lambda v: fmt(v, 2))
    per_optimizer.index.name = "optimizer"

    tau = order_agreement(table)
    mean_tau = mean_off_diagonal(tau)
    upper = tau.where(np.triu(np.ones(tau.shape, bool), k=1)).stack().dropna()  # pandas 3 keeps NaN
    tau_text = f"Mean Kendall tau-b between two backbones' orderings of the optimizers: {fmt(mean_tau, 2)}"
    if with_ci:
        tau_text += f", 95 % CI {_ci(boot, 'order_tau', 'mean')}"
    if len(upper) == 1:
        tau_text += f" (one pair of backbones: {' and '.join(upper.index[0])})."
    elif len(upper):
        (a, b), (c, d) = upper.idxmin(), upper.idxmax()
        tau_text += (f". Least alike: {a} and {b} (tau {fmt(upper.min(), 2)}); most alike: {c} and {d} "
                     f"(tau {fmt(upper.max(), 2)}).")
    else:
        tau_text += "."
    cross = (f" The three parts of a resistant fit are not orthogonal; the cross term is "
             f"{percent(shares['cross'])} of the total variation, outside these shares.")
    return Section(
        title="Coupling beyond the paper",
        blocks=(
            Text(status),
            Text(
                f"Additive model top-1(b, o) = mu + backbone(b) + optimizer(o) + interaction(b, o), fitted "
                f"by median polish (mu = {fmt(fit.mu, 2)}, {'converged' if fit.converged else 'not converged'} "
                f"after {fit.iterations} sweeps)." + cross
            ),
            Table(share_cells, "Share of the variation in top-1 explained by each part of the model, over "
                               "all pairs and over the pairs the failure rule does not flag."),
            Plot(interaction_heatmap(fit), "interaction_residuals",
                 "Interaction residuals: how many top-1 points a pair is above (blue) or below (red) what "
                 "its backbone's and its optimizer's general levels predict. Colours saturate at the "
                 "95th percentile of |residual|; every cell prints its value."),
            Table(per_backbone, "Per backbone, most coupled first. Coupling: RMS of its interaction "
                                "residuals (top-1 points). Backbone effect: its level above the typical backbone."),
            Table(per_optimizer, "Per optimizer, most general first. Generality: its top-1 above the typical "
                                 "optimizer on the typical backbone. Coupling: RMS of its interaction residuals."),
            Text(tau_text),
        ),
        how_to_read=(
            "Table 1 mixes two things: some optimizers are better everywhere (their main effect) and "
            "some suit only certain backbones (the interaction). Coupling is the interaction. A large "
            "interaction share, large RMS residuals and a low Kendall tau (backbones disagree on the "
            "order of optimizers) point to coupling; a large optimizer share and tau near 1 mean the "
            "same optimizers win everywhere. Without flagged cells the interaction share shows how "
            "much coupling remains beyond outright failures."
        ),
        gap=(
            "The paper does not separate coupling from optimizer quality and runs no significance "
            "tests; this section does the first and, with seeds, gives intervals."
        ),
    )
