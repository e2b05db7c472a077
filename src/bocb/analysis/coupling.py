"""Coupling beyond the paper: the additive model and what it leaves over.

The reviewers' objection to Table 1 is that it may only show that some optimizers are good
everywhere. The additive model ``acc(b, o) = mu + beta_b + omega_o + e_bo`` separates that
(``omega_o``: an optimizer's general quality; ``beta_b``: a backbone's) from coupling: the
interaction residuals ``e_bo``. A fit must resist the failed cells (a collapse to 10 % would drag a
least-squares mean and smear the failure over its row and column), so two resistant fits are offered:

- ``median_polish`` (default): Tukey's median polish as R's ``medpolish`` does it — alternately
  sweep row (backbone) medians and column (optimizer) medians out of the table, moving the medians
  of the effects into ``mu``, until the sum of absolute residuals changes by less than ``tol``
  relatively (or ``max_iter`` sweeps). Effects are median-centred. Needs no failure rule.
- ``weighted_ls``: least squares with the cells flagged by a failure rule (default ``fitted``)
  given weight ``flagged_weight`` (default 0.1; every other cell 1). Not 0: an optimizer flagged on
  every backbone (uniformly bad — a main effect, not coupling) would then have no effect at all;
  with equal weights down its column its effect is still its column's level. Effects are
  mean-centred (sum to zero).

Missing pairs (NaN) are skipped by both fits and have NaN residuals.

Scores (all in top-1 percentage points):

- coupling score of a backbone: RMS of its interaction residuals over its optimizers — how far
  its results are from "backbone quality + optimizer quality". :func:`coupling_scores` with
  ``by="optimizer"`` gives the same for an optimizer (how backbone-dependent it is).
- generality score of an optimizer: its main effect ``omega_o`` — its top-1 above the typical
  (median or mean, per fit) optimizer on the typical backbone.

Variance decomposition (:func:`variance_shares`): over the observed cells, each component
(beta_b, omega_o, e_bo, each as a value per cell) has a sum of squares about its mean over cells,
``SS_B``, ``SS_O``, ``SS_I``; a share is ``SS_X / (SS_B + SS_O + SS_I)``. For least squares with equal
weights on a complete table this is the classical two-way ANOVA split (the components are orthogonal
and sum to ``SS_total``); for resistant fits they are not orthogonal, and ``cross`` reports
``(SS_total - SS_B - SS_O - SS_I) / SS_total`` so the gap is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from bocb.analysis.failure import DEFAULT_RULE, FailureRule, flag_table
from bocb.analysis.ranks import mean_off_diagonal, order_agreement
from bocb.analysis.results import REQUIRED, Results, wide

Method = Literal["median_polish", "weighted_ls"]
METHODS = ("median_polish", "weighted_ls")


@dataclass(frozen=True)
class AdditiveFit:
    """A fitted ``acc(b, o) = mu + beta_b + omega_o + e_bo`` on a backbone x optimizer table.

    ``residuals`` and ``table`` (the data fitted) are backbone x optimizer frames;
    ``backbone_effect`` is indexed by backbone, ``optimizer_effect`` by optimizer. ``weights`` is the
    per-cell weight used (all 1 for median polish). ``converged`` and ``iterations`` describe median
    polish (always True / 1 for least squares).
    """

    method: str
    mu: float
    backbone_effect: pd.Series
    optimizer_effect: pd.Series
    residuals: pd.DataFrame
    table: pd.DataFrame
    weights: pd.DataFrame
    converged: bool
    iterations: int

    @property
    def fitted(self) -> pd.DataFrame:
        """mu + beta_b + omega_o for every cell (also where the table is missing)."""
        b = self.backbone_effect.to_numpy()[:, None]
        o = self.optimizer_effect.to_numpy()[None, :]
        return pd.DataFrame(self.mu + b + o, index=self.table.index, columns=self.table.columns)


def as_table(data: pd.DataFrame | Results) -> pd.DataFrame:
    """A long result frame (has optimizer, backbone, top1) or :class:`Results` becomes its
    pair-mean table; a backbone x optimizer table is returned as floats."""
    if isinstance(data, Results) or set(REQUIRED) <= set(data.columns):
        return wide(data)
    return data.astype(float)


def median_polish(x: np.ndarray, tol: float = 1e-6, max_iter: int = 100):
    """Tukey's median polish of a 2-d array (NaN skipped) -> (mu, row, col, residuals, converged, iters)."""
    z = np.array(x, dtype=float)
    row, col, mu = np.zeros(z.shape[0]), np.zeros(z.shape[1]), 0.0
    # Without NaN, np.median gives the same medians (the mean of the two middle values, or the
    # middle one) as np.nanmedian, which on a table this small goes through masked arrays and took
    # 10 of the 12 ms a bootstrap resample of a 20 x 20 table costs. A finite table stays finite:
    # only finite medians are subtracted.
    median = np.median if np.isfinite(z).all() else np.nanmedian
    old = 0.0
    for it in range(1, max_iter + 1):
        delta = median(z, axis=1)
        z -= delta[:, None]
        row += delta
        shift = np.median(col)
        col -= shift
        mu += shift
        delta = median(z, axis=0)
        z -= delta[None, :]
        col += delta
        shift = np.median(row)
        row -= shift
        mu += shift
        new = np.nansum(np.abs(z))
        if new == 0 or abs(new - old) <= tol * new:
            return mu, row, col, z, True, it
        old = new
    return mu, row, col, z, False, max_iter


def weighted_least_squares(x: np.ndarray, w: np.ndarray):
    """Weighted LS fit of mu + row + col (NaN cells get weight 0) -> (mu, row, col, residuals)."""
    n_r, n_c = x.shape
    w = np.where(np.isnan(x), 0.0, w)
    rows, cols = np.nonzero(w > 0)
    # Any connected design fixes the fitted values; effects are then centred to sum to zero.
    design = np.zeros((len(rows), 1 + n_r + n_c))
    design[:, 0] = 1.0
    design[np.arange(len(rows)), 1 + rows] = 1.0
    design[np.arange(len(rows)), 1 + n_r + cols] = 1.0
    if np.linalg.matrix_rank(design) < n_r + n_c - 1:
        raise ValueError(
            "weighted least squares cannot identify every effect: some backbone or optimizer has "
            "no cell with positive weight (raise flagged_weight or use method='median_polish')"
        )
    sw = np.sqrt(w[rows, cols])
    coef, *_ = np.linalg.lstsq(design * sw[:, None], x[rows, cols] * sw, rcond=None)
    row, col = coef[1:1 + n_r], coef[1 + n_r:]
    mu = coef[0] + row.mean() + col.mean()
    row, col = row - row.mean(), col - col.mean()
    return mu, row, col, x - mu - row[:, None] - col[None, :]


def fit_additive(
    data: pd.DataFrame,
    method: Method = "median_polish",
    failure_rule: FailureRule | str = DEFAULT_RULE,
    flagged_weight: float = 0.1,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> AdditiveFit:
    """Fit the additive model to a long result frame or a backbone x optimizer table.

    ``failure_rule`` and ``flagged_weight`` are used by ``weighted_ls`` only; ``tol`` and
    ``max_iter`` by ``median_polish`` only. See the module docstring for both fits.
    """
    if method not in METHODS:
        raise ValueError(f"unknown additive fit {method!r}: valid: {', '.join(METHODS)}")
    table = as_table(data)
    x = table.to_numpy(dtype=float)
    if method == "median_polish":
        mu, row, col, res, converged, iters = median_polish(x, tol, max_iter)
        weights = np.where(np.isnan(x), 0.0, 1.0)
    else:
        if not 0.0 <= flagged_weight <= 1.0:
            raise ValueError(f"flagged_weight must lie in [0, 1], got {flagged_weight}")
        flagged = flag_table(table, failure_rule).to_numpy()
        weights = np.where(np.isnan(x), 0.0, np.where(flagged, flagged_weight, 1.0))
        mu, row, col, res = weighted_least_squares(x, weights)
        converged, iters = True, 1
    return AdditiveFit(
        method=method,
        mu=float(mu),
        backbone_effect=pd.Series(row, index=table.index, name="backbone_effect"),
        optimizer_effect=pd.Series(col, index=table.columns, name="optimizer_effect"),
        residuals=pd.DataFrame(res, index=table.index, columns=table.columns),
        table=table,
        weights=pd.DataFrame(weights, index=table.index, columns=table.columns),
        converged=bool(converged),
        iterations=int(iters),
    )


def variance_shares(fit: AdditiveFit, exclude: pd.DataFrame | None = None) -> dict[str, float]:
    """Shares of backbone, optimizer and interaction in the observed cells (module docstring).

    ``exclude``: an optional bool backbone x optimizer table of cells to leave out (e.g. the
    flagged ones, to ask how much coupling is left beyond outright failures). Returns
    ``{"backbone", "optimizer", "interaction"}`` summing to 1, plus ``cross`` and ``cells``.
    """
    x = fit.table.to_numpy(dtype=float)
    keep = ~np.isnan(x)
    if exclude is not None:
        aligned = exclude.reindex(index=fit.table.index, columns=fit.table.columns, fill_value=False)
        keep &= ~aligned.to_numpy(bool)
    b = np.broadcast_to(fit.backbone_effect.to_numpy()[:, None], x.shape)[keep]
    o = np.broadcast_to(fit.optimizer_effect.to_numpy()[None, :], x.shape)[keep]
    e = fit.residuals.to_numpy(dtype=float)[keep]

    def ss(v: np.ndarray) -> float:
        return float(np.sum((v - v.mean()) ** 2)) if len(v) else float("nan")

    parts = {"backbone": ss(b), "optimizer": ss(o), "interaction": ss(e)}
    total = sum(parts.values())
    out = {k: v / total if total > 0 else float("nan") for k, v in parts.items()}
    ss_total = ss(x[keep])
    out["cross"] = (ss_total - total) / ss_total if ss_total > 0 else float("nan")
    out["cells"] = int(keep.sum())
    return out


def coupling_scores(fit: AdditiveFit, by: Literal["backbone", "optimizer"] = "backbone") -> pd.Series:
    """RMS interaction residual per backbone (default) or per optimizer, highest first."""
    if by not in ("backbone", "optimizer"):
        raise ValueError(f"coupling scores are by 'backbone' or 'optimizer', got {by!r}")
    axis = 1 if by == "backbone" else 0
    rms = np.sqrt((fit.residuals**2).mean(axis=axis, skipna=True))
    return rms.rename(f"coupling_{by}").sort_values(ascending=False, kind="stable")


def generality_scores(fit: AdditiveFit) -> pd.Series:
    """Each optimizer's main effect omega_o (top-1 points above the typical optimizer), best first."""
    return fit.optimizer_effect.rename("generality").sort_values(ascending=False, kind="stable")


def coupling_statistics(
    data: pd.DataFrame, method: Method = "median_polish", failure_rule: FailureRule | str = DEFAULT_RULE
) -> pd.Series:
    """Every coupling statistic of one table as a Series indexed by (statistic, name).

    Statistics: ``share`` (backbone, optimizer, interaction), ``coupling`` (per backbone),
    ``generality`` (per optimizer), ``backbone_effect`` (per backbone) and ``order_tau``
    (``mean``: the mean Kendall tau-b between the optimizer orderings of two backbones). This is the
    default statistic of :func:`bocb.analysis.bootstrap.bootstrap`.
    """
    table = as_table(data)
    fit = fit_additive(table, method=method, failure_rule=failure_rule)
    shares = variance_shares(fit)
    parts = {
        "share": pd.Series({k: shares[k] for k in ("backbone", "optimizer", "interaction")}),
        "coupling": coupling_scores(fit, "backbone").reindex(table.index),
        "generality": fit.optimizer_effect,
        "backbone_effect": fit.backbone_effect,
        "order_tau": pd.Series({"mean": mean_off_diagonal(order_agreement(table))}),
    }
    out = pd.concat(parts, names=["statistic", "name"])
    return out.astype(float)
