"""Per-layer weight metrics of the trained weights (method.md section 7, issue 6).

Every choice the paper leaves open is fixed here and stated once:

- **Layers.** Every ``nn.Linear`` and ``nn.Conv2d`` in ``model.named_modules()`` order. A Linear
  weight is its own ``out x in`` matrix; a Conv2d weight ``(out, in/groups, kh, kw)`` is matricised
  as ``out x (in/groups * kh * kw)`` (one matrix per layer, not WeightWatcher's split per kernel
  offset). A layer whose matrix has ``min(rows, cols) < 2`` is skipped (one eigenvalue has no
  spectrum; e.g. a depthwise 1x1 conv or a 1-output head). Weights held as raw parameters outside
  these modules (e.g. ``nn.MultiheadAttention.in_proj_weight``) are not covered.
- **Eigenvalues.** ``eig = s**2`` for the singular values ``s`` of the matrix
  (``numpy.linalg.svd(compute_uv=False)`` in float64), i.e. the ``min(rows, cols)`` non-trivial
  eigenvalues of ``W^T W``. They are *not* normalised (no division by N, unlike WeightWatcher's
  optional ``normalize``).
- **alpha.** Clauset-Shalizi-Newman continuous MLE ``alpha = 1 + n / sum(ln(x_i / xmin))`` over the
  tail ``x_i >= xmin``. Only eigenvalues above the numerical-rank cut
  ``s > s_max * max(rows, cols) * eps`` (numpy's ``matrix_rank`` rule) enter the fit, so a
  rank-deficient matrix's round-off zeros cannot become ``xmin``. Candidate ``xmin`` are the
  distinct kept eigenvalues leaving a tail of at least :data:`MIN_TAIL` (= 5) values; the chosen one
  minimises the two-sided KS distance between the tail's empirical CDF and the fitted CDF
  ``1 - (x / xmin)^(1 - alpha)``.
  ``alpha_status`` is ``"ok"``, ``"too few eigenvalues"`` (fewer than ``MIN_TAIL`` kept) or
  ``"degenerate"`` (no candidate with a finite fit, e.g. all tail eigenvalues equal); alpha, xmin
  and the derived ``alpha_weighted`` are NaN unless ``"ok"``.
- **WeightWatcher scalars** from the same eigenvalues: ``log_norm = log10(sum eig)`` (= log10 of the
  squared Frobenius norm), ``log_spectral_norm = log10(max eig)``,
  ``stable_rank = sum eig / max eig``, ``alpha_weighted = alpha * log10(max eig)``.
- **entropy.** Shannon entropy in **nats** of the histogram of all weight values with
  :data:`ENTROPY_BINS` (= 100) equal-width bins over ``[min, max]`` of the values; a constant tensor
  has entropy 0, the maximum is ``ln(100)``.
- **l2.** Frobenius norm of the weight tensor (float64).
- **pca_energy.** ``sum of the top-k eigenvalues / sum of all eigenvalues`` (all eigenvalues, no
  rank cut, no mean-centring of W: the energy of the uncentred ``W^T W``); k defaults to 10; 1.0
  when the matrix has at most k eigenvalues, NaN for an all-zero matrix.

Pure numpy on CPU; torch is touched only to read the weights. Thread count is the caller's business.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

MIN_TAIL = 5
ENTROPY_BINS = 100
DEFAULT_K = 10
COLUMNS = (
    "layer", "kind", "shape", "n_eig", "alpha", "alpha_status", "n_tail", "xmin", "entropy", "l2",
    "pca_energy", "log_norm", "log_spectral_norm", "stable_rank", "alpha_weighted",
)  # fmt: skip


def weight_matrix(module: nn.Module) -> np.ndarray | None:
    """The float64 matrix of a Linear / Conv2d module under the rules above, or None to skip it."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        w = module.weight.detach().to("cpu").double().numpy()
        w = w.reshape(w.shape[0], -1)  # Conv2d: out x (in/groups * kh * kw); Linear unchanged
        return w if min(w.shape) >= 2 else None
    return None


def eigenvalues(w: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of ``W^T W`` on the smaller side: squared singular values, float64."""
    s = np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)
    return np.sort(s * s)


def fit_power_law(
    eig: np.ndarray, shape: tuple[int, int] | None = None
) -> tuple[float, float, int, str]:
    """Fit the eigenvalue tail: return ``(alpha, xmin, n_tail, status)``.

    ``shape`` is the matrix's ``(rows, cols)`` for the numerical-rank cut; without it the cut uses
    ``len(eig)``. All candidate ``xmin`` are scored at once (an ``n x n`` masked array; n is at most
    a few thousand for the zoo's layers).
    """
    x = np.sort(np.asarray(eig, dtype=np.float64))
    big = max(shape) if shape is not None else len(x)
    top = x[-1] if len(x) else 0.0
    if not top > 0:
        return np.nan, np.nan, 0, "too few eigenvalues" if len(x) < MIN_TAIL else "degenerate"
    x = x[x > top * (big * np.finfo(np.float64).eps) ** 2]  # rank cut on s, squared for eig
    n = len(x)
    if n < MIN_TAIL:
        return np.nan, np.nan, n, "too few eigenvalues"
    lx = np.log(x)
    idx = np.arange(n - MIN_TAIL + 1)  # candidate xmin = x[i]; tail x[i:] has n - i >= MIN_TAIL
    # Keep the first of equal values, so the tail x[i:] is exactly x >= xmin.
    idx = idx[(idx == 0) | (x[idx] != x[idx - 1])]
    n_i = (n - idx).astype(np.float64)
    suffix = np.cumsum(lx[::-1])[::-1]  # suffix[i] = sum_{j>=i} ln x_j
    denom = suffix[idx] - n_i * lx[idx]  # sum over tail of ln(x_j / x_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + n_i / denom
    valid = denom > 0
    if not valid.any():
        return np.nan, np.nan, n, "degenerate"
    idx, n_i, alpha = idx[valid], n_i[valid], alpha[valid]
    # KS: rows are candidates, columns tail points j >= i with rank k = j - i inside the tail.
    j = np.arange(n)
    k = (j[None, :] - idx[:, None]).astype(np.float64)
    in_tail = k >= 0
    fitted = 1.0 - np.exp((1.0 - alpha[:, None]) * (lx[None, :] - lx[idx][:, None]))
    gap = np.maximum((k + 1.0) / n_i[:, None] - fitted, fitted - k / n_i[:, None])
    ks = np.where(in_tail, gap, -np.inf).max(axis=1)
    best = int(np.argmin(ks))
    return float(alpha[best]), float(x[idx[best]]), int(n_i[best]), "ok"


def histogram_entropy(values: np.ndarray, bins: int = ENTROPY_BINS) -> float:
    """Shannon entropy (nats) of the ``bins``-bin equal-width histogram over the values' range."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.nan
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return 0.0  # one occupied bin
    counts = np.histogram(v, bins=bins, range=(lo, hi))[0]
    p = counts[counts > 0] / v.size
    return float(-(p * np.log(p)).sum())


def pca_energy(eig: np.ndarray, k: int = DEFAULT_K) -> float:
    """Share of the top-``k`` eigenvalues in their total; NaN when the total is 0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    e = np.sort(np.asarray(eig, dtype=np.float64))[::-1]
    total = e.sum()
    return float(e[:k].sum() / total) if total > 0 else np.nan


def matrix_metrics(w: np.ndarray, k: int = DEFAULT_K) -> dict[str, object]:
    """All metrics of one (already matricised) weight matrix: a row without ``layer``, ``kind``."""
    w = np.asarray(w, dtype=np.float64)
    eig = eigenvalues(w)
    alpha, xmin, n_tail, status = fit_power_law(eig, w.shape)
    top, total = float(eig[-1]), float(eig.sum())
    with np.errstate(divide="ignore"):
        log_top = np.log10(top) if top > 0 else np.nan
        log_norm = np.log10(total) if total > 0 else np.nan
    return {
        "shape": tuple(int(d) for d in w.shape),
        "n_eig": len(eig),
        "alpha": alpha,
        "alpha_status": status,
        "n_tail": n_tail,
        "xmin": xmin,
        "entropy": histogram_entropy(w),
        "l2": float(np.sqrt((w * w).sum())),
        "pca_energy": pca_energy(eig, k),
        "log_norm": log_norm,
        "log_spectral_norm": log_top,
        "stable_rank": total / top if top > 0 else np.nan,
        "alpha_weighted": alpha * log_top,
    }


def layer_metrics(model: nn.Module, k: int = DEFAULT_K) -> pd.DataFrame:
    """One row per Linear / Conv2d layer with a matrix (rules in the module docstring).

    Columns are :data:`COLUMNS`; ``layer`` is the module's qualified name, ``kind`` is ``"linear"``
    or ``"conv2d"``, ``shape`` the matrix's ``(rows, cols)``. Rows keep ``named_modules()`` order,
    so the row index is the layer index of the ridge plots.
    """
    rows = []
    for name, module in model.named_modules():
        w = weight_matrix(module)
        if w is None:
            continue
        kind = "linear" if isinstance(module, nn.Linear) else "conv2d"
        rows.append({"layer": name, "kind": kind, **matrix_metrics(w, k)})
    return pd.DataFrame(rows, columns=list(COLUMNS))
