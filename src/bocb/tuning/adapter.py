"""The tuner against a study in the store: observations in, proposals recorded as trials.

:func:`propose` is what ``bocb run`` calls when it has nothing to claim. For every pair it builds
the observations from the store (the pair's rung rows, its trials' status, their test top-1 at
the rung epochs), asks :func:`bocb.tuning.policy.decide`, and records the proposals with
:meth:`bocb.store.Store.add_proposals`: a new candidate is a pending trial whose spec is the *full*
schedule (so its id is the one a grid study gives the same setting) with a rung row saying where to
stop; a promotion is one more rung row for a paused trial, which makes it pending again. Nothing
else is kept anywhere, so a runner killed at any point and started again proposes the same things,
and two runners proposing at once insert each proposal once (rung rows are keyed by trial and
rung); claims then go through the store's lease as for any trial.

Checkpoints live in the artifacts folder under the trial id. A trial trained further than the
tuner asked (a grid study's trial with the same id, or one trained through another store sharing
that folder) comes back ``done``; the tuner still reads it only up to the rungs it asked for, so
its proposals are those of a run that trained every candidate itself.

Tuning runs on the study's first seed; when a pair is done, its optimum runs at full budget on
the other seeds. A pair's value in the analysis comes only from full-budget (``done`` or
``diverged``) trials; paused trials and the epoch rows of rungs are low-fidelity and marked so by
their status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bocb.recipes import get_recipe
from bocb.store import Store
from bocb.study import Study, StudyError, pair_trial
from bocb.tuning.policy import Decision, Observation, Point, TuningConfig, decide
from bocb.tuning.space import Space, index, pair_space, value
from bocb.zoo import get_backbone_info

_FINAL = ("done", "diverged", "failed")
_BUSY = ("pending", "running")


@dataclass(frozen=True)
class Pair:
    """One backbone x optimizer entry of an adaptive study, with its search space."""

    key: str
    backbone: dict[str, Any]
    optimizer: dict[str, Any]
    space: Space
    epochs: int  # the full schedule


@dataclass(frozen=True)
class PairState:
    """A pair's tuning state, for ``bocb status``, the live view and the report."""

    key: str
    backbone: str
    optimizer: str
    decision: Decision
    trials: int  # every trial of the pair (candidates and seed repeats)
    epochs: int  # trial-epochs trained so far, all rungs and seeds
    rung_epochs: tuple[int, ...]
    best_lr: float | None
    best_wd: float | None
    start: tuple[float, float]
    start_source: str


def config_of(study: Study) -> TuningConfig:
    return study.tuner or TuningConfig()


def pairs(study: Study) -> list[Pair]:
    """The study's pairs, in file order; a bad center or limits is a :class:`StudyError`."""
    config = config_of(study)
    out = []
    for b in study.backbones:
        info = get_backbone_info(b["name"])
        epochs = study.overrides.get("epochs") or get_recipe(b.get("recipe") or info.recipe, study.tier).epochs
        for o in study.optimizers:
            centre = o.get("center")
            try:
                space = pair_space(b["name"], o["name"], lr_limits=config.lr_limits, wd_limits=config.wd_limits,
                                   center=(centre["lr"], centre["weight_decay"]) if centre else None,
                                   group=b.get("group"))
            except ValueError as exc:
                raise StudyError(f"{study.path}: {b['name']} x {o['name']}: {exc}") from None
            key = f"{info.short} x {o['name']}"
            while any(p.key == key for p in out):  # the same pair listed twice (other policy, ...)
                key += "'"
            out.append(Pair(key, b, o, space, epochs))
    return out


def _observations(pair: Pair, rows: list[dict[str, Any]], scores: dict[tuple[str, int], float | None],
                  rung_epochs: tuple[int, ...], seed: int) -> dict[Point, Observation]:
    top = len(rung_epochs) - 1
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["seed"] == seed:
            by_trial.setdefault(r["trial_id"], []).append(r)
    obs: dict[Point, Observation] = {}
    for trial_id, rs in by_trial.items():
        status = rs[0]["status"]
        requested = max(r["rung"] for r in rs)
        if status == "done":
            # Trained further than asked (a grid study's trial, or another study's, with the same
            # id): it counts only as far as this tuner asked, so what it learns from the store is
            # what it would have learned from training the trial itself. A promotion then costs
            # nothing: a rung row, no training.
            reached, final = min(requested, top), requested >= top
        elif status in _FINAL:  # diverged or failed: no further rung will have a score
            reached, final = top, True
        else:
            reached, final = (requested - 1 if status in _BUSY else requested), False
        got = [scores.get((trial_id, rung_epochs[k])) for k in range(reached + 1)]
        point = (index(rs[0]["lr"]), index(rs[0]["weight_decay"] or 0.0))
        obs[point] = Observation(point, reached, tuple(-math.inf if v is None else v for v in got),
                                 busy=status in _BUSY, final=final, entered=min(r["rung"] for r in rs))
    return obs


def _rows_by_pair(store: Store, study: Study, plist: list[Pair]):
    config = config_of(study)
    epochs = sorted({e for p in plist for e in config.rung_epochs(p.epochs)})
    rows, scores = store.tuning_rows(study.study_id, epochs)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(r["pair"], []).append(r)
    return grouped, scores


def propose(store: Store, study: Study, num_classes: int) -> int:
    """Ask the tuner for every pair's next trials and record them; returns how many became runnable.

    A promotion of a trial that already finished (a shared full-budget trial) adds its rung row
    but nothing to run, so the tuner is asked again until something is runnable or nothing
    changes. That ends: every round that changes something adds a rung row, and a pair has at most
    ``max_trials`` x rungs of them.
    """
    config = config_of(study)
    plist = pairs(study)
    runnable = 0
    while True:
        grouped, scores = _rows_by_pair(store, study, plist)
        changed = False
        for pair in plist:
            rung_epochs = config.rung_epochs(pair.epochs)
            rows = grouped.get(pair.key, [])
            decision = decide(pair.space, config, _observations(pair, rows, scores, rung_epochs, study.seeds[0]),
                              pair.epochs)
            wanted = [(point, rung, study.seeds[0]) for point, rung in decision.proposals]
            if decision.done:  # the optimum on the other seeds, at full budget
                wanted += [(decision.best, len(rung_epochs) - 1, s) for s in study.seeds[1:]]
            have = {(r["trial_id"], r["rung"]) for r in rows}
            records = []
            for point, rung, seed in wanted:
                lr, wd = pair.space.values(point)
                spec = pair_trial(study, pair.backbone, pair.optimizer, lr, wd, seed, num_classes)
                if (spec.trial_id, rung) not in have:
                    records.append((spec.trial_id, spec.to_dict(), rung, rung_epochs[rung]))
            if records:
                runnable += store.add_proposals(study.study_id, pair.key, records)
                changed = True
        if runnable or not changed:
            return runnable


def states(store: Store, study: Study) -> list[PairState]:
    """Every pair's tuning state as the store has it (nothing is proposed or written)."""
    config = config_of(study)
    plist = pairs(study)
    grouped, scores = _rows_by_pair(store, study, plist)
    trained = store.trained_epochs(study.study_id)
    out = []
    for pair in plist:
        rung_epochs = config.rung_epochs(pair.epochs)
        rows = grouped.get(pair.key, [])
        decision = decide(pair.space, config, _observations(pair, rows, scores, rung_epochs, study.seeds[0]),
                          pair.epochs)
        ids = {r["trial_id"] for r in rows}
        best = pair.space.values(decision.best) if decision.best is not None else (None, None)
        out.append(PairState(
            pair.key, get_backbone_info(pair.backbone["name"]).short, pair.optimizer["name"], decision,
            len(ids), sum(trained.get(t, 0) for t in ids), rung_epochs, best[0], best[1],
            (value(pair.space.start[0]), value(pair.space.start[1])), pair.space.source,
        ))
    return out


def describe(state: PairState) -> str:
    """One line: where the pair's tuning stands."""
    d = state.decision
    if d.done:
        return f"done, {d.state}"
    if d.waiting:
        return f"rung {d.rung + 1}/{len(state.rung_epochs)} (epoch {state.rung_epochs[min(d.rung, len(state.rung_epochs) - 1)]}), {d.left} running"
    if not d.candidates:
        return "not started"
    return f"proposing rung {d.rung + 1}/{len(state.rung_epochs)}"


class Tuner:
    """What ``bocb run`` holds for an adaptive study: ``propose`` for the runner, and a summary
    line for the live view (refreshed at each proposal, so the view never queries the store)."""

    def __init__(self, store: Store, study: Study, num_classes: int):
        self.store, self.study, self.num_classes = store, study, num_classes
        self.proposed = 0
        self._line = "tuning: not started"

    def propose(self) -> int:
        new = propose(self.store, self.study, self.num_classes)
        self.proposed += new
        self._line = summary(self.states())
        return new

    def states(self) -> list[PairState]:
        return states(self.store, self.study)

    def summary_line(self) -> str:
        return self._line


def summary(pair_states: list[PairState]) -> str:
    """``tuning: 12 pairs; 3 done (2 interior, 1 at a limit); 9 searching, rung 1: 6, rung 2: 3``."""
    done = [s for s in pair_states if s.decision.done]
    interior = sum(1 for s in done if s.decision.state == "interior")
    limit = sum(1 for s in done if s.decision.state.startswith("at limit"))
    diverged = sum(1 for s in done if s.decision.state == "diverged")
    rungs: dict[int, int] = {}
    for s in pair_states:
        if not s.decision.done:
            rungs[s.decision.rung + 1] = rungs.get(s.decision.rung + 1, 0) + 1
    searching = ", ".join(f"rung {r}: {n}" for r, n in sorted(rungs.items()))
    return (f"tuning: {len(pair_states)} pairs; {len(done)} done ({interior} interior, {limit} at a limit, "
            f"{diverged} diverged, {len(done) - interior - limit - diverged} stopped by max_trials or max_full); "
            f"{len(pair_states) - len(done)} searching{', ' + searching if searching else ''}")
