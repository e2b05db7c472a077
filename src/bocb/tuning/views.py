"""Tables of adaptive tuning's per-pair state, for ``bocb status``, ``bocb run`` and the report."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bocb.tuning.adapter import PairState, describe


def state_rows(pair_states: list[PairState]) -> list[dict[str, Any]]:
    """One plain row per pair: what the table shows, and what ``bocb status --json`` prints."""
    return [{
        "pair": s.key, "backbone": s.backbone, "optimizer": s.optimizer, "state": describe(s),
        "optimum": s.decision.state if s.decision.done else None,
        "start_lr": s.start[0], "start_wd": s.start[1], "start_source": s.start_source,
        "candidates": s.decision.candidates, "left": s.decision.left, "trials": s.trials, "epochs": s.epochs,
        "best_lr": s.best_lr, "best_wd": s.best_wd, "best_score": s.decision.best_score,
    } for s in pair_states]


def tuning_table(pair_states: list[PairState]) -> Table:
    table = Table(title="adaptive tuning per pair (best: full-budget test score on the tuning seed)")
    for col in ("pair", "start", "state", "candidates", "left", "trials", "epochs", "best lr", "best wd", "best"):
        table.add_column(col)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in state_rows(pair_states):
        table.add_row(r["pair"], f"{r['start_lr']:g}, {r['start_wd']:g} ({r['start_source']})", r["state"],
                      str(r["candidates"]), str(r["left"]), str(r["trials"]), str(r["epochs"]),
                      fmt(r["best_lr"], "g"), fmt(r["best_wd"], "g"), fmt(r["best_score"], ".2f"))
    return table
