"""Weight metrics: known answers on synthetic matrices; a zoo model."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest
import timm
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from bocb.diagnostics import (
    COLUMNS,
    MIN_TAIL,
    eigenvalues,
    fit_power_law,
    histogram_entropy,
    layer_metrics,
    matrix_metrics,
    weight_matrix,
)
from bocb.zoo import build_backbone


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def test_alpha_recovers_pareto_exponent() -> None:
    # W = U diag(sqrt(lambda)) V^T, so the eigenvalues of W^T W are exactly lambda, drawn from a
    # Pareto density ~ x^-a (xmin = 1). The fit's relative error |alpha - a| / (a - 1) does not
    # depend on a for fixed uniform draws (ln-ratios scale by 1/(a-1)), so one a suffices. Measured
    # over seeds 0..29 with 400 values: relative error at most 0.146 (0.078 for seed 0); the
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
    frame = layer_metrics(model, conv="reshape")
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


def test_eigenvalues_match_the_svd() -> None:
    # eigenvalues() takes eigvalsh of the smaller Gram matrix where that is accurate and the SVD
    # elsewhere; both routes must give the squared singular values.
    rng = np.random.default_rng(3)
    wide = rng.standard_normal((40, 300))  # well conditioned: the Gram route
    square = rng.standard_normal((60, 60)) @ np.diag(np.logspace(0, -5, 60))  # cond 1e5: the SVD
    for w in (wide, wide.T, square, np.stack([square, square.T])):
        s = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(eigenvalues(w), np.sort((s * s).ravel()), rtol=1e-9)


def test_conv_slices_pool_the_kernel_offsets() -> None:
    conv = nn.Conv2d(4, 6, kernel_size=3)
    model = nn.Sequential(conv, nn.Conv2d(6, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Linear(5, 7))
    reshaped, sliced = layer_metrics(model, conv="reshape"), layer_metrics(model)  # slices: the default
    w = conv.weight.detach().double().numpy()
    offsets = np.stack([w[:, :, i, j] for i in range(3) for j in range(3)])
    s = np.linalg.svd(offsets, compute_uv=False)
    np.testing.assert_allclose(eigenvalues(weight_matrix(conv, "slices")), np.sort(s.ravel() ** 2))
    # A depthwise 3x3 conv is 8 x 9 reshaped but its slices are 8 x 1: skipped in "slices" mode.
    assert list(reshaped["layer"]) == ["0", "1", "2", "3"]
    assert list(sliced["layer"]) == ["0", "1", "3"]
    assert sliced.loc[0, "shape"] == (6, 4) and sliced.loc[0, "n_eig"] == 9 * 4
    assert reshaped.loc[0, "shape"] == (6, 36) and reshaped.loc[0, "n_eig"] == 6
    # Same values, so the same l2, entropy and Frobenius norm; a 1x1 conv and a Linear: equal rows.
    for col in ("l2", "entropy", "log_norm"):
        np.testing.assert_allclose(sliced[col], reshaped.loc[[0, 1, 3], col], rtol=1e-12)
    for col in ("shape", "n_eig", "alpha", "alpha_status", "log_spectral_norm", "pca_energy"):
        assert list(sliced.loc[[1, 2], col]) == list(reshaped.loc[[1, 3], col]), col


def test_bad_conv_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="conv must be one of 'reshape', 'slices'; got 'flat'"):
        layer_metrics(nn.Linear(4, 4), conv="flat")
    with pytest.raises(ValueError, match="'reshape', 'slices'"):
        weight_matrix(nn.Linear(4, 4), conv="ww2x")


def test_attention_projections_held_as_parameters() -> None:
    torch.manual_seed(0)
    packed = nn.MultiheadAttention(16, 2)
    split = nn.MultiheadAttention(16, 2, kdim=12, vdim=20)
    frame = layer_metrics(nn.ModuleDict({"a": packed, "b": split}))
    assert list(frame["layer"]) == [
        "a.in_proj_weight[q]", "a.in_proj_weight[k]", "a.in_proj_weight[v]", "a.out_proj",
        "b.q_proj_weight", "b.k_proj_weight", "b.v_proj_weight", "b.out_proj",
    ]  # fmt: skip
    assert list(frame["kind"]) == ["attention"] * 3 + ["linear"] + ["attention"] * 3 + ["linear"]
    assert list(frame["shape"][4:7]) == [(16, 16), (16, 12), (16, 20)]
    key = packed.in_proj_weight[16:32].detach().double().numpy()
    assert frame.loc[1, "l2"] == pytest.approx(np.linalg.norm(key), rel=1e-12)
    assert frame.loc[1, "alpha"] == pytest.approx(matrix_metrics(key)["alpha"], rel=1e-12)


@contextlib.contextmanager
def _quiet():
    """WeightWatcher logs, prints ("SMALL N PL FIT") and warns freely: keep the test quiet."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield


def _weightwatcher_details(weightwatcher, model: nn.Module):
    """WeightWatcher 0.7.7's per-layer frame, computing what ``layer_metrics(conv="slices")`` does.

    Options (all else at WeightWatcher's defaults, which already match bocb: ``pool=True`` pools
    the kernel-offset slices' eigenvalues into one fit per layer; ``pl_package="ww"`` is its
    Clauset fit with the KS distance bocb uses; ``xmax=None``, ``fix_fingers=False``,
    ``normalize=False``):
    - ``conv2d_norm=False``: its default rescales conv slices by sqrt(1/2) when pooling (alpha is
      scale-free, but xmin and the norm scalars are not);
    - ``min_evals=20``: below 20 eigenvalues its fit switches to a bias-corrected small-sample
      estimator with another xmin objective (WW_powerlaw.SMALL_N_CUTOFF); with 20 those layers are
      skipped (WeightWatcher's default is 8), so every layer it fits uses the standard estimator;
    - ``randomize``, ``vectors``, ``detX``, ``plot`` off: extra work not compared here.
    """
    with _quiet():
        watcher = weightwatcher.WeightWatcher(model=model, log_level=logging.ERROR)
        return watcher.analyze(
            conv2d_norm=False, min_evals=20, randomize=False, vectors=False, detX=False,
            plot=False, savefig=False,
        )  # fmt: skip


def _import_weightwatcher():
    """Import WeightWatcher (a test-only dependency, pyproject's ``test`` extra) quietly.

    Its import logs to stderr and calls ``logging.basicConfig(level=INFO)`` (a no-op under
    pytest, whose handlers sit on the root logger; undone here otherwise). It also loads SciPy's
    own OpenBLAS, so it must come before ``threadpool_limits``, which only limits loaded libraries.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with _quiet():  # (WW_powerlaw's import calls warnings.simplefilter("ignore"): undone here)
        try:
            import weightwatcher
        finally:
            root.setLevel(level)
            root.handlers[:] = handlers
    return weightwatcher


@pytest.mark.parametrize(
    ("name", "kwargs", "at_least"),
    [
        # ResNet-18 at half width (up to 9 x 256 = 2304 pooled eigenvalues, so the KS search's
        # bounded path runs; full width takes 4x as long): all 21 convs are compared (17 with
        # 3x3/7x7 kernels, 4 1x1); the 10 x 256 head has < 20 eigenvalues.
        ("resnet18", {"channels": (32, 64, 128, 256)}, 21),
        # The 4x4 patch embedding (16 slices of 192 x 3) and 4 x (qkv, proj, fc1, fc2) Linear.
        ("vit_tiny_patch16_224", {"depth": 4, "img_size": 32, "patch_size": 4}, 17),
    ],
)
def test_alpha_matches_weightwatcher(name: str, kwargs: dict, at_least: int) -> None:
    # The cross-check: bocb's alpha per layer against WeightWatcher's on the same layers of
    # a small timm model (random init, fixed seed). Where both fits succeed they must agree within
    # 0.1; by construction they agree to rounding (~1e-12), so this also catches a changed xmin.
    # Documented differences (metrics.py docstring) are excluded, not tolerated: WeightWatcher also
    # tries tails of 2..4 eigenvalues (bocb: MIN_TAIL = 5), so a layer where it picks such a tail
    # is not compared; its 1e-5 eigenvalue floor vs bocb's rank cut never moves xmin here.
    weightwatcher = _import_weightwatcher()
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    with threadpool_limits(1):  # BLAS threads fighting over 2 cores make both 5-10x slower
        ours = layer_metrics(model, conv="slices").set_index("layer")
        theirs = _weightwatcher_details(weightwatcher, model)
    compared, kinds = 0, set()
    for _, row in theirs.iterrows():
        mine = ours.loc[row["longname"]]  # aligned by module name; the matrices must match too
        assert sorted(mine["shape"]) == [row["M"], row["N"]] and mine["n_eig"] == row["num_evals"]
        for col in ("log_norm", "log_spectral_norm", "stable_rank"):
            assert mine[col] == pytest.approx(row[col], rel=1e-9), (row["longname"], col)
        both_ok = mine["alpha_status"] == "ok" and row["status"] == "success"
        if not both_ok or row["num_pl_spikes"] < MIN_TAIL:
            continue
        gap = abs(mine["alpha"] - row["alpha"])
        assert gap < 0.1, (row["longname"], mine["alpha"], row["alpha"])
        compared += 1
        kinds.add((mine["kind"], row["rf"] > 1))
    assert compared >= at_least, compared
    # Not vacuous in kind either: pooled multi-slice convs in both (the ViT's patch embedding), 1x1
    # convs in the CNN, plain Linear matrices (incl. the attention qkv) in the ViT.
    plain = "conv2d" if name == "resnet18" else "linear"
    assert ("conv2d", True) in kinds and (plain, False) in kinds


def test_a_layer_with_non_finite_weights_is_reported_not_raised() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 30))
    w[3, 4] = np.nan
    row = matrix_metrics(w)
    assert row["alpha_status"] == "non-finite weights" and np.isnan(row["alpha"]) and np.isnan(row["l2"])
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    with torch.no_grad():
        model[1].weight[0, 0] = float("inf")
    frame = layer_metrics(model)
    assert list(frame["alpha_status"] == "non-finite weights") == [False, True]
    assert np.isfinite(frame.loc[0, "l2"])
