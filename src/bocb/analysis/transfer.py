"""The pre-train x fine-tune table (the paper's transfer finding): which fine-tuning optimizers fail for a
model pre-trained with a given optimizer, and how much fine-tuning changes the backbone.

Inputs are the analysis's frames: :func:`bocb.analysis.from_store.transfer_frame` (``backbone`` =
the pre-trained model's label, ``optimizer`` = the fine-tuning optimizer, ``pretrain_optimizer``)
with its :func:`bocb.analysis.failure.flag` output, and the weight diagnostics' per-layer frame
(:func:`bocb.analysis.from_store.weights_frame`). Choices, stated:

- **Failures** use the same rule as pre-training grids, applied per pre-trained model (its
  column of the table): a fine-tuning optimizer fails a pre-trained model when its result falls
  below that model's threshold. ``bocb report`` uses the shared default rule here too
  (:data:`bocb.analysis.failure.DEFAULT_RULE`); the paper's gamma 3 belongs to its literal Eq. (1).
- **Movement** of a fine-tuned model is the mean over its layers of ``moved`` (relative Frobenius
  distance from the pre-trained weights), **excluding the new classifier** (the snapshot's last
  layer, :func:`bocb.zoo.classifier_name`), which starts from random weights.
- **Pattern retention** asks the paper's claim "backbone patterns stay set by pre-training": for
  each fine-tuned model, the Pearson correlation across layers of a metric (default alpha) with
  its own pre-trained model, against the best correlation with any other pre-trained model of the
  same network. Retained means own > other. Needs two or more pre-trained models per network.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def failures_by_pretraining(results: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """One row per pre-trained model: its pre-training optimizer, the fine-tuning optimizers that
    fail it, the best one and its result, and how many were run."""
    pre = results.drop_duplicates("backbone").set_index("backbone")["pretrain_optimizer"]
    rows = []
    for label, group in flags.groupby("backbone", sort=False):
        best = group.loc[group["top1"].idxmax()]
        failed = group.loc[group["flagged"]].sort_values("top1")
        rows.append({
            "pretrained": label, "pretrain_optimizer": pre.get(label),
            "fails": ", ".join(failed["optimizer"]) or "none",
            "n_failed": int(len(failed)), "n_finetune": int(len(group)),
            "best": best["optimizer"], "best_score": float(best["top1"]),
            "threshold": float(group["threshold"].iloc[0]),
        })
    return pd.DataFrame(rows)


def failure_rates(results: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Per pre-training optimizer (pooled over networks): share of fine-tuning runs that fail."""
    pre = results.drop_duplicates("backbone").set_index("backbone")["pretrain_optimizer"]
    joined = flags.assign(pretrain_optimizer=flags["backbone"].map(pre))
    out = joined.groupby("pretrain_optimizer", sort=False).agg(
        models=("backbone", "nunique"), finetune_runs=("flagged", "size"), failed=("flagged", "sum"))
    out["failure_rate"] = out["failed"] / out["finetune_runs"]
    return out.reset_index().sort_values("failure_rate", ascending=False, ignore_index=True)


def _backbone_layers(weights: pd.DataFrame) -> pd.DataFrame:
    """Final snapshots without their last layer (the new classifier)."""
    final = weights[weights["source"] == "final"]
    last = final.groupby("snapshot_id")["layer_index"].transform("max")
    return final[final["layer_index"] < last]


def movement(weights: pd.DataFrame) -> pd.DataFrame:
    """Mean and max ``moved`` per fine-tuned model (classifier excluded), with its labels."""
    layers = _backbone_layers(weights).dropna(subset=["moved"])
    if layers.empty:
        return pd.DataFrame(columns=["pretrained", "optimizer", "mean_moved", "max_moved", "layers"])
    out = layers.groupby(["pretrained", "optimizer", "snapshot_id"], sort=False)["moved"].agg(
        mean_moved="mean", max_moved="max", layers="size").reset_index()
    return out.drop(columns="snapshot_id")


def pattern_retention(finetuned: pd.DataFrame, pretrained: pd.DataFrame, pre_ids: dict[str, str],
                      metric: str = "alpha") -> pd.DataFrame:
    """Per fine-tuned model: correlation of ``metric`` across layers with its own pre-trained model
    and the best one with another pre-trained model of the same network (see the module doc).

    ``finetuned``/``pretrained``: weights frames of the fine-tuned and pre-trained snapshots;
    ``pre_ids``: pre-trained label -> its snapshot id (the pre-training trial id).
    """
    pre_layers = _backbone_layers(pretrained)
    by_id = {sid: g.set_index("layer")[metric] for sid, g in pre_layers.groupby("snapshot_id")}
    network_of = {label: pre_layers.loc[pre_layers["snapshot_id"] == sid, "backbone"].iloc[0]
                  for label, sid in pre_ids.items() if sid in by_id}
    rows = []
    for (label, optimizer, sid), g in _backbone_layers(finetuned).groupby(
            ["pretrained", "optimizer", "snapshot_id"], sort=False):
        if label not in network_of:
            continue
        mine = g.set_index("layer")[metric]
        own = _corr(mine, by_id[pre_ids[label]])
        others = [_corr(mine, by_id[pre_ids[o]]) for o in network_of
                  if o != label and network_of[o] == network_of[label]]
        other = max(others) if others else np.nan
        rows.append({"pretrained": label, "optimizer": optimizer, "own": own, "best_other": other,
                     "retained": bool(own > other) if np.isfinite(own) and np.isfinite(other) else None})
    return pd.DataFrame(rows, columns=["pretrained", "optimizer", "own", "best_other", "retained"])


def _corr(a: pd.Series, b: pd.Series) -> float:
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(both) < 3 or both.iloc[:, 0].std() == 0 or both.iloc[:, 1].std() == 0:
        return np.nan
    return float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1])
