"""Diagnostics of trained weights (the paper's parameter patterns): pure numpy, nothing plotted or printed.

- :mod:`~bocb.diagnostics.metrics`: per-layer power-law alpha, histogram entropy, L2 norm, top-k
  PCA energy and WeightWatcher's norm scalars, as one frame per model (:func:`layer_metrics`;
  Conv2d matricised as one reshaped matrix or as WeightWatcher's pooled kernel-offset slices).
"""

from bocb.diagnostics.metrics import (
    COLUMNS,
    CONV_MODES,
    DEFAULT_CONV,
    DEFAULT_K,
    ENTROPY_BINS,
    MIN_TAIL,
    check_conv,
    eigenvalues,
    fit_power_law,
    histogram_entropy,
    layer_metrics,
    matrix_metrics,
    pca_energy,
    weight_matrices,
    weight_matrix,
)

__all__ = [
    "COLUMNS",
    "CONV_MODES",
    "DEFAULT_CONV",
    "DEFAULT_K",
    "ENTROPY_BINS",
    "MIN_TAIL",
    "check_conv",
    "eigenvalues",
    "fit_power_law",
    "histogram_entropy",
    "layer_metrics",
    "matrix_metrics",
    "pca_energy",
    "weight_matrices",
    "weight_matrix",
]
