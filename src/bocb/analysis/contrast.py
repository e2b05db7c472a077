"""Optimizer gaps per backbone and their difference: the coupling of a small study, with its error.

A study of a few backbones x two optimizers (each pair tuned over a few settings) asks the
coupling question in its smallest form: does the gap between the two optimizers depend on the
backbone? For backbones ``b`` and optimizers ``reference`` / ``alternative``::

    gap(b)            = top1(b, alternative) - top1(b, reference)   (best-tuned pair means)
    interaction(b, c) = gap(b) - gap(c)

(for a 2x2 table, ``interaction / 4`` is every cell's least-squares interaction residual of
:mod:`bocb.analysis.coupling`'s additive model).

Standard errors, in top-1 percentage points, from one of two sources, stated in ``se_source``:

- ``seeds``: every pair has two or more seeds at its best setting: the standard error of each
  pair mean from its seeds' spread (sample std / sqrt(n)).
- ``test set``: a pair with one seed: the binomial error of an accuracy ``p`` measured on
  ``test_images`` images, ``sqrt(p (1 - p) / n)``. It covers only the sampling of the test set,
  not seed-to-seed variation, which one seed cannot measure and which is usually the larger term:
  read it as a lower bound.

Gaps and interactions add the errors of their terms in quadrature, treating them as independent.
For test-set errors this overstates the error of a gap (both accuracies are measured on the same
images, which correlates them positively), so it errs on the side of "not shown".
The pair's best setting is chosen as :func:`bocb.analysis.results.best_tuned` does; with one seed
the choice and the reported number are the same measurement, which flatters every pair a little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bocb.analysis.results import PAIR, Results

SE_SOURCES = ("seeds", "test set")


@dataclass(frozen=True)
class Gap:
    """``alternative`` minus ``reference`` on one backbone, in top-1 points, with its error."""

    backbone: str
    reference: float
    alternative: float
    gap: float
    se: float


@dataclass(frozen=True)
class Contrast:
    """The gaps of every backbone, in input order, and where their errors come from."""

    reference: str
    alternative: str
    gaps: tuple[Gap, ...]
    se_source: str

    def gap(self, backbone: str) -> Gap:
        for g in self.gaps:
            if g.backbone == backbone:
                return g
        raise KeyError(f"no gap for backbone {backbone!r}: have {', '.join(g.backbone for g in self.gaps)}")

    def interaction(self, backbone: str, other: str) -> tuple[float, float]:
        """``gap(backbone) - gap(other)`` and its standard error."""
        a, b = self.gap(backbone), self.gap(other)
        return a.gap - b.gap, math.hypot(a.se, b.se)


def optimizer_contrast(frame: pd.DataFrame, reference: str, alternative: str,
                       test_images: int | None = None) -> Contrast:
    """The gaps ``alternative - reference`` per backbone of a long results frame (see the module doc).

    ``test_images`` (the size of the test set every top-1 was measured on) is needed when some
    pair has a single seed. Raises ``ValueError`` naming what is missing: an optimizer not in the
    frame, a backbone run with only one of the two, or ``test_images`` when it is needed.
    """
    runs = Results.of(frame).runs
    present = list(dict.fromkeys(runs["optimizer"]))
    for name in (reference, alternative):
        if name not in present:
            raise ValueError(f"optimizer {name!r} is not in the results: have {', '.join(present)}")
    runs = runs[runs["optimizer"].isin([reference, alternative])]
    stats = runs.groupby(PAIR, sort=False)["top1"].agg(["mean", "std", "size"])
    replicated = bool((stats["size"] >= 2).all())
    if not replicated and test_images is None:
        raise ValueError("some pair has one seed: pass test_images for the test-set standard error")

    def se(row: pd.Series) -> float:
        if replicated:
            return float(row["std"]) / math.sqrt(row["size"])
        p = row["mean"] / 100.0
        return 100.0 * math.sqrt(max(p * (1 - p), 0.0) / test_images)

    gaps = []
    for backbone in dict.fromkeys(runs["backbone"]):
        try:
            ref, alt = stats.loc[(reference, backbone)], stats.loc[(alternative, backbone)]
        except KeyError:
            raise ValueError(f"backbone {backbone!r} was not run with both {reference} and {alternative}") from None
        gaps.append(Gap(backbone, float(ref["mean"]), float(alt["mean"]), float(alt["mean"] - ref["mean"]),
                        math.hypot(se(ref), se(alt))))
    return Contrast(reference, alternative, tuple(gaps), "seeds" if replicated else "test set")
