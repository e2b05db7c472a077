"""Sections on the trained weights (the paper's parameter-pattern analysis): what each metric is, ridge plots per
backbone, alpha bars per backbone x optimizer, and, beyond the paper, how the per-model summaries
go with accuracy and with the failure flags, with bootstrap CIs and a plain verdict.

The numbers come from :mod:`bocb.analysis.weights`, the figures from
:mod:`bocb.report.weight_plots`; this module only arranges and explains them.
"""

from __future__ import annotations

import re

import pandas as pd

from bocb.analysis import Results, flag, rule
from bocb.analysis.failure import DEFAULT_RULE, FailureRule
from bocb.report.context import ReportAnalysis
from bocb.report.weight_plots import alpha_bars, ridge_plot
from bocb.analysis.weights import (
    ALPHA_BAND,
    FIRM_N,
    LEVEL,
    MIN_FLAGGED,
    MIN_MODELS,
    N_RESAMPLES,
    SMALL_AUC,
    SMALL_RHO,
    association,
    band_applies,
    init_summaries,
    model_table,
)
from bocb.report.document import Plot, Section, Table, Text, fmt, fmt_ci

TITLE = "Weight diagnostics"
ASSOCIATION_TITLE = "Weight metrics, accuracy and failures"
MAX_MODEL_ROWS = 60
METRICS_TEXT = (
    "Each layer's weight is one matrix: a Linear weight as it is (out x in); a Conv2d weight "
    "(out, in/groups, kh, kw) matricised as out x (in/groups * kh * kw) in the default 'reshape' mode "
    "(not split per kernel offset as WeightWatcher does); matrices with fewer than 2 rows or columns are "
    "skipped. Layer index counts the measured layers from the input side. alpha: the power-law exponent "
    "of the tail of the eigenvalues of W^T W (squared singular values, not normalised), Clauset-style "
    "continuous MLE with the KS-optimal xmin over a tail of at least 5 eigenvalues; a layer whose fit "
    "is not possible has no alpha. Values below 2 or above 6 are read as over- and under-fitting "
    "(WeightWatcher's band). entropy: Shannon entropy in nats of the 100-bin histogram of the layer's "
    "weight values (0 for a constant layer, at most ln 100 = 4.61). L2: the Frobenius norm. PCA energy: "
    "the share of the top-10 eigenvalues in the sum of all (1 when a layer has at most 10). Full "
    "definitions, including which layers are covered: bocb.diagnostics.metrics."
)
HOW_TO_GET = (
    "No weight diagnostics are in the store for this study. Trials measure their final weights "
    "when they finish; for trials run before that, and for each backbone's random initialisation, "
    "run `bocb diagnose STUDY.toml --store STORE` and build the report again."
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "backbone"


def _flags(results: Results, flags: pd.DataFrame | FailureRule | str) -> tuple[pd.DataFrame, str | None]:
    if isinstance(flags, pd.DataFrame):
        return flags, None
    chosen = rule(flags) if isinstance(flags, str) else flags
    return flag(results, chosen), chosen.label


def _coverage(models: pd.DataFrame, weights: pd.DataFrame, errors: pd.DataFrame | None) -> str:
    """One line: what was measured, which pairs lack a model, which measurements failed."""
    n_pairs, n_have = len(models), int(models["has_snapshot"].sum())
    backbones = list(dict.fromkeys(models["backbone"]))
    inits = set(weights.loc[weights["source"] == "init", "backbone"])
    parts = [f"Measured: {n_have} of {n_pairs} pairs have a trained model with diagnostics; random "
             f"initialisation measured for {len([b for b in backbones if b in inits])} of {len(backbones)} backbones."]
    lacking = models.loc[~models["has_snapshot"], ["backbone", "optimizer"]]
    if len(lacking):
        parts.append("Pairs without a measured model: "
                     + ", ".join(f"{b}/{o}" for b, o in lacking.itertuples(index=False)) + ".")
    no_init = [b for b in backbones if b not in inits]
    if no_init:
        parts.append("Backbones without a measured initialisation: " + ", ".join(no_init) + ".")
    no_alpha = models.loc[models["has_snapshot"] & (models["n_alpha"].fillna(0) == 0), ["backbone", "optimizer"]]
    if len(no_alpha):
        parts.append("Models with no successful alpha fit (alpha summaries missing): "
                     + ", ".join(f"{b}/{o}" for b, o in no_alpha.itertuples(index=False)) + ".")
    if errors is not None and len(errors):
        failed = [f"{r.backbone} {r.source} ({str(r.error).splitlines()[0][:80]})"
                  for r in errors.itertuples(index=False)]
        parts.append(f"Failed measurements ({len(errors)}): " + "; ".join(failed) + ".")
    else:
        parts.append("Failed measurements: none.")
    return " ".join(parts)


def _model_cells(models: pd.DataFrame, init: pd.DataFrame) -> pd.DataFrame:
    cols = {"alpha_median": "median alpha", "alpha_mean": "mean alpha", "alpha_outside": "alpha outside [2, 6]",
            "entropy_mean": "entropy", "log10_l2_mean": "log10 L2", "pca_energy_mean": "PCA energy",
            "stable_rank_mean": "stable rank"}
    rows = []
    for backbone in dict.fromkeys(models["backbone"]):
        sub = models[models["backbone"] == backbone]
        ini = init[init["backbone"] == backbone]
        for r in ini.itertuples(index=False):
            rows.append({"model": f"{backbone} / random init", "top-1": "–", "flagged": "–",
                         "alpha layers": f"{int(r.n_alpha)}/{int(r.n_layers)}",
                         **{v: fmt(getattr(r, k), 2) for k, v in cols.items()}})
        for r in sub.itertuples(index=False):
            has = bool(r.has_snapshot)
            rows.append({"model": f"{backbone} / {r.optimizer}", "top-1": fmt(r.top1, 1),
                         "flagged": fmt(bool(r.flagged)),
                         "alpha layers": f"{int(r.n_alpha)}/{int(r.n_layers)}" if has else "no model",
                         **{v: fmt(getattr(r, k), 2) for k, v in cols.items()}})
    return pd.DataFrame(rows).set_index("model")


def _association_cells(assoc: pd.DataFrame) -> pd.DataFrame:
    cells = pd.DataFrame(index=pd.Index(assoc["label"], name="per-model metric"))
    cells["models"] = assoc["n_models"].astype(int).astype(str).to_numpy()
    cells["rho with top-1"] = assoc["rho"].map(lambda v: fmt(v, 2)).to_numpy()
    cells["95 % CI"] = [fmt_ci(lo, hi, 2) for lo, hi in zip(assoc["rho_lo"], assoc["rho_hi"], strict=True)]
    cells["accuracy verdict"] = assoc["rho_verdict"].to_numpy()
    cells["flagged (used)"] = [f"{int(a)} ({int(b)})"
                               for a, b in zip(assoc["n_flagged"], assoc["n_flagged_used"], strict=True)]
    cells["AUC flagged > not"] = assoc["auc"].map(lambda v: fmt(v, 2)).to_numpy()
    cells["AUC 95 % CI"] = [fmt_ci(lo, hi, 2) for lo, hi in zip(assoc["auc_lo"], assoc["auc_hi"], strict=True)]
    cells["gap of flagged [95 % CI]"] = [
        f"{fmt(d, 3)} {fmt_ci(lo, hi, 3)}"
        for d, lo, hi in zip(assoc["diff"], assoc["diff_lo"], assoc["diff_hi"], strict=True)]
    cells["failure verdict"] = assoc["flag_verdict"].to_numpy()
    return cells


def _plainly(assoc: pd.DataFrame) -> str:
    def said(column: str, what: str) -> str:
        verdicts = assoc[column].astype(str)
        few = verdicts.str.startswith(("too few", "not measurable"))
        if few.all():
            return f"{what} — too few to say ({verdicts.iloc[0]})" if len(verdicts) else f"{what} — nothing"
        keep = ~few & ~verdicts.str.startswith("weak")
        found = [f"{label}: {v.split(' (tentative')[0]}"
                 for label, v in zip(assoc.loc[keep, "label"], verdicts[keep], strict=True)]
        rest = "every other metric: weak or none" if found else "every metric: weak or none"
        if few.any():
            rest += f" ({int(few.sum())} too few to say)"
        return f"{what} — " + "; ".join([*found, rest])

    n = int(assoc["n_models"].max()) if len(assoc) else 0
    text = [f"Plainly, with {n} models. ", said("rho_verdict", "Accuracy"), ". ",
            said("flag_verdict", "Failure flags"), ". "]
    if n < FIRM_N:
        text.append(f"With fewer than {FIRM_N} models an association found here is a lead to test on a larger "
                    "study, not a finding. ")
    text.append(f"No correction for the {2 * len(assoc)} comparisons is applied: at 95 % about one in 20 "
                "intervals excludes the null by chance alone.")
    return "".join(text)


def weights_sections(
    results: pd.DataFrame | Results | ReportAnalysis,
    weights: pd.DataFrame,
    flags: pd.DataFrame | FailureRule | str = DEFAULT_RULE,
    *,
    errors: pd.DataFrame | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    reference: str = "random init",
) -> list[Section]:
    """The weight-diagnostics sections of a study report.

    ``reference`` names the ``init`` snapshots in the figures (a transfer report passes its
    pre-trained models there, relabelled as ``init``).

    ``results``: the study's results frame (with ``trial_id``), its :class:`~bocb.analysis.Results`,
    or the report's :class:`~bocb.report.context.ReportAnalysis` (whose flags and rule are then used
    and ``flags`` is ignored); ``weights``:
    :func:`bocb.analysis.from_store.weights_frame`; ``flags``: :func:`bocb.analysis.flag`'s output,
    or the failure rule (or its name) to compute it; ``errors``:
    :func:`bocb.analysis.from_store.snapshot_errors` (listed in the coverage line). An empty
    ``weights`` gives one section saying how to measure them.
    """
    if isinstance(results, ReportAnalysis):
        results, flags, rule_name = results.results, results.flags, results.chosen.label
    else:
        results = Results.of(results)
        flags, rule_name = _flags(results, flags)
    if weights.empty:
        blocks = [Text(HOW_TO_GET)]
        if errors is not None and len(errors):
            blocks.append(Text(f"{len(errors)} measurement(s) failed: "
                               + "; ".join(f"{r.backbone} {r.source}: {str(r.error).splitlines()[0][:80]}"
                                           for r in errors.itertuples(index=False)) + "."))
        return [Section(TITLE, tuple(blocks), gap="The paper's weight-metric settings are not stated; "
                                                   "see bocb.diagnostics.metrics for this project's.")]
    models = model_table(results, weights, flags)
    init = init_summaries(weights)
    blocks: list = [Text(METRICS_TEXT), Text(_coverage(models, weights, errors))]
    blocks.append(Plot(
        alpha_bars(weights, flags, results, statistic="median", rule_name=rule_name, reference=reference), "weights_alpha_bars",
        "Median alpha over each model's layers with an ok fit, per backbone and optimizer (study order). "
        "Grey hatched bars: pairs the failure rule flags. Dashed line: the backbone's random initialisation. "
        + (f"Shaded: the band [{ALPHA_BAND[0]:g}, {ALPHA_BAND[1]:g}] (WeightWatcher's, for its per-kernel-offset "
           "conv slices). " if band_applies(weights) else
           "No band: these snapshots matricise conv layers by reshaping, where WeightWatcher's [2, 6] band does not "
           "apply (study key weight_conv = \"slices\" gives its convention). ")
        + "'n/a': no layer of the model had an ok fit."))
    if len(models) <= MAX_MODEL_ROWS:
        blocks.append(Table(_model_cells(models, init), "Per-model summaries: means over layers (alpha over layers "
                                                        "with an ok fit: 'alpha layers' counts them)."))
    else:
        blocks.append(Text(f"{len(models)} models: the per-model table is left out; "
                           "bocb.analysis.weights.model_table gives it."))
    used: set[str] = set()
    for backbone in dict.fromkeys(models["backbone"]):
        name = f"weights_ridge_{_slug(backbone)}"
        while name in used:
            name += "_"
        used.add(name)
        blocks.append(Plot(
            ridge_plot(weights, results, flags, backbone, rule_name=rule_name, reference=reference, reps=models),
            name,
            f"{backbone}: per-layer entropy, L2, PCA energy and alpha (x = layer index from the input). One "
            "ridge per optimizer, sorted by the pair's top-1 (label, %), best on top; the random "
            "initialisation at the bottom (black, dashed); flagged pairs red and hatched. Each panel has "
            "one scale for all its ridges, stated in its title."))
    section = Section(
        TITLE, tuple(blocks),
        how_to_read=(
            "Each pair is represented by one trained model: the seed of its best-tuned setting whose top-1 "
            "is closest to that setting's mean over seeds (with one seed, the only run). Compare a ridge "
            "with the random initialisation to see how far training moved each layer, and flagged "
            "ridges with their neighbours to see whether a failed pairing leaves a visible pattern. The "
            "paper draws its conclusions from such plots by eye; the next section measures them."
        ),
        gap="The paper's weight-metric settings are not stated; here every choice is (above, and "
            "bocb.diagnostics.metrics).",
    )
    assoc = association(models, n_resamples=n_resamples, seed=seed)
    method = (
        "Per model: the summaries in the table above. Backbones differ far more in these metrics than "
        "optimizers on one backbone do, so association is measured within backbones and then pooled. "
        "Accuracy: rho = Spearman correlation of the metric with the model's top-1 after ranking both "
        "within each backbone and centring the ranks on the backbone's mean rank. Failure flags: "
        "AUC = over every (flagged, unflagged) pair of models of the same backbone, the share where the "
        "flagged model has the higher metric (0.5 = no difference); gap = flagged model minus the mean "
        "of its backbone's unflagged models, in the metric's units. "
        f"{int(LEVEL * 100)} % percentile bootstrap, {n_resamples} resamples (seed {seed}): models "
        "redrawn with replacement within their backbone; for the flag statistics, flagged models "
        "redrawn from all flagged models and unflagged ones within their backbone. "
        f"Verdict 'weak/none' when the interval includes 0 (AUC: 0.5) or |rho| < {SMALL_RHO} "
        f"(|AUC - 0.5| < {SMALL_AUC}); 'too few' below {MIN_MODELS} models or {MIN_FLAGGED} flagged "
        f"models on backbones that also have unflagged ones; 'tentative' below {FIRM_N} models."
    )
    n_models = int(models["has_snapshot"].sum())
    n_flagged = int(models.loc[models["has_snapshot"], "flagged"].sum())
    second = Section(
        ASSOCIATION_TITLE,
        (Text(f"{n_models} models with diagnostics, {n_flagged} of them flagged, on "
              f"{models.loc[models['has_snapshot'], 'backbone'].nunique()} backbones."),
         Text(method),
         Table(_association_cells(assoc),
               "Within-backbone association of each per-model metric with top-1 (rho) and with the failure "
               "flags (AUC, gap). 'flagged (used)': flagged models, and those on backbones that also have "
               "unflagged models (only these enter the AUC)."),
         Text(_plainly(assoc))),
        how_to_read=(
            "rho > 0: models with a higher value of the metric are the more accurate ones on their backbone. "
            "AUC > 0.5: flagged models tend to have a higher value than the unflagged models of their "
            "backbone. An interval that includes the null value means the data cannot tell the direction. "
            "With a few dozen models and about one flagged model per backbone, expect wide intervals; "
            "intervals from so few models are also somewhat too narrow."
        ),
        gap="The paper reads its weight plots by eye and does not relate them to the failures it marks; "
            "this section does, with intervals.",
    )
    return [section, second]
