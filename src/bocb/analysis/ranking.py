"""Optimizer ranking (method.md section 8): the paper's 40/20/20/20 weighting, made explicit.

Components, each in [0, 1], higher is better:

- ``performance`` (40 %): per backbone, min-max normalise the optimizers' best-tuned top-1
  (``(x - min) / (max - min)`` over that backbone's optimizers, so its worst optimizer scores 0 and
  its best 1), then average over backbones (missing pairs skipped).
- ``robustness`` (20 %): ``1 - d / max(d)`` with ``d`` an optimizer's mean hyper-parameter distance
  (:func:`bocb.analysis.robustness.hparam_distances`) and ``max(d)`` the largest among the ranked
  optimizers: distance 0 scores 1, the least robust optimizer 0.
- ``bocb`` (20 %, the paper's "has BOCB"): ``1 - share of the optimizer's cells flagged`` by the
  failure rule (default ``fitted``).
- ``cost`` (20 %): from a per-optimizer relative cost (time or memory per step, any positive unit):
  ``min(cost) / cost``, so the cheapest scores 1 and one twice as costly 0.5.

A component without data (no cost table; no hyper-parameters given and none in the results) is
excluded and the remaining weights are rescaled to sum to 1; the frame's ``attrs["weights"]`` holds
the weights used and ``attrs["excluded"]`` the excluded components.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bocb.analysis.failure import FailureRule, flag_table
from bocb.analysis.results import load_results, wide
from bocb.analysis.robustness import hparam_distances

WEIGHTS: dict[str, float] = {"performance": 0.4, "robustness": 0.2, "bocb": 0.2, "cost": 0.2}


def performance_scores(table: pd.DataFrame) -> pd.Series:
    """Mean over backbones of per-backbone min-max normalised top-1 (backbone x optimizer table)."""
    lo, hi = table.min(axis=1), table.max(axis=1)
    span = (hi - lo).replace(0.0, np.nan)  # a backbone where every optimizer ties says nothing
    return table.sub(lo, axis=0).div(span, axis=0).mean(axis=0, skipna=True)


def _missing(component: str, scores: pd.Series, optimizers: pd.Index) -> None:
    lacking = [o for o in optimizers if o not in scores.index or pd.isna(scores.get(o))]
    if lacking:
        raise ValueError(
            f"no {component} data for optimizer(s) {', '.join(lacking)}: give it for every ranked optimizer"
        )


def rank_optimizers(
    frame: pd.DataFrame,
    hparams: pd.DataFrame | None = None,
    cost: Mapping[str, float] | pd.Series | None = None,
    failure_rule: FailureRule | str = "fitted",
    weights: Mapping[str, float] = WEIGHTS,
) -> pd.DataFrame:
    """Rank the optimizers of a result frame, best first.

    ``hparams``: best settings for robustness (the paper's ``best_hparams()`` or study runs);
    None uses ``frame`` itself when it has ``lr`` and ``weight_decay``. ``cost``: optimizer ->
    relative cost. Returns columns rank, optimizer, score, the component scores used, and the raw
    ``mean_top1``, ``flagged_share``, ``mean_distance``, ``relative_cost`` where available.
    """
    unknown = sorted(set(weights) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown ranking component(s) {unknown}: valid: {', '.join(WEIGHTS)}")
    results = load_results(frame)
    table = wide(results)
    optimizers = table.columns
    out = pd.DataFrame(index=optimizers)
    out["mean_top1"] = table.mean(axis=0)
    out["performance"] = performance_scores(table)
    flagged = flag_table(table, failure_rule).astype(float).where(table.notna())
    out["flagged_share"] = flagged.mean(axis=0)
    out["bocb"] = 1.0 - out["flagged_share"]

    excluded = []
    if hparams is None and {"lr", "weight_decay"} <= set(results.columns):
        hparams = results
    if hparams is None:
        excluded.append("robustness")
    else:
        mean_d = hparam_distances(hparams).groupby("optimizer")["distance"].mean()
        _missing("hyper-parameter", mean_d, optimizers)
        mean_d = mean_d.reindex(optimizers)
        out["mean_distance"] = mean_d
        out["robustness"] = 1.0 - mean_d / mean_d.max() if mean_d.max() > 0 else 1.0
    if cost is None:
        excluded.append("cost")
    else:
        rel = pd.Series(dict(cost), dtype=float)
        _missing("cost", rel, optimizers)
        rel = rel.reindex(optimizers)
        if not (rel > 0).all():
            raise ValueError(f"relative costs must be > 0, got {rel[~(rel > 0)].to_dict()}")
        out["relative_cost"] = rel
        out["cost"] = rel.min() / rel

    used = {k: float(w) for k, w in weights.items() if k not in excluded and w > 0}
    total = sum(used.values())
    if total <= 0:
        raise ValueError(f"ranking weights {dict(weights)} leave nothing to rank by")
    used = {k: w / total for k, w in used.items()}
    out["score"] = sum(w * out[k] for k, w in used.items())
    out = out.sort_values("score", ascending=False, kind="stable").rename_axis("optimizer").reset_index()
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    components = [k for k in WEIGHTS if k in used]
    raw = [c for c in ("mean_top1", "flagged_share", "mean_distance", "relative_cost") if c in out.columns]
    out = out[["rank", "optimizer", "score", *components, *raw]]
    out.attrs["weights"] = used
    out.attrs["excluded"] = excluded
    return out
