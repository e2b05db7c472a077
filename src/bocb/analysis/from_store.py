"""A study in the store as the analysis's long results frame (the analysis never sees the trainer).

One row per finished trial: ``optimizer``, ``backbone`` (paper short names), ``top1``, ``seed``,
``lr``, ``weight_decay``, ``category``, ``status``, ``trial_id``. Choices, stated in the report:

- ``top1`` is the trial's **final-epoch** test accuracy by default (``metric="final"``): the
  best epoch on the test set is itself a selection on test numbers. ``metric="best"`` gives the
  best epoch, as the paper's tools report.
- A ``diverged`` trial is a result: its last measured accuracy, or chance (100 / classes) when it
  diverged before its first evaluation. ``failed`` trials (exceptions, lost workers) are not
  results and are left out; :func:`excluded` lists them.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd

COLUMNS = ["optimizer", "backbone", "top1", "seed", "lr", "weight_decay", "category", "status", "trial_id"]


def results_frame(store: Any, study_id: str | None, metric: Literal["final", "best"] = "final") -> pd.DataFrame:
    """The study's done and diverged trials as a results frame (see the module doc)."""
    if metric not in ("final", "best"):
        raise ValueError(f"unknown metric {metric!r}: valid: final, best")
    rows = []
    for t in store.trials(study_id):
        if t["status"] not in ("done", "diverged"):
            continue
        value = t["final_top1"] if metric == "final" else t["best_top1"]
        if value is None:  # diverged before the first evaluation
            record = store.record(t["trial_id"]) or {}
            classes = (record.get("dataset") or {}).get("num_classes") or record["spec"]["backbone"]["num_classes"]
            value = 100.0 / classes
        rows.append({
            "optimizer": t["optimizer"], "backbone": t["backbone"], "top1": float(value), "seed": t["seed"],
            "lr": t["lr"], "weight_decay": t["weight_decay"] or 0.0, "category": t["category"],
            "status": t["status"], "trial_id": t["trial_id"],
        })
    if not rows:
        raise ValueError("the study has no finished (done or diverged) trials yet: run it first")
    return pd.DataFrame(rows, columns=COLUMNS)


def excluded(store: Any, study_id: str | None) -> pd.DataFrame:
    """Trials that are not results (failed, pending, running, skipped), with their reason."""
    rows = [
        {"trial_id": t["trial_id"], "backbone": t["backbone"], "optimizer": t["optimizer"],
         "status": t["status"], "reason": t["error"] or t["skip_reason"] or ""}
        for t in store.trials(study_id) if t["status"] not in ("done", "diverged")
    ]
    return pd.DataFrame(rows, columns=["trial_id", "backbone", "optimizer", "status", "reason"])
