"""What adaptive tuning costs a pair, in trial-epochs, for ``bocb plan``.

- **expected**: the proposals the tuner makes when the pair's optimum is at its start (a smooth
  bowl there, played through :func:`bocb.tuning.simulate.simulate`): the initial coarse stencil,
  the fine ring, the halving, the full-budget check of the best's four axis neighbours. A pair
  whose optimum is elsewhere costs more, up to:
- **worst case**: ``max_trials`` candidates, all at rung 0, the best 1/eta of them at each
  further rung (what successive halving promotes at most), or all of them at a rung that cannot
  rank them (see :func:`worst_epochs`), plus ``max_full`` full-budget trials from scratch for the
  climb (a loose bound: some of those were among the halving's), whatever the objective.

Both add the study's other seeds at full budget for the chosen setting.
"""

from __future__ import annotations

import itertools
import math

from bocb.tuning.policy import TuningConfig
from bocb.tuning.simulate import Simulated, simulate
from bocb.tuning.space import Space, value


def worst_epochs(config: TuningConfig, epochs: int) -> int:
    """Trial-epochs of the worst case (the tuning seed only): ``max_trials`` candidates halved rung
    by rung, or kept whole at a rung that cannot rank them (the policy's "No signal" rule), at most
    ``max_full`` of them to the full budget, plus ``max_full`` full-budget trials for the climb.
    Every pattern of silent rungs is tried and the dearest counted."""
    rungs = config.rung_epochs(epochs)
    worst = 0
    for silent in itertools.product((False, True), repeat=len(rungs) - 1):
        members, total, previous = config.max_trials, 0, 0
        for r, e in enumerate(rungs):
            total += members * (e - previous)
            previous = e
            if r + 1 < len(rungs):
                members = members if silent[r] else max(1, members // config.eta)
                if r + 2 == len(rungs):
                    members = min(members, config.max_full)
        worst = max(worst, total)
    return worst + config.max_full * epochs


def expected_run(space: Space, config: TuningConfig, epochs: int) -> Simulated:
    """The tuning of a pair whose optimum sits at the start (the tuning seed only): its
    candidates (``trials``) and trial-epochs (``epochs``)."""
    lr0, wd0 = value(space.start[0]), value(space.start[1])

    def bowl(lr: float, wd: float, epoch: int) -> float:
        w = math.log10(wd) if wd > 0 else -8.0
        w0 = math.log10(wd0) if wd0 > 0 else -8.0
        return -(math.log10(lr / lr0) ** 2) - 0.5 * (w - w0) ** 2 + epoch * 1e-3

    return simulate(space, config, epochs, bowl)


def expected_epochs(space: Space, config: TuningConfig, epochs: int) -> int:
    """Trial-epochs when the optimum sits at the start (the tuning seed only)."""
    return expected_run(space, config, epochs).epochs


def pair_cost(space: Space, config: TuningConfig, epochs: int, seeds: int) -> tuple[int, int]:
    """(expected, worst-case) trial-epochs of one pair with ``seeds`` seeds."""
    repeats = (seeds - 1) * epochs
    return expected_epochs(space, config, epochs) + repeats, worst_epochs(config, epochs) + repeats
