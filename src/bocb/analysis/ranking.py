"""Optimizer ranking: the paper's 40/20/20/20 weighting (its Table 4), made explicit.

The paper ranks optimizers by performance (40 %), hyper-parameter robustness (20 %), whether the
optimizer shows backbone-optimizer coupling bias (20 %) and computational cost (20 %), without
saying how each is scored. Two variants ship (:data:`VARIANTS`); both score each component in
[0, 1], higher is better, and differ only where stated:

``paper`` (the default), the components as the paper names them:

- ``performance`` (40 %): per backbone, min-max normalise the optimizers' best-tuned top-1
  (``(x - min) / (max - min)`` over that backbone's optimizers: its worst optimizer scores 0, its
  best 1), then average over backbones (missing pairs skipped).
- ``robustness`` (20 %): ``1 - d / max(d)`` with ``d`` the optimizer's **median** distance in
  decades from its usual (lr, wd) (:func:`bocb.analysis.robustness.hparam_distances`) and
  ``max(d)`` the largest among the ranked optimizers.
- ``bocb`` (20 %), yes/no: an optimizer "has BOCB" when the failure rule flags at least
  ``bocb_min_flags`` (default 1) of its pairs; it then scores 0, else 1.
- ``cost`` (20 %): measured. From per-trial train seconds and, when recorded, peak memory
  (:func:`cost_table`): each is turned into a relative cost per optimizer (see there) and scored
  ``min(rel) / rel`` (the cheapest 1, one twice as costly 0.5); with both, the score is their mean.

``continuous`` (the scoring this project used first): as ``paper`` except robustness uses the
**mean** distance and ``bocb`` is ``1 - the share of the optimizer's pairs flagged``.

A component without data (no settings for robustness; no measured cost, e.g. the paper's own
table, which publishes no per-optimizer time or memory) is **left out and said so**: the frame's
``attrs["excluded"]`` lists it, ``attrs["reasons"]`` says why, and ``attrs["weights"]`` holds the
weights actually used (the others rescaled to sum to 1, which keeps their 40:20:20 proportions).
``attrs["variant"]`` and ``attrs["rule"]`` (the failure rule's label) travel with the result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bocb.analysis.failure import DEFAULT_RULE, FailureRule, flag_table, rule
from bocb.analysis.results import Results
from bocb.analysis.robustness import hparam_distances

WEIGHTS: dict[str, float] = {"performance": 0.4, "robustness": 0.2, "bocb": 0.2, "cost": 0.2}
VARIANTS = ("paper", "continuous")
DEFAULT_VARIANT = "paper"
COST_COLUMNS = ("seconds", "peak_memory_mb")  # per-trial measurements :func:`cost_table` reads


def performance_scores(table: pd.DataFrame) -> pd.Series:
    """Mean over backbones of per-backbone min-max normalised top-1 (backbone x optimizer table)."""
    lo, hi = table.min(axis=1), table.max(axis=1)
    span = (hi - lo).replace(0.0, np.nan)  # a backbone where every optimizer ties says nothing
    return table.sub(lo, axis=0).div(span, axis=0).mean(axis=0, skipna=True)


def cost_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Relative time and memory per optimizer from per-trial measurements.

    ``trials``: one row per trial with ``optimizer``, ``backbone`` and at least one of ``seconds``
    (training seconds of the trial) and ``peak_memory_mb``; a ``status`` column, when present,
    keeps only ``done`` trials (a diverged trial stops early, so its time says nothing of cost).
    Per pair the median over its trials; per backbone each optimizer's value over the cheapest
    optimizer's on that backbone (backbones differ in size, optimizers are compared on the same
    one); per optimizer the geometric mean of those ratios over its backbones. Returns columns
    ``relative_time`` and ``relative_memory`` (NaN where not measured), optimizers as index.
    """
    present = [c for c in COST_COLUMNS if c in trials.columns]
    if not present or not {"optimizer", "backbone"} <= set(trials.columns):
        raise ValueError(f"cost needs optimizer, backbone and one of {', '.join(COST_COLUMNS)} per trial")
    rows = trials[trials["status"] == "done"] if "status" in trials.columns else trials
    out = pd.DataFrame(index=pd.Index(list(dict.fromkeys(trials["optimizer"])), name="optimizer"))
    for column, name in (("seconds", "relative_time"), ("peak_memory_mb", "relative_memory")):
        values = pd.to_numeric(rows[column], errors="coerce") if column in rows.columns else None
        if values is None or not (values > 0).any():
            out[name] = np.nan
            continue
        pairs = rows.assign(v=values).loc[values > 0].groupby(["backbone", "optimizer"])["v"].median()
        ratio = pairs / pairs.groupby(level="backbone").transform("min")
        out[name] = np.exp(np.log(ratio).groupby(level="optimizer").mean()).reindex(out.index)
    return out


def _cost_scores(cost: Mapping[str, float] | pd.Series | pd.DataFrame, optimizers: pd.Index) -> pd.DataFrame:
    """``relative_cost`` and ``cost`` score per optimizer (see the module doc)."""
    if isinstance(cost, pd.DataFrame):
        rel = cost.reindex(optimizers)[[c for c in ("relative_time", "relative_memory") if c in cost.columns]]
    else:
        rel = pd.DataFrame({"relative_cost": pd.Series(dict(cost), dtype=float)}).reindex(optimizers)
    lacking = [o for o in optimizers if rel.loc[o].isna().all()]
    rel = rel.dropna(axis=1, how="any")  # a measure counts only when every ranked optimizer has it
    if lacking or rel.shape[1] == 0:
        raise ValueError(f"no cost data for optimizer(s) {', '.join(lacking)}: give it for every ranked optimizer")
    if not (rel > 0).all().all():
        raise ValueError(f"relative costs must be > 0, got {rel[~(rel > 0).all(axis=1)].to_dict()}")
    out = rel.copy()
    out["cost"] = (rel.min() / rel).mean(axis=1)
    return out


def rank_optimizers(
    frame: pd.DataFrame | Results,
    hparams: pd.DataFrame | Results | None = None,
    cost: Mapping[str, float] | pd.Series | pd.DataFrame | None = None,
    failure_rule: FailureRule | str = DEFAULT_RULE,
    weights: Mapping[str, float] = WEIGHTS,
    variant: str = DEFAULT_VARIANT,
    bocb_min_flags: int = 1,
) -> pd.DataFrame:
    """Rank the optimizers of a result frame, best first (see the module doc for the variants).

    ``hparams``: best settings for robustness (the paper's ``best_hparams()`` or study runs);
    None uses ``frame`` itself when it has ``lr`` and ``weight_decay``. ``cost``: a
    :func:`cost_table` frame, or optimizer -> one relative cost. Returns columns rank, optimizer,
    score, the component scores used, and the raw numbers behind them (``mean_top1``,
    ``flagged``, ``flagged_share``, ``median_distance``, ``mean_distance``, ``relative_*``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ranking variant {variant!r}: valid: {', '.join(VARIANTS)}")
    unknown = sorted(set(weights) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown ranking component(s) {unknown}: valid: {', '.join(WEIGHTS)}")
    chosen = rule(failure_rule) if isinstance(failure_rule, str) else failure_rule
    results = Results.of(frame)
    table = results.table
    optimizers = table.columns
    out = pd.DataFrame(index=optimizers)
    out["mean_top1"] = table.mean(axis=0)
    out["performance"] = performance_scores(table)
    flagged = flag_table(table, chosen).astype(float).where(table.notna())
    out["flagged"] = flagged.sum(axis=0).astype(int)
    out["flagged_share"] = flagged.mean(axis=0)
    if variant == "paper":
        out["bocb"] = (out["flagged"] < bocb_min_flags).astype(float)
    else:
        out["bocb"] = 1.0 - out["flagged_share"]

    reasons: dict[str, str] = {}
    if hparams is None and {"lr", "weight_decay"} <= set(results.frame.columns):
        hparams = results
    if hparams is None:
        reasons["robustness"] = "no hyper-parameters"
    else:
        d = hparam_distances(hparams).groupby("optimizer")["distance"]
        stats = pd.DataFrame({"median_distance": d.median(), "mean_distance": d.mean()})
        lacking = [o for o in optimizers if o not in stats.index]
        if lacking:
            raise ValueError(f"no hyper-parameter data for optimizer(s) {', '.join(lacking)}: "
                             "give it for every ranked optimizer")
        stats = stats.reindex(optimizers)
        out = out.join(stats)
        used_d = stats["median_distance" if variant == "paper" else "mean_distance"]
        out["robustness"] = 1.0 - used_d / used_d.max() if used_d.max() > 0 else 1.0
    if cost is None:
        reasons["cost"] = "no measured time or memory"
    else:
        out = out.join(_cost_scores(cost, optimizers))

    excluded = [k for k in WEIGHTS if k in reasons]
    used = {k: float(w) for k, w in weights.items() if k not in excluded and w > 0}
    total = sum(used.values())
    if total <= 0:
        raise ValueError(f"ranking weights {dict(weights)} leave nothing to rank by")
    used = {k: w / total for k, w in used.items()}
    out["score"] = sum(w * out[k] for k, w in used.items())
    out = out.sort_values("score", ascending=False, kind="stable").rename_axis("optimizer").reset_index()
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    components = [k for k in WEIGHTS if k in used]
    raw = [c for c in ("mean_top1", "flagged", "flagged_share", "median_distance", "mean_distance",
                       "relative_time", "relative_memory", "relative_cost") if c in out.columns]
    out = out[["rank", "optimizer", "score", *components, *raw]]
    out.attrs.update(weights=used, excluded=excluded, reasons=reasons, variant=variant,
                     rule=chosen.label, bocb_min_flags=bocb_min_flags)
    return out
