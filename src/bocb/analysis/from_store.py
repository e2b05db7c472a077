"""A study in the store as the analysis's long results frame (the analysis never sees the trainer).

One row per finished trial: ``optimizer``, ``backbone`` (paper short names), ``top1``, ``seed``,
``lr``, ``weight_decay``, ``category``, ``status``, ``trial_id``, and the trial's measured cost:
``seconds`` (training seconds, evaluation and compilation excluded) and ``peak_memory_mb`` (NaN
when the trial did not record it). Choices, stated in the report:

- ``top1`` is the trial's score (the store's ``final_score``/``best_score``: test top-1 % for
  classification, box or keypoint AP % for detection or pose; the column keeps the name the
  paper's tables and every analysis function use). It is the **final-epoch** test score by default (``metric="final"``): the
  best epoch on the test set is itself a selection on test numbers. ``metric="best"`` gives the
  best epoch, as the paper's tools report.
- A ``diverged`` trial is a result: the accuracy of the weights it ended with (the trainer
  evaluates them; chance when they cannot be evaluated), never an earlier epoch's. Records from
  before that rule without a final evaluation count as chance (100 / classes). ``failed`` trials
  (exceptions, lost workers) are not results and are left out; :func:`excluded` lists them.
- A study with ``selection = "holdout"`` adds ``val_top1`` (the held-out images' accuracy of the
  same weights), which :func:`bocb.analysis.results.best_tuned` chooses settings on.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from bocb.store import Store
from bocb.tasks import task_of

COLUMNS = ["optimizer", "backbone", "top1", "seed", "lr", "weight_decay", "category", "status", "trial_id",
           "val_top1", "seconds", "peak_memory_mb"]
MEMORY_KEY = "peak_memory_mb"  # the store's column of a trial's peak accelerator/host memory (NULL: not recorded)
METRICS = ["alpha", "alpha_status", "n_eig", "n_tail", "xmin", "entropy", "l2", "pca_energy", "log_norm",
           "log_spectral_norm", "stable_rank", "alpha_weighted", "moved"]
WEIGHT_COLUMNS = ["snapshot_id", "source", "backbone", "optimizer", "lr", "weight_decay", "seed", "status",
                  "trial_id", "pretrained", "conv", "layer_index", "layer", "kind", "rows", "cols", *METRICS]


def results_frame(store: Store, study_id: str | None, metric: Literal["final", "best"] = "final") -> pd.DataFrame:
    """The study's done and diverged trials as a results frame (see the module doc)."""
    if metric not in ("final", "best"):
        raise ValueError(f"unknown metric {metric!r}: valid: final, best")
    rows = []
    for t in store.trials(study_id):
        if t["status"] not in ("done", "diverged"):
            continue
        final = t["status"] == "diverged" or metric == "final"  # a diverged run: the weights it ended with
        value = t["final_score"] if final else t["best_score"]
        if value is None:  # diverged before the first evaluation: chance (box AP 0 for detection)
            record = store.record(t["trial_id"]) or {}
            value = task_of(record["spec"]).unscored(record)
        val = (t["final_val"] if final else t["best_val"]) if t["selection"] == "holdout" else None
        memory = t[MEMORY_KEY]
        rows.append({
            "optimizer": t["optimizer"], "backbone": t["backbone"], "top1": float(value), "seed": t["seed"],
            "lr": t["lr"], "weight_decay": t["weight_decay"] or 0.0, "category": t["category"],
            "status": t["status"], "trial_id": t["trial_id"], "val_top1": val,
            "seconds": float("nan") if t.get("seconds_train") is None else float(t["seconds_train"]),
            "peak_memory_mb": float("nan") if memory is None else float(memory),
        })
    if not rows:
        raise ValueError("the study has no finished (done or diverged) trials yet: run it first")
    return pd.DataFrame(rows, columns=COLUMNS)


def transfer_frame(store: Store, study_id: str, metric: Literal["final", "best"] = "final") -> pd.DataFrame:
    """A transfer study's results as the analysis's frame, pre-train x fine-tune.

    ``backbone`` is the pre-trained model's label (``"R-50 / LAMB"``), so every table and statistic
    of the analysis reads "per pre-trained model"; ``optimizer`` is the fine-tuning optimizer.
    Added: ``network`` (the backbone's short name), ``pretrain_optimizer`` and ``pretrain_trial``
    (the pre-training trial's id, None for a foreign checkpoint). ``top1`` is the trial's headline
    metric (top-1 % for classification, COCO box AP % for detection, keypoint AP % for pose).
    """
    frame = results_frame(store, study_id, metric)
    specs = store.specs(study_id)
    sources = {tid: specs[tid].get("pretrained") for tid in frame["trial_id"]}
    if not all(sources.values()):
        raise ValueError("not a transfer study: some trials have no pre-trained model")
    ids = frame["trial_id"]
    return frame.assign(network=frame["backbone"], backbone=ids.map(lambda t: sources[t]["label"]),
                        pretrain_optimizer=ids.map(lambda t: sources[t]["optimizer"]),
                        pretrain_trial=ids.map(lambda t: sources[t]["trial_id"]))


def excluded(store: Store, study_id: str | None) -> pd.DataFrame:
    """Trials that are not results (failed, pending, running, skipped), with their reason."""
    rows = [
        {"trial_id": t["trial_id"], "backbone": t["backbone"], "optimizer": t["optimizer"],
         "status": t["status"], "reason": t["error"] or t["skip_reason"] or ""}
        for t in store.trials(study_id) if t["status"] not in ("done", "diverged")
    ]
    return pd.DataFrame(rows, columns=["trial_id", "backbone", "optimizer", "status", "reason"])


def weights_frame(store: Store, study_id: str | None, snapshot_ids: set[str] | None = None) -> pd.DataFrame:
    """The study's weight diagnostics, one row per (snapshot, layer): :data:`WEIGHT_COLUMNS`.

    ``source`` is ``final`` (a trial's final weights; ``optimizer``, ``lr``, ``weight_decay``,
    ``seed``, ``status`` and ``trial_id`` are the trial's) or ``init`` (the backbone's random
    initialisation; ``optimizer`` is ``"init"`` and the trial fields are empty). ``moved`` is the
    layer's relative distance from the trial's starting weights (NaN for init). ``pretrained`` is a
    fine-tuning trial's pre-trained model label (None otherwise). ``conv`` is the snapshot's
    conv matricisation (``slices`` or ``reshape``). ``layer_index``
    counts a snapshot's Linear/Conv2d layers from the input side. Snapshots whose measurement
    failed have no rows (:func:`snapshot_errors` lists them). Missing metrics (a fit that did not
    succeed) are NaN. Empty frame when nothing was measured. ``snapshot_ids`` keeps only those
    snapshots (with ``study_id=None``: from the whole store, e.g. a transfer study's pre-trained
    models, which belong to another study).
    """
    snaps = [s for s in store.snapshots(study_id) if s["error"] is None
             and (snapshot_ids is None or s["snapshot_id"] in snapshot_ids)]
    layers = pd.DataFrame(store.layer_metrics([s["snapshot_id"] for s in snaps]))
    if layers.empty:
        return pd.DataFrame(columns=WEIGHT_COLUMNS)
    trials = {t["trial_id"]: t for t in store.trials(study_id)}
    info = []
    for s in snaps:
        t = trials.get(s["trial_id"]) or {}
        info.append({
            "snapshot_id": s["snapshot_id"], "source": s["source"], "backbone": s["backbone"],
            "optimizer": t.get("optimizer", "init") if s["source"] == "final" else "init",
            "lr": t.get("lr"), "weight_decay": t.get("weight_decay"), "seed": s["seed"],
            "status": t.get("status"), "trial_id": s["trial_id"], "pretrained": t.get("pretrained"),
            "conv": s["settings"].get("conv", "reshape"),  # snapshots from before it was recorded
        })
    frame = pd.DataFrame(info).merge(layers, on="snapshot_id", how="inner")
    for column in METRICS:
        if column != "alpha_status":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame[WEIGHT_COLUMNS].reset_index(drop=True)


def snapshot_errors(store: Store, study_id: str | None) -> pd.DataFrame:
    """Snapshots whose measurement failed, with the error."""
    rows = [{"snapshot_id": s["snapshot_id"], "source": s["source"], "backbone": s["backbone"],
             "error": s["error"]} for s in store.snapshots(study_id) if s["error"] is not None]
    return pd.DataFrame(rows, columns=["snapshot_id", "source", "backbone", "error"])
