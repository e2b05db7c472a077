"""The adaptive-tuning section: per pair, the setting chosen, what it cost, and whether the
optimum is interior or sits at a hard limit of the search (marked: its value may be an
underestimate, the tuner could not look further)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bocb.report.document import Section, Table, Text


def adaptive_section(pair_states: list[Any]) -> Section:
    """``pair_states``: :func:`bocb.tuning.adapter.states` of the study."""
    rows, marks = [], []
    for s in pair_states:
        d = s.decision
        at_limit = d.done and d.state.startswith("at limit")
        rows.append({
            "pair": s.key,
            "lr": "-" if s.best_lr is None else f"{s.best_lr:g}",
            "weight decay": "-" if s.best_wd is None else f"{s.best_wd:g}",
            "start": f"{s.start[0]:g}, {s.start[1]:g} ({s.start_source})",
            "trials": str(s.trials),
            "epochs": str(s.epochs),
            "optimum": (f"AT LIMIT ({d.state.removeprefix('at limit: ')})" if at_limit else d.state)
            if d.done else "not done",
        })
        marks.append({k: ("fail" if at_limit and k == "optimum" else "") for k in rows[-1] if k != "pair"})
    cells = pd.DataFrame(rows).set_index("pair") if rows else pd.DataFrame()
    limited = [s.key for s in pair_states if s.decision.done and s.decision.state.startswith("at limit")]
    budget = [s.key for s in pair_states if s.decision.done and s.decision.state == "budget"]
    total_trials = sum(s.trials for s in pair_states)
    total_epochs = sum(s.epochs for s in pair_states)
    blocks: list[Any] = [
        Text(f"Each pair was tuned adaptively: {total_trials} trials and {total_epochs} trial-epochs over "
             f"{len(pair_states)} pairs (low-fidelity rungs included; only full-budget trials are results)."),
        Table(cells, "Per pair: the chosen lr and weight decay, where the search started, the trials and "
                     "epochs it took, and whether the optimum is interior or at a hard limit.",
              marks=pd.DataFrame(marks, index=cells.index) if rows else None),
    ]
    if limited:
        blocks.append(Text(f"Optimum at a hard limit of the search ({len(limited)}): {', '.join(limited)}. "
                           "These pairs may do better beyond the limit; widen [tuning] lr_limits / wd_limits."))
    if budget:
        blocks.append(Text(f"Search stopped by max_trials or max_full before the optimum was interior "
                           f"({len(budget)}): {', '.join(budget)}."))
    return Section(
        title="Adaptive tuning",
        blocks=tuple(blocks),
        how_to_read="A pair's value is its best full-budget trial; 'interior' means its four neighbours (lr "
                    "and weight decay, 0.2 decade up and down) were trained at full budget too and none was "
                    "better; 'diverged' means no full-budget candidate finished.",
        gap="The paper does not state its tuning budget per pair; here it is measured.",
    )
