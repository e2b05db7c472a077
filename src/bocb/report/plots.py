"""Figures of the BOCB analysis (accuracy and hyper-parameter robustness), drawn on matplotlib Agg canvases.

Every function returns a new :class:`matplotlib.figure.Figure` on its own Agg canvas, built without
``pyplot`` and without switching the global backend, so no figure is registered globally and nothing
needs closing; :func:`save_figure` writes one as PNG (150 dpi) and SVG. Figures are sized from the table's shape, so the paper's 20 x 20 table and a
4-backbone demo study both stay readable; constrained layout keeps labels inside the canvas, and
files are saved at the figure's exact size (no ``bbox_inches="tight"``), so a PNG's aspect is the
figure's.

- :func:`heatmap_table`: Table 1 as a heat map, optimizers (rows) x backbones (columns) as the paper
  prints it; cell text = top-1, colour = per-backbone normalised top-1, top-k per backbone bold and
  outlined, the best with a thick outline, flagged cells grey and hatched, legend naming the rule.
- :func:`violins_per_backbone`: each backbone's top-1 over optimizers, violin plus points, failures
  as red crosses.
- :func:`hparam_boxplots`: hyper-parameter distances per backbone and per optimizer.
- :func:`interaction_heatmap`: the additive model's interaction residuals, diverging colours
  centred at 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from bocb.analysis.coupling import AdditiveFit
from bocb.analysis.failure import DEFAULT_RULE, FailureRule, flag, rule
from bocb.analysis.results import wide
from bocb.analysis.summary import TOP_K

DPI = 150
FLAG_FACE = "0.86"
FLAG_HATCH = "0.55"
FIT_NAMES = {"median_polish": "median polish", "weighted_ls": "weighted least squares"}
# The light two thirds of YlGnBu: dark text stays readable on every cell.
ACCURACY_CMAP = ListedColormap(matplotlib.colormaps["YlGnBu"](np.linspace(0.02, 0.7, 256)))
DIVERGING_CMAP = matplotlib.colormaps["RdBu"]


def save_figure(fig: Figure, stem: Path) -> tuple[Path, Path]:
    """Write ``fig`` to ``<stem>.png`` (150 dpi) and ``<stem>.svg``; returns (png, svg).

    The suffixes are appended (a stem with dots keeps them); parent folders are created. SVG text is
    kept as text, not outlines: the files stay small and searchable.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = Path(f"{stem}.png"), Path(f"{stem}.svg")
    fig.savefig(png, dpi=DPI, format="png")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(svg, format="svg")
    return png, svg


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, nothing to close."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _cell_font(n_rows: int, n_cols: int) -> float:
    """Font size for text in cells: small for the paper's 20 x 20 table, larger for a demo."""
    return 7.0 if max(n_rows, n_cols) > 12 else 9.0


def _text_colour(rgba: tuple[float, ...]) -> str:
    """Black or white, whichever reads better on the cell colour (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def _flag_table(frame: pd.DataFrame, flagged: pd.DataFrame | FailureRule | str) -> pd.DataFrame:
    """Flags as a bool backbone x optimizer table from a rule, :func:`flag`'s output or a bool table."""
    if isinstance(flagged, FailureRule | str):
        flagged = flag(frame, flagged)
    if {"optimizer", "backbone", "flagged"} <= set(flagged.columns):
        flagged = flagged.pivot(index="backbone", columns="optimizer", values="flagged")
    return flagged.astype("boolean").fillna(False).astype(bool)


def heatmap_table(
    frame: pd.DataFrame,
    flagged: pd.DataFrame | FailureRule | str = DEFAULT_RULE,
    top_k: int = TOP_K,
    *,
    rule_name: str | None = None,
    title: str | None = None,
) -> Figure:
    """Table 1 as a heat map: optimizers (rows) x backbones (columns), input order.

    ``frame``: a result frame (see :func:`bocb.analysis.results.load_results`). ``flagged``: a failure
    rule (or its name), :func:`bocb.analysis.failure.flag`'s output, or a bool backbone x optimizer
    table. The legend names the rule: ``rule_name`` if given, else the rule's name when a rule was
    passed. Colour = per-backbone normalised top-1, ``(x - lo) / (hi - lo)`` with lo, hi the worst and
    best *unflagged* result of the backbone, so a collapse to 30 % does not wash out the rest of the
    column; flagged cells are grey and hatched instead. The ``top_k`` results of each backbone are
    bold and outlined, its best with a thick black outline.
    """
    table = wide(frame).T  # optimizer x backbone, the paper's orientation
    flags = _flag_table(frame, flagged).T.reindex(index=table.index, columns=table.columns, fill_value=False)
    if rule_name is None and isinstance(flagged, FailureRule | str):
        rule_name = flagged.label if isinstance(flagged, FailureRule) else rule(flagged).label
    values = table.to_numpy(float)
    fails = flags.to_numpy(bool) & ~np.isnan(values)
    kept = np.where(fails, np.nan, values)
    has_kept = ~np.all(np.isnan(kept), axis=0)
    lo = np.where(np.isnan(kept), np.inf, kept).min(axis=0)
    hi = np.where(np.isnan(kept), -np.inf, kept).max(axis=0)
    span = np.where(has_kept & (hi > lo), hi - lo, 1.0)
    with np.errstate(invalid="ignore"):
        norm = np.clip((kept - np.where(has_kept, lo, 0.0)) / span, 0.0, 1.0)
    n_rows, n_cols = table.shape
    font = _cell_font(n_rows, n_cols)
    width = max(5.5, 1.6 + 0.62 * n_cols + 1.0)
    height = max(3.6, 2.3 + 0.27 * n_rows)
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(norm), cmap=ACCURACY_CMAP, vmin=0, vmax=1, aspect="auto")
    # Ranks within each backbone (column): 0 = best; NaN cells never rank.
    order = pd.DataFrame(values).rank(axis=0, ascending=False, method="first").to_numpy() - 1
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if np.isnan(v):
                continue
            top, best = order[i, j] < top_k, order[i, j] == 0
            if fails[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=FLAG_FACE,
                                       edgecolor=FLAG_HATCH, hatch="////", linewidth=0))
                colour = "0.2"
            else:
                colour = _text_colour(ACCURACY_CMAP(norm[i, j]))
            if top:
                inset = 0.06 if best else 0.1
                ax.add_patch(Rectangle((j - 0.5 + inset, i - 0.5 + inset), 1 - 2 * inset, 1 - 2 * inset,
                                       fill=False, edgecolor="black" if best else "0.25",
                                       linewidth=2.0 if best else 0.8))
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=font, color=colour,
                    fontweight="bold" if top else "normal")
    ax.set_xticks(range(n_cols), table.columns, rotation=45, ha="left", rotation_mode="anchor",
                  fontsize=font + 1)
    ax.set_yticks(range(n_rows), table.index, fontsize=font + 1)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(-0.5, n_cols), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.6 if n_rows > 12 else 0.9, pad=0.01, aspect=25)
    bar.set_label("top-1 normalised per backbone\n(0 = worst unflagged, 1 = best)", fontsize=font + 1)
    bar.ax.tick_params(labelsize=font)
    label = f"flagged by rule '{rule_name}'" if rule_name else "flagged as failure"
    handles = [
        Patch(facecolor=FLAG_FACE, edgecolor=FLAG_HATCH, hatch="////", label=f"{label} ({int(fails.sum())})"),
        Patch(fill=False, edgecolor="black", linewidth=2.0, label="best of the backbone (bold)"),
        Patch(fill=False, edgecolor="0.25", linewidth=0.8, label=f"top-{top_k} of the backbone (bold)"),
    ]
    # Three legend columns only fit under a wide table; a demo-sized one stacks them.
    fig.legend(handles=handles, loc="outside lower center", ncols=3 if n_cols >= 8 else 1,
               frameon=False, fontsize=font + 1)
    if title:
        fig.suptitle(title, fontsize=font + 3)
    return fig


def violins_per_backbone(frame: pd.DataFrame, failure_rule: FailureRule | str = DEFAULT_RULE) -> Figure:
    """Top-1 over optimizers per backbone (input order): a violin plus one point per optimizer.

    Points flagged by ``failure_rule`` are red crosses, so a collapse shows as an outlier with a
    mark rather than only as a long violin tail. A backbone with fewer than two distinct results
    gets points only (a density needs spread).
    """
    marked = flag(frame, failure_rule)
    chosen = rule(failure_rule) if isinstance(failure_rule, str) else failure_rule
    backbones = list(dict.fromkeys(marked["backbone"]))
    n = len(backbones)
    font = _cell_font(1, n)
    fig = new_figure(max(5.0, 1.4 + 0.55 * n), 4.4)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only; fixed so files are reproducible
    for x, backbone in enumerate(backbones):
        rows = marked[marked["backbone"] == backbone]
        v = rows["top1"].to_numpy(float)
        if len(np.unique(v)) > 1:
            parts = ax.violinplot(v, positions=[x], widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor("#9ecae1")
                body.set_edgecolor("#3182bd")
                body.set_alpha(0.6)
        jitter = rng.uniform(-0.15, 0.15, len(v))
        bad = rows["flagged"].to_numpy(bool)
        ax.scatter(x + jitter[~bad], v[~bad], s=10, color="0.15", zorder=3, linewidths=0)
        ax.scatter(x + jitter[bad], v[bad], s=28, color="#d62728", marker="x", zorder=4, linewidths=1.2)
        ax.hlines(np.median(v), x - 0.3, x + 0.3, color="#08519c", linewidth=1.2, zorder=2)
    ax.set_xticks(range(n), backbones, rotation=45, ha="right", rotation_mode="anchor", fontsize=font + 1)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("top-1 (%)", fontsize=font + 1)
    ax.tick_params(axis="y", labelsize=font + 1)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="0.15", markersize=4, label="optimizer"),
        Line2D([], [], marker="x", linestyle="", color="#d62728", markersize=6,
               label=f"flagged by rule '{chosen.label}' ({int(marked['flagged'].sum())})"),
        Line2D([], [], color="#08519c", label="median"),
    ]
    # Below the axes, not inside: failures sit exactly where an inside legend would go.
    fig.legend(handles=handles, loc="outside lower center", ncols=3 if n >= 8 else 1, frameon=False,
               fontsize=font + 1)
    ax.set_title("Top-1 over optimizers, per backbone", fontsize=font + 3)
    return fig


def _boxes(ax, distances: pd.DataFrame, by: str, font: float, rng: np.random.Generator) -> None:
    """Box plot plus jittered points of ``distance`` per ``by``, most robust (lowest median, then
    mean) first."""
    stats = distances.groupby(by, sort=False)["distance"].agg(["median", "mean"])
    order = stats.sort_values(["median", "mean"], kind="stable").index
    data = [distances.loc[distances[by] == name, "distance"].to_numpy(float) for name in order]
    ax.boxplot(data, positions=range(len(order)), widths=0.6, showfliers=False,
               medianprops={"color": "#08519c", "linewidth": 1.5},
               boxprops={"color": "0.35"}, whiskerprops={"color": "0.35"}, capprops={"color": "0.35"})
    for x, d in enumerate(data):
        # Jitter sideways only, never in value: the distances are the measurement.
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(d)), d, s=9, color="0.2", alpha=0.55, linewidths=0,
                   zorder=3)
        ax.scatter([x], [d.mean()], marker="D", s=22, color="#d62728", zorder=4)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=font + 1)
    ax.set_xlim(-0.6, len(order) - 0.4)
    top = max(1.0, float(distances["distance"].max()))
    ax.set_ylim(-0.05 * top, top * 1.08)
    ax.tick_params(axis="y", labelsize=font + 1)
    ax.set_ylabel("distance (decades of lr + wd)", fontsize=font + 1)
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.set_title(f"per {by} (sorted by median, most robust first; red diamond = mean)", fontsize=font + 2)


def hparam_boxplots(distances: pd.DataFrame) -> Figure:
    """Distances in decades of each pair's best (lr, wd) from its optimizer's usual setting (see
    :mod:`bocb.analysis.robustness`): top panel per backbone, bottom panel per optimizer.

    ``distances``: :func:`bocb.analysis.robustness.hparam_distances`'s output (needs ``optimizer``,
    ``backbone``, ``distance``). Low = the optimizer's usual setting transfers.
    """
    missing = [c for c in ("optimizer", "backbone", "distance") if c not in distances.columns]
    if missing:
        raise ValueError(f"distances lack column(s) {', '.join(missing)}: pass hparam_distances(...)'s output")
    n = max(distances["backbone"].nunique(), distances["optimizer"].nunique())
    font = _cell_font(1, n)
    fig = new_figure(max(5.5, 1.6 + 0.5 * n), 7.2)
    rng = np.random.default_rng(0)
    top, bottom = fig.subplots(2, 1)
    _boxes(top, distances, "backbone", font, rng)
    _boxes(bottom, distances, "optimizer", font, rng)
    fig.suptitle("Hyper-parameter distance to the optimizer's usual setting", fontsize=font + 3)
    return fig


def interaction_heatmap(fit: AdditiveFit, clip_quantile: float = 0.95) -> Figure:
    """The interaction residuals ``e_bo`` of an additive fit: optimizers (rows) x backbones (columns).

    Blue = better than backbone quality + optimizer quality predict, red = worse, white = 0. The
    colour scale is symmetric and saturates at the ``clip_quantile`` of ``|e|`` (the colour bar's
    arrows), so a few collapses do not wash out the rest; every cell prints its value. The fit
    method is in the title.
    """
    res = fit.residuals.T  # optimizer x backbone
    e = res.to_numpy(float)
    finite = np.abs(e[~np.isnan(e)])
    lim = float(np.quantile(finite, clip_quantile)) if len(finite) else 1.0
    lim = max(lim, 0.5)
    n_rows, n_cols = res.shape
    font = _cell_font(n_rows, n_cols)
    cmap = LinearSegmentedColormap.from_list("e", DIVERGING_CMAP(np.linspace(0.05, 0.95, 256)))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
    width = max(5.5, 1.6 + 0.55 * n_cols + 1.0)
    height = max(3.6, 1.9 + 0.27 * n_rows)
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(e), cmap=cmap, norm=norm, aspect="auto")
    for i in range(n_rows):
        for j in range(n_cols):
            if not np.isnan(e[i, j]):
                colour = _text_colour(cmap(norm(np.clip(e[i, j], -lim, lim))))
                shown = round(float(e[i, j]), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
                ax.text(j, i, f"{shown:.1f}", ha="center", va="center", fontsize=font, color=colour)
    ax.set_xticks(range(n_cols), res.columns, rotation=45, ha="left", rotation_mode="anchor",
                  fontsize=font + 1)
    ax.set_yticks(range(n_rows), res.index, fontsize=font + 1)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    bar = fig.colorbar(image, ax=ax, shrink=0.6 if n_rows > 12 else 0.9, pad=0.01, aspect=25,
                       extend="both")
    bar.set_label(f"residual (top-1 points)\nclipped at ±{lim:.1f}", fontsize=font + 1)
    bar.ax.tick_params(labelsize=font)
    method = FIT_NAMES.get(fit.method, fit.method)
    sep = " " if n_cols >= 8 else "\n"  # a demo-sized figure cannot hold the title on one line
    fig.suptitle(f"Interaction residuals: top-1 − (μ + backbone + optimizer),{sep}{method} fit",
                 fontsize=font + 3)
    return fig
