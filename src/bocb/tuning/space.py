"""A pair's (lr, weight decay) search space: a log lattice with hard limits and a start point.

Lattice. Both axes use the Renard R10 preferred numbers, 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8
times powers of ten: ten points a decade (a lattice unit is 0.1 decade), an integer index ``k``
per value. R10 holds the 1-2-5 series exactly, so every point of the optimizers' 5 x 5 grids is a
lattice point (an adaptive study and a grid study share those trials), and every value the paper
published (Tables A4/A5) lies within :data:`TOLERANCE_DECADES` of one (1.4 -> 1.25 is the worst,
0.049 decade; 1.2 -> 1.25, 0.6 -> 0.63, 2.4 -> 2.5, 3e-3 -> 3.15e-3 are within 0.022).

Weight decay 0 is a level of its own (:data:`ZERO`), next to the lowest weight decay the space
holds. The paper's "1e-8" (written for optimizers it ran without decay) is within the space's
tolerance of that level: over 10^5 steps at lr <= 1e-2 it shrinks weights by at most 1e-5 in all.

Hard limits (defaults, overridable per study): lr in [1e-6, 10], weight decay 0 or in [1e-6, 1].
They hold every published choice with room either side. A search never steps past a limit; a
step that would is clamped to it, and an optimum found at a limit is recorded as such.

Start. The pair's published choice where the paper has one; else the mode of the paper's
choices for that optimizer over the backbones of the same design family (the zoo's ``group``);
else the optimizer's own centre (its registry ``lr`` / ``weight_decay``); a study entry's
``center`` overrides all three.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import cache

from bocb import paper
from bocb.optim import get_optimizer_info
from bocb.registry import UnknownNameError
from bocb.zoo import get_backbone_info

R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
UNITS_PER_DECADE = len(R10)
# Largest distance (in decades) between a published value and its lattice point; the R10
# rounding makes the lattice's own worst case 0.05 decade.
TOLERANCE_DECADES = 0.05
# The weight-decay level "no decay". Below every lattice index a study can reach.
ZERO = -(10**6)
# Published weight decays at or below this are the paper's way of writing "no decay" (see above).
ZERO_EQUIVALENT = 1e-8

DEFAULT_LR_LIMITS = (1e-6, 10.0)
DEFAULT_WD_LIMITS = (1e-6, 1.0)


def value(k: int) -> float:
    """The lattice value of index ``k`` (``ZERO`` is 0.0): ``value(0) == 1.0``, ``value(-27) == 2e-3``."""
    if k == ZERO:
        return 0.0
    decade, i = divmod(k, UNITS_PER_DECADE)
    return float(f"{R10[i] * 10.0**decade:.6g}")


def index(v: float) -> int:
    """Index of the lattice point nearest to ``v`` in log space; 0 (and ``ZERO_EQUIVALENT``) -> ZERO."""
    if v < 0 or not math.isfinite(v):
        raise ValueError(f"a learning rate or weight decay must be finite and >= 0, got {v}")
    if v <= ZERO_EQUIVALENT:
        return ZERO
    guess = round(math.log10(v) * UNITS_PER_DECADE)
    return min(range(guess - 2, guess + 3), key=lambda k: (abs(math.log10(value(k) / v)), k))


def distance_decades(v: float) -> float:
    """How far ``v`` is from its lattice point, in decades (0 for weight decay 0)."""
    k = index(v)
    return 0.0 if k == ZERO else abs(math.log10(value(k) / v))


@dataclass(frozen=True)
class Space:
    """One pair's space: lattice indices within limits, the start, and how the start was chosen.

    Points are ``(lr_index, wd_index)``; ``wd_index`` may be :data:`ZERO`. ``neighbours`` steps by
    ``s`` units along each axis (3 x 3 stencil), clamping to the limits; from the lowest weight
    decay one step down is ``ZERO`` and from ``ZERO`` one step up is the lowest weight decay.
    """

    start: tuple[int, int]
    lr_min: int
    lr_max: int
    wd_min: int
    wd_max: int
    source: str  # paper | family | optimizer | study

    def contains(self, point: tuple[int, int]) -> bool:
        lr, wd = point
        return self.lr_min <= lr <= self.lr_max and (wd == ZERO or self.wd_min <= wd <= self.wd_max)

    def _lr_steps(self, k: int, s: int) -> list[int]:
        return sorted({max(self.lr_min, k - s), k, min(self.lr_max, k + s)})

    def _wd_steps(self, k: int, s: int) -> list[int]:
        if k == ZERO:
            return [ZERO, self.wd_min]
        down = ZERO if k == self.wd_min else max(self.wd_min, k - s)
        return sorted({down, k, min(self.wd_max, k + s)})

    def neighbours(self, point: tuple[int, int], s: int) -> list[tuple[int, int]]:
        """The 3 x 3 stencil of step ``s`` around ``point`` (itself included), in a fixed order."""
        return [(a, b) for a in self._lr_steps(point[0], s) for b in self._wd_steps(point[1], s)]

    def axis_neighbours(self, point: tuple[int, int], s: int) -> list[tuple[int, int]]:
        """The four points one step ``s`` along one axis (fewer at a limit), in a fixed order."""
        lr, wd = point
        return [(k, wd) for k in self._lr_steps(lr, s) if k != lr] + [(lr, k) for k in self._wd_steps(wd, s) if k != wd]

    def at_limit(self, point: tuple[int, int]) -> str | None:
        """Which hard limit ``point`` sits on (``lr min``, ``lr max``, ``wd max``), or None.

        Weight decay 0 is the natural end of its axis, not a limit the search was cut short by.
        """
        lr, wd = point
        sides = [name for name, hit in (("lr min", lr == self.lr_min), ("lr max", lr == self.lr_max),
                                        ("wd max", wd == self.wd_max)) if hit]
        return ", ".join(sides) or None

    def values(self, point: tuple[int, int]) -> tuple[float, float]:
        return value(point[0]), value(point[1])

    def distance(self, point: tuple[int, int]) -> int:
        """Lattice units from the start (lr and wd added; ``ZERO`` counts as one unit below the
        lowest weight decay, where its stencil puts it): the tuner's tie-break toward the prior."""
        def wd_position(k: int) -> int:
            return self.wd_min - 1 if k == ZERO else k
        return abs(point[0] - self.start[0]) + abs(wd_position(point[1]) - wd_position(self.start[1]))


@cache
def _published() -> dict[tuple[str, str], tuple[float, float]]:
    df = paper.best_hparams()
    return {(r.optimizer, r.backbone): (float(r.lr), float(r.weight_decay)) for r in df.itertuples()}


def _group(backbone_short: str) -> str | None:
    try:
        return get_backbone_info(backbone_short).group
    except UnknownNameError:
        return None  # Tables A4/A5 name a few backbones bocb does not register


@cache
def family_centre(optimizer_short: str, group: str) -> tuple[int, int] | None:
    """Mode of the published (lr, wd) lattice indices of ``optimizer`` over backbones of ``group``.

    Each axis takes its own mode; ties go to the value nearest the optimizer's registry centre
    (then the smaller), so the choice never depends on table order. None without published data.
    """
    rows = [(lr, wd) for (o, b), (lr, wd) in _published().items() if o == optimizer_short and _group(b) == group]
    if not rows:
        return None
    info = get_optimizer_info(optimizer_short)
    out = []
    for axis, centre in ((0, info.lr), (1, info.weight_decay)):
        counts = Counter(index(r[axis]) for r in rows)
        top = max(counts.values())
        ref = index(centre)
        ties = [k for k, n in counts.items() if n == top]
        out.append(min(ties, key=lambda k: (abs(k - ref), k)))  # ZERO is far below every index
    return out[0], out[1]


def pair_space(
    backbone: str, optimizer: str, *, center: tuple[float, float] | None = None,
    lr_limits: tuple[float, float] = DEFAULT_LR_LIMITS, wd_limits: tuple[float, float] = DEFAULT_WD_LIMITS,
    group: str | None = None,
) -> Space:
    """The search space of one (backbone, optimizer) pair (names as the registries accept them).

    ``group``: the design family whose published choices give the start when the paper has none for
    the pair (None: the backbone's own ``group``; a study sets it for a model whose inferred family
    it corrects)."""
    info = get_optimizer_info(optimizer)
    short = get_backbone_info(backbone).short
    if center is not None:
        start, source = (index(center[0]), index(center[1])), "study"
    elif (info.short, short) in _published():
        lr, wd = _published()[(info.short, short)]
        start, source = (index(lr), index(wd)), "paper"
    elif (fam := family_centre(info.short, group or get_backbone_info(backbone).group)) is not None:
        start, source = fam, "family"
    else:
        start, source = (index(info.lr), index(info.weight_decay)), "optimizer"
    lo, hi = index(lr_limits[0]), index(lr_limits[1])
    wlo, whi = index(wd_limits[0]), index(wd_limits[1])
    if ZERO in (lo, hi, wlo, whi) or lo >= hi or wlo >= whi:
        raise ValueError(f"limits must be positive and increasing: lr {lr_limits}, weight_decay {wd_limits}")
    space = Space(start, lo, hi, wlo, whi, source)
    if not space.contains(start):
        raise ValueError(f"{short} x {info.short}: start lr {value(start[0]):g}, wd {value(start[1]):g} "
                         f"({source}) is outside the limits lr {lr_limits}, weight_decay {wd_limits}")
    return space
