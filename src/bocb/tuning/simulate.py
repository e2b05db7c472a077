"""Driving the proposal function without training: for tests and for ``bocb plan``'s estimate.

:func:`simulate` plays one pair's tuning against an objective ``f(lr, wd, epoch) -> score`` (lr
and wd as values; wd may be 0), answering every proposal at once, and returns the decision it
ends with and the epochs the candidates trained. The tuner under test is exactly the one
``bocb run`` uses: :func:`bocb.tuning.policy.decide`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bocb.tuning.policy import Decision, Observation, Point, TuningConfig, decide
from bocb.tuning.space import Space, value

Objective = Callable[[float, float, int], float]


@dataclass(frozen=True)
class Simulated:
    decision: Decision
    trials: int
    epochs: int  # trial-epochs trained by all candidates together
    rounds: int
    rung_counts: tuple[int, ...]  # candidates that reached each rung


def simulate(space: Space, config: TuningConfig, epochs: int, objective: Objective,
             max_rounds: int = 1000) -> Simulated:
    """Run the tuner on ``objective`` until it is done (see the module doc)."""
    rung_epochs = config.rung_epochs(epochs)
    obs: dict[Point, Observation] = {}
    for rounds in range(1, max_rounds + 1):
        decision = decide(space, config, obs, epochs)
        if decision.done:
            break
        for point, rung in decision.proposals:
            lr, wd = value(point[0]), value(point[1])
            scores = tuple(objective(lr, wd, e) for e in rung_epochs[:rung + 1])
            entered = obs[point].entered if point in obs else rung
            obs[point] = Observation(point, rung, scores, entered=entered)
    else:
        raise RuntimeError(f"the tuner did not finish in {max_rounds} rounds")
    reached = [o.reached for o in obs.values()]
    counts = tuple(sum(1 for r in reached if r >= k) for k in range(len(rung_epochs)))
    spent = sum(rung_epochs[o.reached] for o in obs.values())
    return Simulated(decision, len(obs), spent, rounds, counts)
