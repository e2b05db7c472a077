"""Weight diagnostics per model, and their association with accuracy and failure flags
(the paper's parameter patterns; the input is :func:`bocb.analysis.from_store.weights_frame`'s frame).

Every choice is fixed here and stated once:

- **One model per pair** (:func:`representatives`). A (backbone, optimizer) pair run at several
  settings or seeds is represented by one trained model: among the runs of the pair's best-tuned
  setting (:func:`bocb.analysis.results.best_tuned`, so with a held-out seed the selection seed is
  not a candidate), the run whose top-1 is closest to the mean top-1 of those runs (the pair's
  Table 1 value); ties go to the lower seed. When ``weights`` is given, only runs that have a
  measured snapshot are candidates, so a seed whose measurement failed is replaced by a sibling.
  A pair with no measured candidate has no model (``trial_id`` missing).
- **Per-model summaries** (:func:`model_summaries`), over a snapshot's measured layers:
  ``alpha_mean`` and ``alpha_median`` over the layers whose power-law fit succeeded
  (``alpha_status == "ok"``; NaN when none did); ``alpha_outside``: the share of those layers with
  alpha outside :data:`ALPHA_BAND` = [2, 6] (WeightWatcher's reading: below 2 or above 6
  signals over- or under-fitting); ``entropy_mean`` (nats); ``log10_l2_mean``: the mean of ``log10`` of each layer's
  Frobenius norm, i.e. log10 of the geometric mean. Logs, because a layer's norm grows with its
  size, so norms span orders of magnitude within one network and a plain mean would be the largest
  layers' norm; and weight decay or growth scales all layers by a factor, which the log turns into
  a shift. ``pca_energy_mean`` (top-10 share) and ``stable_rank_mean``. ``n_layers`` and ``n_alpha``
  (layers with an ok fit) come along.
- **Association** (:func:`association`), one row per summary, measured *within backbones*: the
  backbones differ far more in these metrics than optimizers do on one backbone, so pooling raw
  values would measure which backbone a model is, not how it was trained.

  * Accuracy: ``rho``, the pooled within-backbone Spearman correlation: the metric and top-1 are
    ranked within each backbone (average ranks for ties), each rank is centred on its backbone's
    mean rank, and the Pearson correlation of the pooled centred ranks is taken. Top-1 here is the
    representative model's own final top-1 (the network whose weights were measured).
  * Flags: ``auc``, the within-backbone rank AUC: over every pair (flagged model, unflagged model)
    of the same backbone, the share where the flagged one has the higher metric (ties count 1/2);
    0.5 = no difference, 1 = every flagged model above every unflagged one of its backbone. Only
    backbones with both kinds of model contribute. ``diff``: the mean over those flagged models of
    (the model's metric minus the mean of its backbone's unflagged models), in the metric's own
    units (descriptive; the verdict uses the AUC).
  * CIs: percentile bootstrap (``level`` 0.95; 2.5 % and 97.5 % quantiles, numpy 'linear'),
    ``n_resamples`` (default 2000) draws from ``numpy.random.default_rng(seed)`` (default 0),
    resampling *models* with replacement. For ``rho`` each backbone's models are redrawn within
    the backbone. For ``auc`` and ``diff`` each backbone's unflagged models are redrawn within the
    backbone and the flagged models are redrawn from all flagged models (each keeps its
    backbone): a study usually has about one flagged model per backbone, and redrawing those
    within their backbone would never vary them. Resamples where a statistic is undefined are
    skipped for it. With a handful of models the percentile bootstrap is optimistic (too narrow).
  * Verdicts (:func:`verdict`), plain words with the thresholds stated: ``too few`` when fewer than
    :data:`MIN_MODELS` models (accuracy) or :data:`MIN_FLAGGED` flagged models on backbones with
    both kinds (flags) carry the statistic; ``weak/none`` when the CI includes 0 (0.5 for the AUC)
    or the effect is small (``|rho| <`` :data:`SMALL_RHO`, ``|auc - 0.5| <`` :data:`SMALL_AUC`);
    otherwise the direction, with ``tentative`` added when fewer than :data:`FIRM_N` models
    carry it. No correction for the 2 x 7 comparisons is made: at 95 % about one interval in 20
    excludes the null by chance alone. (On simulated null data shaped like the demo, 4 backbones x
    6 optimizers, about 5 % of verdicts were not ``weak/none``.)

Pure functions: nothing here plots or prints.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bocb.analysis.bootstrap import percentile_interval
from bocb.analysis.results import PAIR, Results

ALPHA_BAND = (2.0, 6.0)
BAND_CONV = "slices"  # the conv convention the band was stated for (WeightWatcher's)


def band_applies(weights: pd.DataFrame) -> bool:
    """Whether the [2, 6] alpha band may be read on these snapshots: it comes from WeightWatcher's
    analyses, whose conv layers are per-kernel-offset slices; alphas of reshaped conv matrices are
    on another scale, so reports draw and count the band only when every snapshot used slices."""
    # A frame that does not say (no column, or empty cells) is taken at the default convention.
    return "conv" not in weights.columns or bool((weights["conv"].isna() | weights["conv"].eq(BAND_CONV)).all())
SUMMARIES: dict[str, str] = {
    "alpha_mean": "mean alpha",
    "alpha_median": "median alpha",
    "alpha_outside": "share of layers with alpha outside [2, 6]",
    "entropy_mean": "mean entropy (nats)",
    "log10_l2_mean": "mean log10 L2",
    "pca_energy_mean": "mean top-10 PCA energy",
    "stable_rank_mean": "mean stable rank",
}
N_RESAMPLES = 2000
LEVEL = 0.95
SMALL_RHO = 0.3
SMALL_AUC = 0.15
MIN_MODELS = 8
MIN_FLAGGED = 3
FIRM_N = 40
REP_COLUMNS = ["optimizer", "backbone", "trial_id", "seed", "top1", "pair_top1", "n_candidates", "status"]


def representatives(results: pd.DataFrame | Results, weights: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per pair: the run that stands for it (rule in the module doc).

    ``results`` needs ``trial_id`` (a study's :func:`~bocb.analysis.from_store.results_frame`).
    Columns :data:`REP_COLUMNS`: ``top1`` is the chosen run's, ``pair_top1`` the mean of the best
    setting's runs (the Table 1 value), ``n_candidates`` how many runs could be chosen (0: the pair
    has no measured snapshot; ``trial_id``, ``seed`` and ``top1`` are then missing). Pairs keep the
    results' order.
    """
    checked = Results.of(results)
    if "trial_id" not in checked.frame.columns:
        raise ValueError("results lack a trial_id column: pass a study's results_frame(...)")
    runs = checked.runs
    if "seed" not in runs.columns:
        runs = runs.assign(seed=0)
    if "status" not in runs.columns:
        runs = runs.assign(status="done")
    runs = runs.assign(pair_top1=runs.groupby(PAIR, sort=False)["top1"].transform("mean"))
    if weights is not None:
        final = weights[weights["source"] == "final"] if "source" in weights.columns else weights
        # One membership test for all runs: per pair against a set of every measured trial, it was
        # 83 s of a 30,000-trial report (pandas converts the set for each call).
        runs = runs.assign(_measured=runs["trial_id"].isin(final["trial_id"].dropna().unique()))
    else:
        runs = runs.assign(_measured=True)
    # Every pair's pick in one stable sort of all measured runs (a sort per pair was 1.3 s at 30,000
    # trials): restricted to one pair, the order is the one sorting that pair alone gives.
    pool = runs[runs["_measured"]]
    pool = pool.assign(_gap=(pool["top1"] - pool["pair_top1"]).abs().round(9))
    picks = pool.sort_values(["_gap", "seed"], kind="stable").drop_duplicates(PAIR).set_index(PAIR)
    counts = pool.groupby(PAIR, sort=False).size()
    rows = []
    for (optimizer, backbone), pair_top1 in runs.groupby(PAIR, sort=False)["pair_top1"].first().items():
        row = {"optimizer": optimizer, "backbone": backbone, "trial_id": None, "seed": np.nan,
               "top1": np.nan, "pair_top1": float(pair_top1), "n_candidates": int(counts.get((optimizer, backbone), 0)),
               "status": None}
        if (optimizer, backbone) in picks.index:
            pick = picks.loc[(optimizer, backbone)]
            row.update(trial_id=pick["trial_id"], seed=pick["seed"], top1=float(pick["top1"]),
                       status=pick["status"])
        rows.append(row)
    return pd.DataFrame(rows, columns=REP_COLUMNS)


def model_summaries(weights: pd.DataFrame) -> pd.DataFrame:
    """One row per snapshot: identity columns plus :data:`SUMMARIES`, ``n_layers``, ``n_alpha``.

    Identity columns: ``snapshot_id``, ``source``, ``backbone``, ``optimizer``, ``trial_id``,
    ``seed``. Layers without a finite positive L2 are left out of ``log10_l2_mean``; NaN metrics are
    left out of every mean; a model with no ok alpha fit has NaN alpha summaries.
    """
    ident = ["snapshot_id", "source", "backbone", "optimizer", "trial_id", "seed"]
    columns = ident + ["n_layers", "n_alpha", *SUMMARIES]
    if weights.empty:
        return pd.DataFrame(columns=columns)
    w = weights.copy()
    ok = w["alpha_status"].eq("ok") & np.isfinite(w["alpha"].astype(float))
    w["_alpha"] = w["alpha"].astype(float).where(ok)
    lo, hi = ALPHA_BAND
    # The band is WeightWatcher's, for WeightWatcher's conv convention only (see band_applies).
    banded = ok & ((w["conv"].isna() | w["conv"].eq(BAND_CONV)) if "conv" in w.columns else True)
    w["_outside"] = ((w["_alpha"] < lo) | (w["_alpha"] > hi)).astype(float).where(banded)
    l2 = w["l2"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        w["_log_l2"] = np.log10(l2.where(l2 > 0))
    grouped = w.groupby("snapshot_id", sort=False)
    out = grouped[ident[1:]].first()
    out["n_layers"] = grouped.size()
    out["n_alpha"] = grouped["_alpha"].count()
    out["alpha_mean"] = grouped["_alpha"].mean()
    out["alpha_median"] = grouped["_alpha"].median()
    out["alpha_outside"] = grouped["_outside"].mean()
    out["entropy_mean"] = grouped["entropy"].mean()
    out["log10_l2_mean"] = grouped["_log_l2"].mean()
    out["pca_energy_mean"] = grouped["pca_energy"].mean()
    out["stable_rank_mean"] = grouped["stable_rank"].mean()
    return out.reset_index()[columns]


def model_table(results: pd.DataFrame, weights: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Per pair: its representative (:func:`representatives`), ``flagged`` (from
    :func:`bocb.analysis.failure.flag`'s output), ``has_snapshot`` and the model's summaries."""
    reps = representatives(results, weights)
    marks = flags[["optimizer", "backbone", "flagged"]]
    table = reps.merge(marks, on=PAIR, how="left")
    table["flagged"] = table["flagged"].astype("boolean").fillna(False).astype(bool)
    final = weights[weights["source"] == "final"] if not weights.empty else weights
    summaries = model_summaries(final)[["trial_id", "n_layers", "n_alpha", *SUMMARIES]]
    table = table.merge(summaries.drop_duplicates("trial_id"), on="trial_id", how="left")
    table["has_snapshot"] = table["n_layers"].notna()
    return table


def init_summaries(weights: pd.DataFrame) -> pd.DataFrame:
    """:func:`model_summaries` of the random initialisations, one row per backbone (first kept)."""
    if weights.empty:
        return model_summaries(weights)
    init = model_summaries(weights[weights["source"] == "init"])
    return init.drop_duplicates("backbone").reset_index(drop=True)


# -- association --------------------------------------------------------------------------------


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) along the last axis (pandas' rank)."""
    flat = pd.DataFrame(x.reshape(-1, x.shape[-1]))
    return flat.rank(axis=1, method="average").to_numpy().reshape(x.shape)


def _rho(metric: np.ndarray, top1: np.ndarray, blocks: list[slice]) -> np.ndarray:
    """Pooled within-backbone Spearman for arrays (..., n) whose columns form ``blocks``."""
    cm, ct = [], []
    for b in blocks:
        rm, rt = _avg_ranks(metric[..., b]), _avg_ranks(top1[..., b])
        cm.append(rm - rm.mean(-1, keepdims=True))
        ct.append(rt - rt.mean(-1, keepdims=True))
    m, t = np.concatenate(cm, -1), np.concatenate(ct, -1)
    den = np.sqrt((m * m).sum(-1) * (t * t).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (m * t).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _flag_stats(x: np.ndarray, f: np.ndarray, blocks: list[slice], n_resamples: int,
                rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Within-backbone AUC and gap of the flagged models, observed (``rng`` None: shape (1,)) or
    bootstrapped (shape (n_resamples,)).

    Only backbones with flagged and unflagged models count. A flagged model's ``wins`` are its
    pairs with its backbone's unflagged models where it is higher (ties 1/2), its ``gap`` is its
    metric minus their mean. AUC = sum of wins / number of pairs; diff = mean gap. Resampling:
    each backbone's unflagged models are redrawn within the backbone, the flagged models are
    redrawn from all flagged models (each keeps its backbone), both with replacement.
    """
    r = 1 if rng is None else n_resamples
    wins, pairs, gaps = [], [], []
    for b in blocks:
        xb, fb = x[b], f[b]
        if not (fb.any() and (~fb).any()):
            continue
        u = xb[~fb]
        if rng is not None:
            u = u[rng.integers(0, len(u), size=(r, len(u)))]
        else:
            u = u[None, :]
        xf = xb[fb][None, :, None]  # (1, n_f_b, 1) against (r, 1, n_u_b)
        ub = u[:, None, :]
        wins.append((xf > ub).sum(-1) + 0.5 * (xf == ub).sum(-1))
        pairs.append(np.full(int(fb.sum()), len(u[0]), dtype=float))
        gaps.append(xb[fb][None, :] - u.mean(-1, keepdims=True))
    if not wins:
        return np.full(r, np.nan), np.full(r, np.nan)
    w, p, g = np.concatenate(wins, 1), np.concatenate(pairs), np.concatenate(gaps, 1)
    if rng is not None:
        pick = rng.integers(0, len(p), size=(r, len(p)))
        w, g, p = np.take_along_axis(w, pick, 1), np.take_along_axis(g, pick, 1), p[pick]
        return w.sum(1) / p.sum(1), g.mean(1)
    return w.sum(1) / p.sum(), g.mean(1)


def _strata_draws(groups: list[np.ndarray], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) column indices: each stratum's positions redrawn with replacement."""
    parts = [g[rng.integers(0, len(g), size=(n_resamples, len(g)))] for g in groups]
    return np.concatenate(parts, axis=1)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = percentile_interval(values, level)
    return float(lo), float(hi)


def verdict(estimate: float, lo: float, hi: float, *, kind: str, n: int, n_models: int | None = None) -> str:
    """Plain words for one association (thresholds in the module doc).

    ``kind``: ``"rho"`` (null 0; positive = higher metric in more accurate models) or ``"auc"``
    (null 0.5; above = higher metric in flagged models). ``n``: models carrying the statistic (for
    ``auc``: flagged models on backbones with both kinds); ``n_models``: all models used (default
    ``n``), which decides ``tentative``.
    """
    if kind not in ("rho", "auc"):
        raise ValueError(f"unknown association kind {kind!r}: valid: rho, auc")
    if kind == "rho" and n < MIN_MODELS:
        return f"too few models (n = {n} < {MIN_MODELS})"
    if kind == "auc" and n < MIN_FLAGGED:
        return f"too few flagged models ({n} < {MIN_FLAGGED})"
    if not np.isfinite(estimate) or not (np.isfinite(lo) and np.isfinite(hi)):
        return "not measurable"
    null, small = (0.0, SMALL_RHO) if kind == "rho" else (0.5, SMALL_AUC)
    if lo <= null <= hi or abs(estimate - null) < small:
        return "weak/none"
    up = estimate > null
    if kind == "rho":
        words = "higher in more accurate models" if up else "lower in more accurate models"
    else:
        words = "higher in flagged models" if up else "lower in flagged models"
    total = n if n_models is None else n_models
    if total < FIRM_N:
        words += f" (tentative: {total} models < {FIRM_N})"
    return words


def association(
    models: pd.DataFrame,
    metrics: list[str] | tuple[str, ...] | None = None,
    *,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Within-backbone association of each per-model metric with top-1 and with the failure flags.

    ``models``: one row per model with ``backbone``, ``top1``, ``flagged`` and the metric columns
    (:func:`model_table`'s output). ``metrics``: default every :data:`SUMMARIES` column present.
    Returns one row per metric (index ``metric``): ``label``, ``n_models`` (with a finite metric),
    ``n_backbones``, ``rho``, ``rho_lo``, ``rho_hi``, ``rho_verdict``, ``n_flagged``,
    ``n_flagged_used`` (on backbones with flagged and unflagged models), ``auc``, ``auc_lo``,
    ``auc_hi``, ``diff``, ``diff_lo``, ``diff_hi``, ``flag_verdict`` (method in the module doc).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    missing = [c for c in ("backbone", "top1", "flagged") if c not in models.columns]
    if missing:
        raise ValueError(f"models lack column(s) {', '.join(missing)}: pass model_table(...)'s output")
    if metrics is None:
        metrics = [m for m in SUMMARIES if m in models.columns]
    rng = np.random.default_rng(seed)
    rows = []
    for metric in metrics:
        d = models[["backbone", "top1", "flagged", metric]].copy()
        d[metric] = pd.to_numeric(d[metric], errors="coerce").astype(float)
        d = d[np.isfinite(d[metric]) & np.isfinite(d["top1"].astype(float))]
        d = d.assign(flagged=d["flagged"].astype(bool)).sort_values(["backbone", "flagged"], kind="stable")
        x = d[metric].to_numpy(float)
        t = d["top1"].to_numpy(float)
        f = d["flagged"].to_numpy(bool)
        codes = pd.factorize(d["backbone"])[0]
        bounds = np.flatnonzero(np.diff(codes)) + 1 if len(codes) else np.array([], int)
        starts = np.concatenate([[0], bounds]).astype(int) if len(codes) else np.array([], int)
        ends = np.concatenate([bounds, [len(codes)]]).astype(int) if len(codes) else np.array([], int)
        blocks = [slice(s, e) for s, e in zip(starts, ends, strict=True)]
        both = [b for b in blocks if f[b].any() and (~f[b]).any()]
        n_used = int(sum(f[b].sum() for b in both))
        row = {"metric": metric, "label": SUMMARIES.get(metric, metric), "n_models": len(d),
               "n_backbones": len(blocks), "n_flagged": int(f.sum()), "n_flagged_used": n_used}
        # Accuracy: strata = backbones.
        rho = float(_rho(x, t, blocks)) if blocks else np.nan
        if blocks:
            idx = _strata_draws([np.arange(b.start, b.stop) for b in blocks], n_resamples, rng)
            rho_lo, rho_hi = _interval(_rho(x[idx], t[idx], blocks), level)
        else:
            rho_lo = rho_hi = np.nan
        row.update(rho=rho, rho_lo=rho_lo, rho_hi=rho_hi,
                   rho_verdict=verdict(rho, rho_lo, rho_hi, kind="rho", n=len(d)))
        # Flags: unflagged redrawn within backbones, flagged redrawn across backbones.
        auc, diff = (float(v[0]) for v in _flag_stats(x, f, blocks, 1, None))
        auc_draws, diff_draws = _flag_stats(x, f, blocks, n_resamples, rng)
        auc_lo, auc_hi = _interval(auc_draws, level)
        diff_lo, diff_hi = _interval(diff_draws, level)
        row.update(auc=auc, auc_lo=auc_lo, auc_hi=auc_hi, diff=diff, diff_lo=diff_lo, diff_hi=diff_hi,
                   flag_verdict=verdict(auc, auc_lo, auc_hi, kind="auc", n=n_used, n_models=len(d)))
        rows.append(row)
    columns = ["metric", "label", "n_models", "n_backbones", "rho", "rho_lo", "rho_hi", "rho_verdict",
               "n_flagged", "n_flagged_used", "auc", "auc_lo", "auc_hi", "diff", "diff_lo", "diff_hi",
               "flag_verdict"]
    return pd.DataFrame(rows, columns=columns).set_index("metric")
