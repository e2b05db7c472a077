"""The proposal function: a pair's observations in, the next proposals (or "done") out.

:func:`decide` is pure and deterministic: the same observations give the same decision, whatever
order results arrived in and however often it is asked. It has no state of its own; everything it
knows is in the store (the adapter builds the observations from it), which is what makes a killed
and restarted study propose exactly what it would have.

The search (per pair, on the study's first seed):

1. **Pattern search at the lowest rung.** Start with the 3 x 3 stencil of the coarse step around
   the start. Then, for the best candidate so far by its rung-0 score, add its untried stencil
   points at the coarse step; once it has none left, at the fine step. This is the boundary rule:
   a best on the edge of what was tried always has untried stencil points outward, so the search
   extends until the best is interior or sits on a hard limit (stencils are clamped to the limits).
2. **Successive halving** (eta = 3 by default) over all candidates: S_0 is every candidate; S_r+1
   is the best max(1, |S_r| // eta) of S_r by the score at rung r (to the full budget, at most
   ``max_full``). Members of S_r+1 that have not
   reached rung r+1 are promoted (resumed from their checkpoint to the next rung's epoch). Rungs
   are filled in order: no promotion to r+2 is decided while one to r+1 is outstanding.
3. **Boundary rule at full budget.** The best full-budget candidate's four axis neighbours at the
   fine step (lr up and down, weight decay up and down) are judged at the full budget too: a
   neighbour seen only at a lower rung is promoted to it, an untried one is proposed straight at
   it. When a neighbour wins, the same holds around it: a hill-climb at full fidelity, until the
   best beats all four (``interior``) or sits on a hard limit.

   Why at full budget: rankings after a ninth of the schedule favour larger learning rates (they
   learn faster early, not further), and weight decay has barely acted yet. On real CIFAR-10
   (benchmarks/tuning.py, 9 epochs, rungs at 1, 3 and 9) successive halving alone chose a learning
   rate 2-2.5x the grid's best in each of the first three pairs, because the lower one had lost at
   epoch 1; judged at epoch 1 again, its neighbours would lose the same way.

The pair is done when nothing is outstanding: its optimum is the best full-budget candidate,
``interior`` or ``at limit`` (which one), or ``budget`` when ``max_trials`` (candidates) or
``max_full`` (full-budget results, diverged ones included) stopped the search while the best still
had a neighbour to judge; ``diverged`` when no full-budget candidate finished (the pair fails).

Ties. Equal scores are common at low fidelity (an accuracy on a few hundred test images moves in
steps, and after one epoch weight decay has barely acted, so settings that differ only in it score
the same). They go to the candidate nearest the start, the paper's choice or the family's: where
the results cannot tell settings apart, the prior stands. (Breaking them by lattice index instead
walked one study's weight decay down, tie by tie, from 5e-4 to 0.)

No signal. A rung whose surviving candidates all score the same (every setting still at chance
after the first epoch, as AlexNet with SGD-M on CIFAR-10 was in benchmarks/tuning.py) cannot rank
them: halving would keep the ones nearest the start for no reason the results give. Such a rung
decides nothing: all its members (those that did not diverge) go on to the next rung, and to the
full budget at most ``max_full`` of them (the candidates nearest the start). Only exact ties count; a rung that separates its
candidates by any margin ranks them as usual.

Why synchronous halving rather than ASHA's asynchronous promotions: ASHA promotes whatever is in
the top 1/eta *when a result arrives*, so its proposals depend on arrival order; a rerun after
kill -9 would propose differently. Here a decision is taken only when none of the pair's trials is
pending or running, so it depends on the set of results alone. Parallelism comes from the many
pairs of a study (and from the candidates of one wave), not from within-rung asynchrony.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from bocb.tuning.space import UNITS_PER_DECADE, Space

Point = tuple[int, int]


@dataclass(frozen=True)
class TuningConfig:
    """The adaptive tuner's knobs (a study's ``[study.tuning]`` table; defaults stated here).

    ``rungs``: fidelity levels, the last is the full schedule; rung r of R ends at epoch
    ``round(epochs / eta ** (R - 1 - r))`` (at least 1; equal rungs merge). ``eta``: halving rate.
    ``step`` / ``fine_step``: stencil steps in decades (multiples of 0.1, the lattice unit).
    ``max_trials``: candidates per pair at most. ``max_full``: full-budget results per pair at
    most (the climb of rule 3 stops there). ``lr_limits`` / ``wd_limits``: hard limits.
    """

    rungs: int = 3
    eta: int = 3
    step: float = 0.5
    fine_step: float = 0.2
    max_trials: int = 50
    max_full: int = 10
    lr_limits: tuple[float, float] = (1e-6, 10.0)
    wd_limits: tuple[float, float] = (1e-6, 1.0)

    def __post_init__(self) -> None:
        if self.rungs < 1 or self.eta < 2 or self.max_trials < 1 or self.max_full < 1:
            raise ValueError(f"need rungs >= 1, eta >= 2, max_trials >= 1, max_full >= 1; got rungs "
                             f"{self.rungs}, eta {self.eta}, max_trials {self.max_trials}, max_full {self.max_full}")
        for name in ("step", "fine_step"):
            units = getattr(self, name) * UNITS_PER_DECADE
            if units < 0.999 or abs(units - round(units)) > 1e-6:
                raise ValueError(f"{name} must be a positive multiple of 0.1 decade, got {getattr(self, name)}")
        if self.fine_step > self.step:
            raise ValueError(f"fine_step ({self.fine_step}) must not exceed step ({self.step})")

    @property
    def steps(self) -> tuple[int, ...]:
        """Stencil steps in lattice units, coarse first."""
        units = (round(self.step * UNITS_PER_DECADE), round(self.fine_step * UNITS_PER_DECADE))
        return tuple(dict.fromkeys(units))

    def rung_epochs(self, epochs: int) -> tuple[int, ...]:
        """The epoch each rung ends at, increasing, the last one ``epochs``."""
        out = [max(1, round(epochs / self.eta ** (self.rungs - 1 - r))) for r in range(self.rungs)]
        return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Observation:
    """One candidate of a pair as the store has it.

    ``reached``: the highest rung it has a result for (-1: none yet), never above the rungs the
    tuner asked of it. ``scores[r]``: its score (test top-1) at rung r's epoch (``-inf`` when it
    diverged or failed before). ``busy``: pending or running. ``final``: it can train no further
    (diverged, failed, or done at the full budget). ``entered``: the rung it was first proposed
    at (0, or the top for a neighbour judged straight at full budget by rule 3).
    """

    point: Point
    reached: int
    scores: tuple[float, ...]
    busy: bool = False
    final: bool = False
    entered: int = 0


@dataclass(frozen=True)
class Decision:
    """What the pair needs next. ``proposals``: ``(point, rung)`` to run (rung 0: a new candidate;
    higher: a promotion). ``done`` with ``best`` (the optimum), ``state`` (``interior``,
    ``at limit: <which>`` or ``budget``). ``waiting``: trials are still pending or running."""

    proposals: tuple[tuple[Point, int], ...] = ()
    done: bool = False
    waiting: bool = False
    best: Point | None = None
    best_score: float | None = None
    state: str = "searching"
    rung: int = 0  # the rung being filled (for status views)
    candidates: int = 0
    left: int = 0  # candidates still in the running for a higher rung
    extra: dict = field(default_factory=dict)


def _ranked(space: Space, obs: list[Observation], rung: int) -> list[Observation]:
    """Best first by the score at ``rung``; among equal scores the one nearest the start, then
    the smaller point, so order never matters (see "Ties" in the module doc)."""
    return sorted(obs, key=lambda o: (-o.scores[rung], space.distance(o.point), o.point))


def _untried(space: Space, centre: Point, tried: set[Point], steps: tuple[int, ...]) -> list[Point]:
    """The centre's untried stencil points at the first step (coarse first) that has any."""
    for s in steps:
        new = [p for p in space.neighbours(centre, s) if p not in tried]
        if new:
            return new
    return []


def decide(space: Space, config: TuningConfig, observations: Mapping[Point, Observation],
           epochs: int) -> Decision:
    """The next proposals for one pair (see the module doc); pure and deterministic."""
    n_rungs = len(config.rung_epochs(epochs))
    top = n_rungs - 1
    obs = list(observations.values())
    steps = config.steps
    if not obs:
        return Decision(proposals=tuple((p, 0) for p in space.neighbours(space.start, steps[0])),
                        candidates=0)
    if any(o.busy for o in obs):
        busy_rung = min(o.reached + 1 for o in obs if o.busy)
        return Decision(waiting=True, rung=busy_rung, candidates=len(obs),
                        left=sum(1 for o in obs if o.busy))
    tried = {o.point for o in obs}
    room = config.max_trials - len(obs)

    # 1. pattern search on the rung-0 scores (of the candidates that entered there: rule 3's
    # full-budget neighbours have rung-0 scores too, but are not part of this search)
    searched = [o for o in obs if o.entered == 0]
    best0 = _ranked(space, searched, 0)[0]
    new = _untried(space, best0.point, tried, steps)
    if new and room > 0:
        return Decision(proposals=tuple((p, 0) for p in new[:room]), rung=0, candidates=len(obs))
    stopped_by_budget = bool(new)

    # 2. successive halving, one rung at a time; a rung that cannot tell its members apart
    # promotes them all (see "No signal" in the module doc)
    members = searched
    for r in range(top):
        alive = [o for o in members if not math.isinf(o.scores[r])]
        if len(alive) > 1 and len({o.scores[r] for o in alive}) == 1:
            members, keep = alive, len(alive)
        else:
            keep = max(1, len(members) // config.eta)
        if r + 1 == top:  # full-budget runs: never more than max_full
            keep = min(keep, config.max_full)
        members = _ranked(space, members, r)[:keep]
        promote = [o for o in members if o.reached < r + 1 and not o.final]
        if promote:
            return Decision(proposals=tuple((o.point, r + 1) for o in promote), rung=r + 1,
                            candidates=len(obs), left=len(members))

    # 3. the boundary rule at full budget: a hill-climb over the best's axis neighbours
    full = [o for o in obs if o.reached >= top]
    best = _ranked(space, full, top)[0]
    if math.isinf(best.scores[top]):  # every full-budget candidate diverged or failed: nothing to climb from
        return Decision(done=True, best=best.point, best_score=None, state="diverged", rung=top,
                        candidates=len(obs), left=0)
    # Full-budget results so far: every candidate still alive at rung 0 that reached the top,
    # whether it then finished or diverged there (both cost a full-budget run).
    judged = sum(1 for o in full if not math.isinf(o.scores[0]))
    wanted = [p for p in space.axis_neighbours(best.point, steps[-1])
              if p not in observations or (observations[p].reached < top and not observations[p].final)]
    proposals: list[tuple[Point, int]] = []
    for p in wanted:
        if len(proposals) >= config.max_full - judged:
            break
        if p not in observations:  # a new candidate: within max_trials
            if room <= 0:
                continue
            room -= 1
        proposals.append((p, top))
    if proposals:
        return Decision(proposals=tuple(proposals), rung=top, candidates=len(obs), left=len(proposals),
                        best=best.point, best_score=best.scores[top])
    limit = space.at_limit(best.point)
    state = "budget" if (wanted or stopped_by_budget) else (f"at limit: {limit}" if limit else "interior")
    score = best.scores[top]
    return Decision(done=True, best=best.point, best_score=None if math.isinf(score) else score,
                    state=state, rung=top, candidates=len(obs), left=0)
