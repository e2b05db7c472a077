"""Diagnostics of trained weights (method.md section 7): pure numpy, nothing plotted or printed.

- :mod:`~bocb.diagnostics.metrics`: per-layer power-law alpha, histogram entropy, L2 norm, top-k
  PCA energy and WeightWatcher's norm scalars, as one frame per model (:func:`layer_metrics`).
"""

from bocb.diagnostics.metrics import (
    COLUMNS,
    DEFAULT_K,
    ENTROPY_BINS,
    MIN_TAIL,
    eigenvalues,
    fit_power_law,
    histogram_entropy,
    layer_metrics,
    matrix_metrics,
    pca_energy,
    weight_matrix,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_K",
    "ENTROPY_BINS",
    "MIN_TAIL",
    "eigenvalues",
    "fit_power_law",
    "histogram_entropy",
    "layer_metrics",
    "matrix_metrics",
    "pca_energy",
    "weight_matrix",
]
