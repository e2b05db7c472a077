"""Learning curves and time-to-accuracy of a study, from the store's epoch rows.

Each pair is drawn by one run, the one that stands for it everywhere in the report
(:func:`bocb.analysis.weights.representatives`: at the pair's best setting, the seed whose score is
closest to that setting's mean). A panel per backbone, a line per optimizer; pairs the failure
rule flags are dashed and named so in the legend.

Time-to-accuracy: per pair, the first epoch (and the training seconds up to it, summed from the
epoch rows) at which the run's test score reached :data:`SHARE` of its backbone's best final
score in the study; "-" when it never did. The share is a stated choice: 90 % separates optimizers
that learn fast from those that catch up late, without asking every run to match the best one.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.ticker import MaxNLocator

from bocb.report.document import Plot, Section, Table, Text
from bocb.report.plots import new_figure

SHARE = 0.9
TITLE = "Learning curves and time to accuracy"


def curve_runs(store: Any, results: Any, flags: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of each pair's representative run: ``backbone``, ``optimizer``,
    ``flagged``, ``epoch``, ``score``, ``train_loss``, ``seconds`` (cumulative training seconds)."""
    from bocb.analysis.weights import representatives

    reps = representatives(results)
    flagged = {(r.optimizer, r.backbone): bool(r.flagged) for r in flags.itertuples(index=False)}
    rows = []
    for rep in reps.itertuples(index=False):
        if not isinstance(rep.trial_id, str):
            continue
        elapsed = 0.0
        for e in store.epochs(rep.trial_id):
            elapsed += e["seconds_train"] or 0.0
            rows.append({"backbone": rep.backbone, "optimizer": rep.optimizer,
                         "flagged": flagged.get((rep.optimizer, rep.backbone), False), "epoch": e["epoch"],
                         "score": e["score"], "train_loss": e["train_loss"], "seconds": elapsed})
    return pd.DataFrame(rows, columns=["backbone", "optimizer", "flagged", "epoch", "score", "train_loss", "seconds"])


def time_to_accuracy(curves: pd.DataFrame, share: float = SHARE) -> pd.DataFrame:
    """Per pair: the backbone's target (``share`` x its best final score), and the first epoch and
    cumulative training seconds at which the pair's run reached it (NaN: never)."""
    finals = curves.sort_values("epoch").groupby(["backbone", "optimizer"], sort=False).tail(1)
    target = (finals.groupby("backbone")["score"].max() * share).rename("target")
    out = []
    for (backbone, optimizer), run in curves.groupby(["backbone", "optimizer"], sort=False):
        goal = float(target[backbone])
        hit = run[run["score"] >= goal].sort_values("epoch").head(1)
        out.append({"backbone": backbone, "optimizer": optimizer, "target": goal,
                    "epoch": float(hit["epoch"].iloc[0]) if len(hit) else math.nan,
                    "seconds": float(hit["seconds"].iloc[0]) if len(hit) else math.nan,
                    "flagged": bool(run["flagged"].iloc[0])})
    return pd.DataFrame(out, columns=["backbone", "optimizer", "target", "epoch", "seconds", "flagged"])


def curves_figure(curves: pd.DataFrame, column: str, label: str):
    """A panel per backbone (``column`` over epochs), a line per optimizer; flagged pairs dashed."""
    backbones = list(dict.fromkeys(curves["backbone"]))
    cols = min(4, len(backbones))
    rows = math.ceil(len(backbones) / cols)
    fig = new_figure(3.6 * cols, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    palette = matplotlib.colormaps["tab20"].colors
    colour = {o: palette[i % len(palette)] for i, o in enumerate(dict.fromkeys(curves["optimizer"]))}
    for ax, backbone in zip(axes, backbones):
        for optimizer, run in curves[curves["backbone"] == backbone].groupby("optimizer", sort=False):
            flagged = bool(run["flagged"].iloc[0])
            run = run.sort_values("epoch")
            ax.plot(run["epoch"], run[column], "--" if flagged else "-", linewidth=1.2, color=colour[optimizer],
                    label=f"{optimizer}{' (flagged)' if flagged else ''}")
        ax.set(title=backbone, xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[len(backbones):]:
        ax.set_visible(False)
    return fig


def curves_section(curves: pd.DataFrame) -> Section:
    if curves.empty:
        return Section(TITLE, (Text("No epoch rows in the store for this study's runs."),))
    tta = time_to_accuracy(curves)
    cells = pd.DataFrame({
        "pair": tta["backbone"] + " x " + tta["optimizer"], "target (%)": tta["target"].map(lambda v: f"{v:.1f}"),
        "epochs to target": tta["epoch"].map(lambda v: "-" if math.isnan(v) else f"{v:.0f}"),
        "training seconds to target": tta["seconds"].map(lambda v: "-" if math.isnan(v) else f"{v:,.0f}"),
    }).set_index("pair")
    marks = pd.DataFrame({c: ["fail" if f else "" for f in tta["flagged"]] for c in cells.columns}, index=cells.index)
    return Section(TITLE, (
        Plot(curves_figure(curves, "score", "test score (%)"), "curves_test",
             "Test score per epoch (top-1 for classification) of each pair's representative run; a panel per "
             "backbone, dashed: pairs the failure rule flags."),
        Plot(curves_figure(curves, "train_loss", "train loss"), "curves_loss",
             "Training loss per epoch of the same runs."),
        Table(cells, f"Time to accuracy: the first epoch, and the training seconds summed up to it, at which each "
                     f"pair's run reached {SHARE:.0%} of its backbone's best final score in this study (the "
                     "target); '-': never. Grey: flagged pairs.", marks=marks),
    ), how_to_read="Curves that rise late but end high show an optimizer that a shorter budget would have "
                   "judged a failure; curves that flatten early and low are the failures the rule flags.")
