"""Per-layer weight metrics of the trained weights (the paper's parameter patterns).

Written here rather than taken from ``weightwatcher`` or ``powerlaw``: both fit every layer with
their own filters and defaults (WeightWatcher also pulls in scikit-learn and plotting), and the
fit must run after every trial within a second per ResNet-18; ``weightwatcher`` stays the test
suite's reference (``tests/test_diagnostics.py`` checks alpha per layer against it).

Every choice the paper leaves open is fixed here and stated once:

- **Layers.** In ``model.named_modules()`` order: every ``nn.Linear``, every ``nn.Conv2d``, and the
  query/key/value projections that ``nn.MultiheadAttention`` holds as raw parameters (its packed
  ``in_proj_weight`` split into three ``embed_dim``-row blocks, rows ``<name>.in_proj_weight[q]``,
  ``[k]``, ``[v]``; or its separate ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``, rows
  named after them; kind ``"attention"``; its ``out_proj`` is an ``nn.Linear`` and so a row of its
  own). timm's ViTs hold ``qkv`` as one ``nn.Linear``, so it is one ``out x in`` matrix. A Linear
  weight is its own ``out x in`` matrix. A Conv2d weight ``(out, in/groups, kh, kw)`` is matricised
  by the ``conv`` argument (:data:`CONV_MODES`):

  - ``"reshape"`` (the default): one ``out x (in/groups * kh * kw)`` matrix.
  - ``"slices"``: WeightWatcher's matricisation: the ``kh * kw`` per-kernel-offset matrices
    ``W[:, :, i, j]``, each ``out x in/groups``, whose eigenvalues are **pooled** (concatenated)
    into one spectrum and one fit per layer, as WeightWatcher's default ``pool=True`` does (its
    ``pool=False``, formerly ``ww2x=True``, fits each slice separately; not offered here). Unlike
    WeightWatcher's default ``conv2d_norm=True`` the slices are not rescaled (it multiplies them
    by ``sqrt(kh*kw / 2)`` unpooled, ``sqrt(1/2)`` pooled: a constant factor that leaves alpha
    unchanged but scales xmin and the norm scalars). ``shape`` is one slice's
    ``(out, in/groups)`` and ``n_eig = kh * kw * min(out, in/groups)``. A 1x1 conv gives the same
    row in both modes.

  Other weights (Conv1d/3d, Embedding, raw parameters elsewhere) are not covered. A matrix with
  ``min(rows, cols) < 2`` (for ``"slices"``: each slice) is skipped: one eigenvalue has no spectrum
  (e.g. a depthwise conv's slices, a depthwise 1x1 conv, a 1-output head).
- **Eigenvalues.** The ``min(rows, cols)`` non-trivial eigenvalues of ``W^T W`` (``"slices"``: of
  every slice, pooled), in float64: ``eig = s**2`` for the singular values ``s`` of the matrix, to
  within about ``1e-9`` relative (``1e-15`` for the largest; :func:`eigenvalues` takes the faster
  ``eigvalsh`` of the smaller Gram matrix where that is this accurate, else
  ``numpy.linalg.svd(compute_uv=False)``). They are *not* normalised (no division by N, unlike
  WeightWatcher's optional ``normalize``).
- **alpha.** Clauset-Shalizi-Newman continuous MLE ``alpha = 1 + n / sum(ln(x_i / xmin))`` over the
  tail ``x_i >= xmin``. Only eigenvalues above the numerical-rank cut
  ``s > s_max * max(rows, cols) * eps`` (numpy's ``matrix_rank`` rule; for ``"slices"`` with the
  pooled ``s_max`` and one slice's shape) enter the fit, so a rank-deficient matrix's round-off
  zeros cannot become ``xmin``. Candidate ``xmin`` are the distinct kept eigenvalues leaving a tail
  of at least :data:`MIN_TAIL` (= 5) values; the chosen one minimises the KS distance
  ``D = max_k |F(x_(k)) - k / n|`` (``k = 0 .. n-1`` over the ascending tail of ``n`` values,
  equal values keeping separate ranks; ties in ``D`` go to the smallest ``xmin``) between the
  fitted CDF ``F(x) = 1 - (x / xmin)^(1 - alpha)`` and the empirical CDF's left limits. That is
  WeightWatcher's definition, also that of Clauset's reference ``plfit.m`` and of the
  ``powerlaw`` package; the two-sided sup ``max_k max((k+1)/n - F, F - k/n)`` picks a different
  ``xmin`` on many layers. No ``xmax`` and no finger fixing. This is WeightWatcher 0.7.7's default
  fit (``pl_package="ww"``, ``xmax=None``, ``fix_fingers=False``) except that it (a) also tries
  tails of 2 to 4 values, (b) drops eigenvalues ``<= 1e-5`` (absolute; ``1e-4`` under CUDA)
  instead of the rank cut, (c) below 20 kept eigenvalues switches to a bias-corrected
  ``1 + (n - 1) / sum(...)`` with a tail-size penalty on ``D``, and (d) skips layers with fewer
  than ``min_evals=8`` eigenvalues (pooled); bocb does none of these. Where none bites, the two
  agree to rounding (cross-checked in ``tests/test_diagnostics.py``).
  ``alpha_status`` is ``"ok"``, ``"too few eigenvalues"`` (fewer than ``MIN_TAIL`` kept) or
  ``"degenerate"`` (no candidate with a finite fit, e.g. all tail eigenvalues equal); alpha, xmin
  and the derived ``alpha_weighted`` are NaN unless ``"ok"``. A layer holding NaN or inf (a
  diverged model) gets ``"non-finite weights"`` and NaN for every metric, so one bad layer does
  not cost the rest of the model its row.
- **WeightWatcher scalars** from the same eigenvalues: ``log_norm = log10(sum eig)`` (= log10 of the
  squared Frobenius norm, the same in both conv modes), ``log_spectral_norm = log10(max eig)``,
  ``stable_rank = sum eig / max eig``, ``alpha_weighted = alpha * log10(max eig)``.
- **entropy.** Shannon entropy in **nats** of the histogram of all weight values with
  :data:`ENTROPY_BINS` (= 100) equal-width bins over ``[min, max]`` of the values; a constant tensor
  has entropy 0, the maximum is ``ln(100)``. Independent of the conv mode.
- **l2.** Frobenius norm of the weight tensor (float64). Independent of the conv mode.
- **pca_energy.** ``sum of the top-k eigenvalues / sum of all eigenvalues`` (all eigenvalues, no
  rank cut, no mean-centring of W: the energy of the uncentred ``W^T W``; ``"slices"``: of the
  pooled eigenvalues); k defaults to 10; 1.0 when the matrix has at most k eigenvalues, NaN for an
  all-zero matrix.

Pure numpy on CPU; torch is touched only to read the weights. Thread count is the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bocb.lazy import lazy_module

if TYPE_CHECKING:
    import torch

nn = lazy_module("torch.nn")  # imported when a model is first measured (bocb.lazy)

MIN_TAIL = 5
ENTROPY_BINS = 100
DEFAULT_K = 10
CONV_MODES = ("reshape", "slices")
# WeightWatcher's convention by default (the paper's alpha values come from WeightWatcher, and its
# 2..6 band is only meaningful for them); `reshape` stays selectable per study (`weight_conv`).
DEFAULT_CONV = "slices"
NON_FINITE = "non-finite weights"  # alpha_status of a layer holding NaN/inf (a diverged model)
COLUMNS = (
    "layer", "kind", "shape", "n_eig", "alpha", "alpha_status", "n_tail", "xmin", "entropy", "l2",
    "pca_energy", "log_norm", "log_spectral_norm", "stable_rank", "alpha_weighted",
)  # fmt: skip

# The KS scoring works on (candidates x tail points) blocks of at most this many float64 values
# (8 MiB each), so memory stays flat however many eigenvalues a layer has.
_KS_BLOCK = 1 << 20
# Above _KS_EXACT_N eigenvalues the KS minimiser is found by bounding first (see _ks_argmin).
_KS_EXACT_N = 512
_KS_STRIDE = 32
_KS_CHUNK = 64
# eigenvalues() trusts the Gram route while max eig / min eig <= 1 / _GRAM_RTOL (see there).
_GRAM_RTOL = 1e-6


def check_conv(conv: str) -> str:
    """Return ``conv`` if it is one of :data:`CONV_MODES`, else raise ``ValueError``."""
    if conv not in CONV_MODES:
        raise ValueError(f"conv must be one of {', '.join(map(repr, CONV_MODES))}; got {conv!r}")
    return conv


def _numpy(weight: torch.Tensor) -> np.ndarray:
    return weight.detach().to("cpu").double().numpy()


def _kept(w: np.ndarray) -> np.ndarray | None:
    """``w`` unless its matrices (the last two axes) have fewer than 2 eigenvalues."""
    return w if min(w.shape[-2:]) >= 2 else None


def weight_matrix(module: nn.Module, conv: str = DEFAULT_CONV) -> np.ndarray | None:
    """The float64 matrix of a Linear / Conv2d module under the rules above, or None to skip it.

    With ``conv="slices"`` a Conv2d gives the stack of its ``kh * kw`` slices, an array of shape
    ``(kh * kw, out, in/groups)`` (every function here takes a matrix or such a stack).
    """
    check_conv(conv)
    if isinstance(module, nn.Conv2d):
        w = _numpy(module.weight)
        if conv == "slices":  # (out, in, kh, kw) -> (kh*kw, out, in), offsets in row-major order
            return _kept(np.moveaxis(w, (2, 3), (0, 1)).reshape(-1, *w.shape[:2]))
        return _kept(w.reshape(w.shape[0], -1))  # out x (in/groups * kh * kw)
    if isinstance(module, nn.Linear):
        return _kept(_numpy(module.weight))
    return None


def _attention_projections(module: nn.MultiheadAttention) -> Iterator[tuple[str, np.ndarray]]:
    """(suffix, matrix) of the q/k/v projections ``nn.MultiheadAttention`` holds as parameters."""
    if module.in_proj_weight is not None:
        for part, w in zip("qkv", module.in_proj_weight.chunk(3), strict=True):
            yield f"in_proj_weight[{part}]", _numpy(w)
    else:
        for part in "qkv":
            yield f"{part}_proj_weight", _numpy(getattr(module, f"{part}_proj_weight"))


def weight_matrices(
    model: nn.Module, conv: str = DEFAULT_CONV
) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(layer, kind, matrix)`` for every matrix of ``model`` under the rules above, in order.

    ``kind`` is ``"linear"``, ``"conv2d"`` or ``"attention"``; ``matrix`` as :func:`weight_matrix`.
    """
    check_conv(conv)
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            for suffix, w in _attention_projections(module):
                if _kept(w) is not None:
                    yield ".".join(filter(None, (name, suffix))), "attention", w
            continue  # out_proj is an nn.Linear child: its own row, next
        w = weight_matrix(module, conv)
        if w is not None:
            yield name, "linear" if isinstance(module, nn.Linear) else "conv2d", w


def eigenvalues(w: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of ``W^T W`` on the smaller side: squared singular values, float64.

    For a stack of matrices (shape ``(..., rows, cols)``) the eigenvalues of all of them, pooled.
    Computed as ``eigvalsh`` of the smaller Gram matrix ``A A^T`` (``A`` = the matrix with
    ``rows <= cols``), about 10x faster than the SVD of a wide matrix; its absolute error is a few
    ``eps * max eig``, so a matrix whose smallest Gram eigenvalue is below :data:`_GRAM_RTOL` times
    its largest (condition number of W above 1e3, e.g. rank-deficient or square random matrices)
    is redone with ``numpy.linalg.svd(compute_uv=False)``. Either way every eigenvalue carries a
    relative error of at most about ``1e-9`` (the largest ones about ``1e-15``) against the SVD.
    """
    w = np.asarray(w, dtype=np.float64)
    a = w.reshape(-1, *w.shape[-2:])
    if a.shape[1] > a.shape[2]:
        a = a.transpose(0, 2, 1)  # rows <= cols: the Gram matrix A A^T is the smaller one
    eig = np.linalg.eigvalsh(a @ a.transpose(0, 2, 1))  # ascending per matrix
    redo = eig[:, 0] < eig[:, -1] * _GRAM_RTOL
    if redo.any():
        s = np.linalg.svd(a[redo], compute_uv=False)
        eig[redo] = s * s
    return np.sort(eig.ravel())


def _ks_max(lx: np.ndarray, idx: np.ndarray, alpha: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``max_{j in cols, j >= i} |(j - i) / (n - i) - F_i(x_j)|`` for each ``i`` in ``idx``.

    ``F_i(x) = 1 - (x / x_i)^(1 - alpha_i)``; ``lx = ln x``, ``idx`` and ``cols`` (indices into
    ``lx``) ascending; 0 where no ``j`` qualifies. With ``cols`` every index this is the KS
    distance ``D`` of the candidate ``xmin = x_i`` (the ``j = i`` term is 0); with a subset, a
    lower bound of it.
    Scored in blocks of candidates, so each temporary holds at most :data:`_KS_BLOCK` values.
    """
    n = len(lx)
    out = np.zeros(len(idx))
    start = 0
    while start < len(idx):
        c = cols[np.searchsorted(cols, idx[start]) :]  # the block's tails lie in these cols
        if not len(c):
            break  # later candidates (larger i) have no columns either: 0
        sl = slice(start, start + max(1, _KS_BLOCK // len(c)))
        i = idx[sl, None]
        k = c[None, :] - i  # rank inside the tail; < 0 before the tail
        gap = (lx[c][None, :] - lx[i]) * (1.0 - alpha[sl, None])
        with np.errstate(over="ignore"):  # inf only left of the tail (k < 0), zeroed below
            np.exp(gap, out=gap)  # (x_j / x_i)^(1 - alpha) = 1 - F(x_j)
        gap += k / (n - i) - 1.0  # k / n_i - F(x_j)
        np.abs(gap, out=gap)
        gap[k < 0] = 0.0
        out[sl] = gap.max(axis=1)
        start = sl.stop
    return out


def _ks_argmin(lx: np.ndarray, idx: np.ndarray, alpha: np.ndarray) -> int:
    """Position in ``idx`` of the candidate with the smallest KS distance (ties: the first).

    Scoring every candidate against every tail point is ``O(n^2)``. Beyond :data:`_KS_EXACT_N`
    values, a bound on every tail's :data:`_KS_STRIDE`-th point ranks the candidates first, and
    only those whose lower bound does not exceed the best exact ``D`` found so far are scored in
    full: the same minimiser, a few times faster on a few thousand eigenvalues.
    """
    every = np.arange(len(lx))
    if len(lx) <= _KS_EXACT_N:
        return int(np.argmin(_ks_max(lx, idx, alpha, every)))
    lower = _ks_max(lx, idx, alpha, every[::_KS_STRIDE])  # <= each candidate's D
    d = np.full(len(idx), np.inf)  # exact D where scored; the rest cannot beat (or tie) the best
    order = np.argsort(lower, kind="stable")
    best = np.inf
    for start in range(0, len(order), _KS_CHUNK):
        if lower[order[start]] > best:
            break
        chosen = np.sort(order[start : start + _KS_CHUNK])
        d[chosen] = _ks_max(lx, idx[chosen], alpha[chosen], every)
        best = min(best, float(d[chosen].min()))
    return int(np.argmin(d))


def fit_power_law(
    eig: np.ndarray, shape: tuple[int, ...] | None = None
) -> tuple[float, float, int, str]:
    """Fit the eigenvalue tail: return ``(alpha, xmin, n_tail, status)``.

    ``shape`` is the matrix's ``(rows, cols)`` (or a stack's ``(..., rows, cols)``) for the
    numerical-rank cut; without it the cut uses ``len(eig)``.
    """
    x = np.sort(np.asarray(eig, dtype=np.float64))
    big = max(shape[-2:]) if shape is not None else len(x)
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
    best = _ks_argmin(lx, idx, alpha)
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
    """All metrics of one matrix (or stack of conv slices): a row without ``layer``, ``kind``."""
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        # A diverged model: the layer is reported as such rather than failing the whole snapshot.
        n = int(np.prod(w.shape[:-2], dtype=np.int64)) * min(w.shape[-2:])
        return {"shape": tuple(int(d) for d in w.shape[-2:]), "n_eig": n, "alpha": np.nan,
                "alpha_status": NON_FINITE, "n_tail": 0, "xmin": np.nan, "entropy": np.nan, "l2": np.nan,
                "pca_energy": np.nan, "log_norm": np.nan, "log_spectral_norm": np.nan, "stable_rank": np.nan,
                "alpha_weighted": np.nan}
    eig = eigenvalues(w)
    alpha, xmin, n_tail, status = fit_power_law(eig, w.shape)
    top, total = float(eig[-1]), float(eig.sum())
    with np.errstate(divide="ignore"):
        log_top = np.log10(top) if top > 0 else np.nan
        log_norm = np.log10(total) if total > 0 else np.nan
    return {
        "shape": tuple(int(d) for d in w.shape[-2:]),
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


def layer_metrics(model: nn.Module, k: int = DEFAULT_K, conv: str = DEFAULT_CONV) -> pd.DataFrame:
    """One row per matrix of :func:`weight_matrices` (rules in the module docstring).

    Columns are :data:`COLUMNS`; ``layer`` is the module's qualified name (attention projections:
    with the parameter's suffix), ``kind`` is ``"linear"``, ``"conv2d"`` or ``"attention"``,
    ``shape`` the matrix's ``(rows, cols)`` (``conv="slices"``: one slice's). Rows keep
    ``named_modules()`` order, so the row index is the layer index of the ridge plots. ``conv`` is
    the Conv2d matricisation, ``"reshape"`` or ``"slices"`` (:data:`CONV_MODES`).
    """
    check_conv(conv)
    rows = [
        {"layer": name, "kind": kind, **matrix_metrics(w, k)}
        for name, kind, w in weight_matrices(model, conv)
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
