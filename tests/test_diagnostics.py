"""Weight metrics (method.md section 7): known answers on synthetic matrices; a zoo model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bocb.diagnostics import (
    COLUMNS,
    fit_power_law,
    histogram_entropy,
    layer_metrics,
    matrix_metrics,
)
from bocb.zoo import build_backbone


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def test_alpha_recovers_pareto_exponent() -> None:
    # W = U diag(sqrt(lambda)) V^T, so the eigenvalues of W^T W are exactly lambda, drawn from a
    # Pareto density ~ x^-a (xmin = 1). The fit's relative error |alpha - a| / (a - 1) does not
    # depend on a for fixed uniform draws (ln-ratios scale by 1/(a-1)), so one a suffices. Measured
    # over seeds 0..29 with 400 values: relative error at most 0.144 (0.078 for seed 0); the
    # tolerance 0.25 * (a - 1) leaves margin yet fails a fit that drops the "1 +" or
    # mis-sorts the tail.
    a = 2.5
    rng = np.random.default_rng(0)
    n = 400
    lam = (1.0 - rng.random(n)) ** (-1.0 / (a - 1.0))
    w = _orthogonal(n, rng) @ np.diag(np.sqrt(lam)) @ _orthogonal(n, rng).T
    row = matrix_metrics(w)
    assert row["alpha_status"] == "ok"
    assert abs(row["alpha"] - a) < 0.25 * (a - 1.0), row["alpha"]
    assert row["n_tail"] >= 5 and row["xmin"] >= lam.min() * (1 - 1e-9)
    np.testing.assert_allclose(row["log_spectral_norm"], np.log10(lam.max()), rtol=1e-9)
    np.testing.assert_allclose(row["stable_rank"], lam.sum() / lam.max(), rtol=1e-9)
    weighted = row["alpha"] * np.log10(lam.max())
    np.testing.assert_allclose(row["alpha_weighted"], weighted, rtol=1e-12)


def test_alpha_status_reasons() -> None:
    assert fit_power_law(np.array([1.0, 2.0, 3.0]))[3] == "too few eigenvalues"
    alpha, _, _, status = fit_power_law(np.ones(20))
    assert status == "degenerate" and np.isnan(alpha)
    # A rank-3 matrix: its round-off eigenvalues are cut, leaving too few for a fit.
    rng = np.random.default_rng(1)
    low = rng.standard_normal((30, 3)) @ rng.standard_normal((3, 40))
    assert matrix_metrics(low)["alpha_status"] == "too few eigenvalues"


def test_pca_energy_of_rank_k_matrix() -> None:
    rng = np.random.default_rng(2)
    for k in (1, 3, 10):
        w = rng.standard_normal((50, k)) @ rng.standard_normal((k, 60))
        assert matrix_metrics(w, k=k)["pca_energy"] == pytest.approx(1.0, abs=1e-12)
    full = rng.standard_normal((50, 60))
    assert matrix_metrics(full, k=3)["pca_energy"] < 0.5


def test_entropy_orders_constant_below_uniform() -> None:
    assert histogram_entropy(np.full((20, 30), 0.7)) == 0.0
    uniform = np.linspace(-1.0, 1.0, 10_000).reshape(100, 100)
    assert histogram_entropy(uniform) == pytest.approx(np.log(100), abs=1e-3)
    spiky = np.concatenate([np.zeros(9_900), np.linspace(-1, 1, 100)])
    assert 0.0 < histogram_entropy(spiky) < histogram_entropy(uniform)


def test_l2_matches_torch_and_conv_is_matricised() -> None:
    conv = nn.Conv2d(4, 6, kernel_size=3)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(8, 5), nn.Conv2d(6, 6, 1, groups=6))
    frame = layer_metrics(model)
    # The depthwise 1x1 conv's matrix is 6 x 1: skipped by the min-dimension rule.
    assert list(frame["layer"]) == ["0", "2"]
    assert frame.loc[0, "shape"] == (6, 4 * 3 * 3) and frame.loc[0, "n_eig"] == 6
    expected = [torch.linalg.norm(m.weight).item() for m in (model[0], model[2])]
    np.testing.assert_allclose(frame["l2"], expected, rtol=1e-6)
    np.testing.assert_allclose(frame["log_norm"], np.log10(np.square(expected)), rtol=1e-6)


def test_layer_metrics_on_tiny_zoo_model() -> None:
    model = build_backbone("resnet18", num_classes=10, policy="cifar", scale="tiny")
    frame = layer_metrics(model)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    assert len(frame) == len(layers)
    assert set(COLUMNS) <= set(frame.columns)
    assert np.isfinite(frame["l2"]).all() and (frame["l2"] > 0).all()
    assert set(frame["kind"]) == {"conv2d", "linear"}
    assert set(frame["alpha_status"]) <= {"ok", "too few eigenvalues", "degenerate"}
    ok = frame["alpha_status"] == "ok"
    assert ok.any() and np.isfinite(frame.loc[ok, "alpha"]).all()
    assert frame.loc[~ok, "alpha"].isna().all()
