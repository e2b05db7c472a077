"""Rank correlations, in numpy (the project does not depend on scipy).

- :func:`kendall_tau_b`: Kendall's tau-b, which corrects for ties,
  ``(C - D) / sqrt((n0 - n1) (n0 - n2))`` with C/D the concordant/discordant pairs, n0 = n(n-1)/2 and
  n1, n2 the pairs tied in x, in y. Equal to ``scipy.stats.kendalltau(x, y)`` (variant 'b').
- :func:`spearman_rho`: Pearson correlation of average ranks (ties share their mean rank).
- :func:`order_agreement`: tau-b between the optimizer orderings of every pair of backbones; high
  values mean the same optimizers win everywhere (little coupling in the ordering sense).
- :func:`ranking_agreement`: Spearman and Kendall between two rankings given as name lists.

Pairs with a NaN on either side are left out; a correlation with no untied pair is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _complete(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"rank correlation needs two 1-d sequences of one length, got {a.shape}, {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of x and y (NaN pairs dropped); NaN when either side is all ties."""
    a, b = _complete(x, y)
    # sign(a_i - a_j) over all ordered pairs: each unordered pair is counted twice in every sum,
    # which cancels in the ratio. O(n^2) memory is fine for tables of tens of optimizers.
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    denom = np.sqrt(np.sum(sa * sa) * np.sum(sb * sb))
    return float(np.sum(sa * sb) / denom) if denom > 0 else float("nan")


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of x and y (NaN pairs dropped): Pearson correlation of average ranks."""
    a, b = _complete(x, y)
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / denom) if denom > 0 else float("nan")


def order_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Kendall tau-b between every two rows' orderings of the columns (rows x rows, diagonal 1).

    ``table`` is backbone x optimizer (see :func:`bocb.analysis.results.wide`). Each entry uses the
    optimizers both backbones have; it is vectorised (sign matrices) and equals
    :func:`kendall_tau_b` row by row.
    """
    x = table.to_numpy(dtype=float)
    seen = ~np.isnan(x)
    filled = np.where(seen, x, 0.0)
    n_rows, n = x.shape
    # S[b, i, j] = sign(x_bi - x_bj) where both observed, else 0; V[b, i, j] = both observed.
    s = np.sign(filled[:, :, None] - filled[:, None, :]) * (seen[:, :, None] & seen[:, None, :])
    v = (seen[:, :, None] & seen[:, None, :]).astype(float)
    s, v = s.reshape(n_rows, n * n), v.reshape(n_rows, n * n)
    s2 = s * s
    num = s @ s.T
    # Untied pairs of b among the pairs b' also observed, and vice versa.
    denom = np.sqrt((s2 @ v.T) * (v @ s2.T))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), np.nan)
    return pd.DataFrame(tau, index=table.index, columns=table.index)


def mean_off_diagonal(matrix: pd.DataFrame) -> float:
    """Mean of a square matrix's off-diagonal entries (NaN ignored)."""
    m = matrix.to_numpy(dtype=float)
    mask = ~np.eye(len(m), dtype=bool)
    return float(np.nanmean(m[mask])) if mask.any() else float("nan")


def ranking_agreement(ours: Sequence[str], theirs: Sequence[str]) -> dict[str, float | int]:
    """Spearman rho and Kendall tau-b between two rankings (best first) over their common names.

    Returns ``{"n": common names, "spearman": ..., "kendall": ...}``. Names in only one ranking are
    ignored; positions are re-numbered among the common names.
    """
    common = [name for name in ours if name in set(theirs)]
    if len(common) < 2:
        raise ValueError(f"rankings share {len(common)} name(s); need at least 2 to correlate")
    pos_ours = {name: i for i, name in enumerate(common)}
    in_theirs = [name for name in theirs if name in pos_ours]
    pos_theirs = {name: i for i, name in enumerate(in_theirs)}
    a = [pos_ours[n] for n in common]
    b = [pos_theirs[n] for n in common]
    return {"n": len(common), "spearman": spearman_rho(a, b), "kendall": kendall_tau_b(a, b)}
