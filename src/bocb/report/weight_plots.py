"""Figures of the weight diagnostics (the paper's ridge plots and alpha bars), in :mod:`bocb.report.plots`' style:
each function returns a new Agg-canvas :class:`~matplotlib.figure.Figure` (no pyplot), sized from
the data, for :func:`bocb.report.plots.save_figure`.

- :func:`ridge_plot`: one backbone, one panel per metric; x = layer index (input side first), one
  ridge per optimizer sorted by the pair's top-1 (**best on top**), the random initialisation at the
  bottom (black, dashed). Each pair is drawn from its representative model
  (:func:`bocb.analysis.weights.representatives`). Flagged pairs are red, hatched and labelled
  ``[flagged]``. Within a panel all ridges share one scale, stated in the panel title: a ridge's
  baseline is the panel's lowest value, its full height (0.85 of the ridge spacing) the highest.
  Alpha is clipped at :data:`ALPHA_CLIP` (clipped layers get a triangle), because a single
  near-degenerate fit can reach alpha in the tens and flatten every other ridge.
- :func:`alpha_bars`: per backbone a panel of bars, one per optimizer (the study's order), bar =
  the model's median (or mean) alpha over layers with an ok fit; flagged pairs grey and hatched as
  in :func:`bocb.report.plots.heatmap_table`; the random initialisation's value as a dashed black
  line; the band [2, 6] shaded. Panels share the alpha axis and wrap into a grid, so 4 and 20
  backbones both stay readable. The axis ends at ``ALPHA_CLIP + 1``; a taller bar is cut there
  with its value printed inside its top.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from bocb.report.plots import FLAG_FACE, FLAG_HATCH, new_figure
from bocb.analysis.weights import ALPHA_BAND, band_applies, init_summaries, model_summaries, representatives

RIDGE_METRICS = ("entropy", "l2", "pca_energy", "alpha")
METRIC_LABELS = {
    "entropy": "entropy (nats)",
    "l2": "L2 (Frobenius) norm",
    "pca_energy": "top-10 PCA energy",
    "alpha": "PL exponent alpha",
    "stable_rank": "stable rank",
    "log_norm": "log10 squared Frobenius norm",
    "log_spectral_norm": "log10 spectral norm",
    "alpha_weighted": "weighted alpha",
}
ALPHA_CLIP = 12.0
RIDGE_HEIGHT = 0.85
FAIL_COLOUR = "#d62728"
RIDGE_CMAP = matplotlib.colormaps["viridis"]
BAR_COLOUR = "#4c78a8"
BAND_COLOUR = "#2ca02c"


def _flag_lookup(flags: pd.DataFrame) -> dict[tuple[str, str], bool]:
    if not {"optimizer", "backbone", "flagged"} <= set(flags.columns):
        raise ValueError("flags lack optimizer/backbone/flagged columns: pass bocb.analysis.flag(...)'s output")
    return {(o, b): bool(v) for o, b, v in flags[["optimizer", "backbone", "flagged"]].itertuples(index=False)}


def _font(n: int) -> float:
    return 7.0 if n > 12 else 8.5


def _layers(weights: pd.DataFrame, snapshot_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = weights[weights["snapshot_id"] == snapshot_id].sort_values("layer_index")
    values = rows[metric].astype(float)
    if metric == "alpha":
        values = values.where(rows["alpha_status"].eq("ok"))
    return rows["layer_index"].to_numpy(float), values.to_numpy(float)


def ridge_plot(
    weights: pd.DataFrame,
    results: pd.DataFrame,
    flags: pd.DataFrame,
    backbone: str,
    metrics: tuple[str, ...] | list[str] = RIDGE_METRICS,
    *,
    rule_name: str | None = None,
    reference: str = "random init",
    reps: pd.DataFrame | None = None,
) -> Figure:
    """Ridge plot of one backbone's per-layer ``metrics`` (layout in the module doc).

    ``reference`` names the ``source == "init"`` snapshot in labels (a transfer report passes the
    pre-trained model there: the weights fine-tuning started from).

    ``weights``: :func:`~bocb.analysis.from_store.weights_frame`; ``results``: the study's results
    (with ``trial_id``); ``flags``: :func:`bocb.analysis.flag`'s output; ``reps``:
    ``representatives(results, weights)`` (or :func:`~bocb.analysis.weights.model_table`'s rows)
    when the caller has them, so a plot per backbone does not choose every pair's model again (at
    30,000 trials that was 1.3 s a plot). Every ridge line and fill
    carries a ``gid`` ``"ridge:<optimizer>"`` (``"ridge:init"`` for the initialisation). A pair
    without a measured model keeps its row, labelled ``[no snapshot]``, with no ridge.
    """
    if not len(metrics):
        raise ValueError("ridge_plot needs at least one metric")
    unknown = [m for m in metrics if m not in weights.columns]
    if unknown:
        raise ValueError(f"unknown weight metric(s) {unknown}: valid: {', '.join(METRIC_LABELS)}")
    marks = _flag_lookup(flags)
    if reps is None:
        reps = representatives(results, weights)
    reps = reps[reps["backbone"] == backbone].sort_values("pair_top1", ascending=False, kind="stable")
    if reps.empty:
        raise ValueError(f"no results for backbone {backbone!r}")
    mine = weights[weights["backbone"] == backbone]
    init = mine[mine["source"] == "init"]
    init_id = init["snapshot_id"].iloc[0] if len(init) else None
    # Rows bottom-up: init at 0, the worst optimizer at 1, ..., the best at the top.
    rows = [("init", init_id, None, False, "")]
    for rep in reps.iloc[::-1].itertuples(index=False):
        status = " [diverged]" if rep.status == "diverged" else ""
        rows.append((rep.optimizer, rep.trial_id if isinstance(rep.trial_id, str) else None,
                     rep.pair_top1, marks.get((rep.optimizer, backbone), False), status))
    n_rows, n_opt = len(rows), len(rows) - 1
    n_layers = int(mine["layer_index"].max() + 1) if len(mine) else 1
    font = _font(n_rows)
    panel_w = 2.5 + 0.02 * max(0, n_layers - 30)
    fig = new_figure(1.9 + panel_w * len(metrics), 1.7 + 0.36 * n_rows)
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    # The drawn snapshots' rows, found once: each ridge and panel below looks its snapshot up in
    # these, not in every snapshot of the study.
    drawn = weights[weights["snapshot_id"].isin([sid for _, sid, *_rest in rows if sid])]
    for ax, metric in zip(axes, metrics, strict=True):
        series = {i: _layers(drawn, sid, metric) for i, (_, sid, *_rest) in enumerate(rows) if sid}
        finite = np.concatenate([v[np.isfinite(v)] for _, v in series.values()]) if series else np.array([])
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        clipped = metric == "alpha" and hi > ALPHA_CLIP
        if clipped:
            hi = ALPHA_CLIP
        span = hi - lo if hi > lo else 1.0
        for i, (name, sid, _top1, flagged, _status) in enumerate(rows):
            ax.axhline(i, color="0.85", linewidth=0.5, zorder=0)
            if i not in series:
                continue
            x, v = series[i]
            y = i + RIDGE_HEIGHT * (np.clip(v, lo, hi) - lo) / span
            if name == "init":
                ax.plot(x, y, color="black", linestyle="--", linewidth=1.2, gid="ridge:init", zorder=3)
                ax.fill_between(x, i, y, color="0.6", alpha=0.25, linewidth=0, gid="ridge:init")
            elif flagged:
                ax.fill_between(x, i, y, facecolor=FAIL_COLOUR, alpha=0.25, hatch="////",
                                edgecolor=FAIL_COLOUR, linewidth=0, gid=f"ridge:{name}")
                ax.plot(x, y, color=FAIL_COLOUR, linewidth=1.3, marker="o", markersize=2.2,
                        gid=f"ridge:{name}", zorder=3)
            else:
                colour = RIDGE_CMAP(0.15 + 0.7 * (i - 1) / max(1, n_opt - 1))
                ax.fill_between(x, i, y, color=colour, alpha=0.35, linewidth=0, gid=f"ridge:{name}")
                ax.plot(x, y, color=colour, linewidth=1.1, marker="o", markersize=2.0,
                        gid=f"ridge:{name}", zorder=3)
            if clipped:
                over = v > ALPHA_CLIP
                ax.plot(x[over], np.full(over.sum(), i + RIDGE_HEIGHT), linestyle="", marker="^",
                        markersize=3.5, color="black", zorder=4)
        label = METRIC_LABELS.get(metric, metric)
        top = f"{hi:.3g}" + (" (clipped)" if clipped else "")
        ax.set_title(f"{label}\nbaseline {lo:.3g}, ridge top {top}", fontsize=font)
        ax.set_xlabel("layer index (input → output)", fontsize=font)
        ax.tick_params(labelsize=font - 0.5)
        ax.set_xlim(-0.5, n_layers - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        for spine in ("top", "right", "left"):
            ax.spines[spine].set_visible(False)
        ax.tick_params(axis="y", length=0)
    axes[0].set_ylim(-0.2, n_rows - 1 + RIDGE_HEIGHT + 0.2)
    labels = []
    for name, sid, top1, flagged, status in rows:
        if name == "init":
            labels.append(reference + (" [not measured]" if sid is None else ""))
        else:
            text = f"{name} ({top1:.1f})" + (" [flagged]" if flagged else "") + status
            labels.append(text + (" [no snapshot]" if sid is None else ""))
    axes[0].set_yticks(range(n_rows), labels, fontsize=font)
    for tick, (name, sid, _t, flagged, _s) in zip(axes[0].get_yticklabels(), rows, strict=True):
        tick.set_color(FAIL_COLOUR if flagged else ("0.5" if sid is None else "black"))
        if name == "init":
            tick.set_fontweight("bold")
    handles = [
        Line2D([], [], color="black", linestyle="--", label=reference),
        Patch(facecolor=FAIL_COLOUR, alpha=0.4, hatch="////", edgecolor=FAIL_COLOUR,
              label="flagged" + (f" by rule '{rule_name}'" if rule_name else " as failure")),
        Patch(facecolor=RIDGE_CMAP(0.5), alpha=0.5, label="optimizer (label: pair top-1, %)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=font)
    fig.suptitle(f"{backbone}: weight metrics per layer, optimizers by top-1 (best on top)",
                 fontsize=font + 2)
    return fig


def _pair_alpha(weights: pd.DataFrame, results: pd.DataFrame | None, column: str) -> pd.DataFrame:
    """Per pair: ``value`` (the model statistic) and ``has_model``."""
    final = weights[weights["source"] == "final"]
    summary = model_summaries(final)
    if results is not None:
        reps = representatives(results, weights)
        out = reps.merge(summary[["trial_id", column]], on="trial_id", how="left")
        out["has_model"] = out["trial_id"].notna()
        return out.rename(columns={column: "value"})[["optimizer", "backbone", "value", "has_model"]]
    out = summary.groupby(["optimizer", "backbone"], sort=False)[column].mean().rename("value").reset_index()
    return out.assign(has_model=True)


def alpha_bars(
    weights: pd.DataFrame,
    flags: pd.DataFrame,
    results: pd.DataFrame | None = None,
    *,
    statistic: str = "median",
    rule_name: str | None = None,
    reference: str = "random init",
) -> Figure:
    """Alpha per backbone x optimizer as grouped bar panels (layout in the module doc).

    ``reference``: the legend's name for the ``init`` snapshot's line (see :func:`ridge_plot`).

    ``flags``: :func:`bocb.analysis.flag`'s output (fixes the backbones, the optimizers and their
    order). ``results`` (with ``trial_id``): draw each pair's representative model; without it, the
    mean of the statistic over all the pair's measured models. ``statistic``: ``median`` (default:
    one odd layer fit cannot move it) or ``mean`` alpha over a model's layers with an ok fit.
    Bars carry a ``gid`` ``"bar:<backbone>:<optimizer>"``; only flagged pairs' bars are hatched.
    """
    if statistic not in ("median", "mean"):
        raise ValueError(f"unknown statistic {statistic!r}: valid: median, mean")
    column = f"alpha_{statistic}"
    marks = _flag_lookup(flags)
    backbones = list(dict.fromkeys(flags["backbone"]))
    optimizers = list(dict.fromkeys(flags["optimizer"]))
    pairs = _pair_alpha(weights, results, column)
    value = {(o, b): v for o, b, v in pairs[["optimizer", "backbone", "value"]].itertuples(index=False)}
    init = init_summaries(weights).set_index("backbone")[column] if not weights.empty else pd.Series(dtype=float)
    shown = [v for v in value.values() if np.isfinite(v)] + [v for v in init.to_numpy(float) if np.isfinite(v)]
    top = max(ALPHA_BAND[1] + 1.0, max(shown, default=0.0) * 1.12)
    top = min(top, ALPHA_CLIP + 1.0)
    n_opt, n_b = len(optimizers), len(backbones)
    font = _font(n_opt)
    panel_w = 0.9 + 0.27 * n_opt
    ncols = max(1, min(n_b, int(16 // panel_w), 5))
    nrows = math.ceil(n_b / ncols)
    fig = new_figure(0.6 + panel_w * ncols, 1.3 + 2.5 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    x = np.arange(n_opt)
    for k, backbone in enumerate(backbones):
        ax = axes[k]
        if band_applies(weights):
            ax.axhspan(*ALPHA_BAND, color=BAND_COLOUR, alpha=0.12, linewidth=0, zorder=0)
        for j, optimizer in enumerate(optimizers):
            v = value.get((optimizer, backbone), np.nan)
            if (optimizer, backbone) not in marks:
                continue  # the pair was not run
            if not np.isfinite(v):
                why = "n/a" if (optimizer, backbone) in value else "no model"
                ax.text(j, 0.15, why, rotation=90, ha="center", va="bottom", fontsize=font - 1, color="0.4")
                continue
            flagged = marks[(optimizer, backbone)]
            height = min(v, top)
            if flagged:
                ax.bar(j, height, width=0.75, facecolor=FLAG_FACE, edgecolor=FLAG_HATCH, hatch="////",
                       linewidth=0.6, gid=f"bar:{backbone}:{optimizer}", zorder=2)
            else:
                ax.bar(j, height, width=0.75, color=BAR_COLOUR, gid=f"bar:{backbone}:{optimizer}", zorder=2)
            if v > top:  # clipped: the value inside the bar's top, so it cannot run into the title
                ax.text(j, top * 0.98, f"{v:.1f}", ha="center", va="top", fontsize=font - 1.5,
                        rotation=90 if n_opt > 8 else 0, zorder=5, color="black" if flagged else "white")
            elif n_opt <= 12:
                ax.text(j, height + 0.08, f"{v:.1f}", ha="center", va="bottom", fontsize=font - 1.5,
                        rotation=90 if n_opt > 8 else 0, zorder=5,
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        if backbone in init.index and np.isfinite(init[backbone]):
            ax.axhline(min(init[backbone], top), color="black", linestyle="--", linewidth=1.1, zorder=4)
        ax.set_xticks(x, optimizers, rotation=60 if n_opt > 4 else 0, ha="right" if n_opt > 4 else "center",
                      rotation_mode="anchor", fontsize=font)
        ax.set_xlim(-0.6, n_opt - 0.4)
        ax.set_title(backbone, fontsize=font + 1)
        ax.tick_params(axis="y", labelsize=font)
        if k % ncols == 0:
            ax.set_ylabel(f"{statistic} alpha over layers", fontsize=font)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    axes[0].set_ylim(0, top)
    for ax in axes[n_b:]:
        ax.set_visible(False)
    n_flag = sum(1 for (o, b), f in marks.items() if f and np.isfinite(value.get((o, b), np.nan)))
    handles = [
        Patch(facecolor=BAR_COLOUR, label="trained model"),
        Patch(facecolor=FLAG_FACE, edgecolor=FLAG_HATCH, hatch="////",
              label=("flagged" + (f" by rule '{rule_name}'" if rule_name else "")) + f" ({n_flag})"),
        Line2D([], [], color="black", linestyle="--", label=reference),
        Patch(facecolor=BAND_COLOUR, alpha=0.25, label="alpha in [2, 6]"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4 if ncols * panel_w > 7 else 2,
               frameon=False, fontsize=font)
    fig.suptitle(f"PL exponent alpha per model ({statistic} over layers with an ok fit)", fontsize=font + 2)
    return fig
