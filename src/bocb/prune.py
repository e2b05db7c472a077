"""Which final weights stay on disk after a run: a study's ``keep_weights`` (``all``, ``best``, ``none``).

At 45-110 MB per paper-scale model, the paper's 30,000-trial grid keeps about 2 TB of final
weights; most are never read again once their weight diagnostics are in the store. ``best`` keeps
the runs (every seed) of each pair's best setting, under both rules that read weights: the
analysis's (:func:`bocb.analysis.results.best_tuned`, which a held-out seed changes) and a transfer
study's (the highest mean over every seed), so the report's representative runs and every
pre-trained model a transfer study would choose stay. ``none`` keeps nothing.

A file is deleted only when its trial's final snapshot is in the store without an error (the
diagnostics were computed first), and its artifact row goes with it, so nothing later looks for
it. Pruning happens at the end of ``bocb run``; a pair's best can only improve as trials finish,
and a trial that later beats it keeps its own weights, so pruning early never loses a best.
"""

from __future__ import annotations

from pathlib import Path

from bocb.store import Store
from bocb.study import KEEP_WEIGHTS


def _best_runs(results) -> set[str]:
    """Trial ids of every run at each pair's best setting, under either rule (see the module doc)."""
    from bocb.analysis.results import Results

    setting = ["optimizer", "backbone", "lr", "weight_decay"]
    chosen = Results.of(results).runs[setting].drop_duplicates()
    means = results.groupby(setting, sort=False)["top1"].mean().reset_index()
    by_mean = means.loc[means.groupby(["optimizer", "backbone"], sort=False)["top1"].idxmax(), setting]
    keep = results.merge(chosen, on=setting)["trial_id"].tolist() + results.merge(by_mean, on=setting)["trial_id"].tolist()
    return set(keep)


def prune_weights(store: Store, study_id: str, keep: str) -> tuple[int, int]:
    """Delete the study's final weights that ``keep`` does not keep; returns (files, bytes) deleted."""
    if keep not in KEEP_WEIGHTS:
        raise ValueError(f"unknown keep_weights {keep!r}: valid: {', '.join(KEEP_WEIGHTS)}")
    if keep == "all":
        return 0, 0
    from bocb.analysis.from_store import results_frame

    try:
        results = results_frame(store, study_id)
    except ValueError:  # nothing finished yet
        return 0, 0
    kept = _best_runs(results) if keep == "best" else set()
    measured = {s["trial_id"] for s in store.snapshots(study_id) if s["source"] == "final" and s["error"] is None}
    files = size = 0
    for trial_id in results["trial_id"]:
        if trial_id in kept or trial_id not in measured:
            continue
        path = store.artifacts(trial_id).get("final_weights")
        if path is None:
            continue
        weights = Path(path)
        if weights.exists():
            size += weights.stat().st_size
            weights.unlink()
            files += 1
        store.drop_artifact(trial_id, "final_weights")
    return files, size
