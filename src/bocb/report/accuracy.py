"""Sections on accuracy as the paper reports it (its Table 1 and Eq. 1): the failure rule, Table 1
and the per-backbone summary."""

from __future__ import annotations

import pandas as pd

from bocb.analysis import RULES, backbone_summary, compare_with_marks, flag, wide
from bocb.analysis.failure import QUANTILE_METHOD
from bocb.report.context import ReportAnalysis
from bocb.report.plots import heatmap_table, violins_per_backbone
from bocb.analysis.summary import TOP_K
from bocb.report.document import Plot, Section, Table, Text, fmt, percent

PAPER_MARKS = ("fail", "severe")  # the grey cells of bocb.paper.top1()


def _most(counts: pd.Series, n: int = 5) -> str:
    top = counts[counts > 0].sort_values(ascending=False, kind="stable").head(n)
    return ", ".join(f"{name} ({int(c)})" for name, c in top.items()) or "none"


def rule_section(analysis: ReportAnalysis) -> Section:
    """The rule in words and parameters, how many cells it flags and where, and how the other
    shipped rules and (when present) the results' own ``mark`` column compare."""
    results, chosen, flags = analysis.frame, analysis.chosen, analysis.flags
    params = pd.DataFrame(
        {"value": [chosen.name, chosen.anchor, chosen.spread, fmt(chosen.multiplier, 2),
                   fmt(chosen.floor, 2), chosen.combine, f"numpy '{QUANTILE_METHOD}'"]},
        index=pd.Index(["name", "anchor", "spread", "multiplier", "floor (gamma)", "combine",
                        "quantiles"], name="parameter"),
    )
    n, hit = len(flags), int(flags["flagged"].sum())
    by_backbone = flags.groupby("backbone", sort=False)["flagged"].sum()
    by_optimizer = flags.groupby("optimizer", sort=False)["flagged"].sum()
    text = [
        Text(chosen.describe()),
        Table(params, "The rule's parameters."),
        Text(
            f"It flags {hit} of {n} pairs ({percent(hit / n)}) on {int((by_backbone > 0).sum())} of "
            f"{len(by_backbone)} backbones. Most flagged optimizers: {_most(by_optimizer)}. Most "
            f"flagged backbones: {_most(by_backbone)}."
        ),
    ]
    others = [f"'{r.label}' flags {int(flag(analysis.results, r)['flagged'].sum())}"
              for name, r in RULES.items() if r != chosen]
    if others:
        text.append(Text("For comparison, on the same results the shipped rule " + "; rule ".join(others)
                         + " (see 'How to read this')."))
    if "mark" in results.columns and results["mark"].isin(PAPER_MARKS).any():
        agree = compare_with_marks(flags, results.drop_duplicates(["optimizer", "backbone"]), PAPER_MARKS)
        text.append(Text(
            f"Against the cells the source marked as failures ({agree['marked']}): {agree['hits']} "
            f"flagged here too, {agree['misses']} missed, {agree['false_alarms']} flagged here only."
        ))
    per = flags.groupby("backbone", sort=False).agg(
        threshold=("threshold", "first"), flagged=("flagged", "sum"))
    names = flags[flags["flagged"]].groupby("backbone", sort=False)["optimizer"].agg(", ".join)
    cells = pd.DataFrame({
        "threshold (top-1)": per["threshold"].map(lambda v: fmt(v, 2)),
        "flagged": per["flagged"].map(lambda v: str(int(v))),
        "flagged optimizers": names.reindex(per.index).fillna("–"),
    })
    text.append(Table(cells, "Per backbone: the cut-off below which a result is flagged, and what fell below it."))
    return Section(
        title="Failure rule",
        blocks=tuple(text),
        how_to_read=(
            "A flagged pair is one whose accuracy falls clearly below what that backbone usually "
            "reaches with other optimizers: a failure of the pairing, not a small difference. "
            "'paper' is Eq. (1) taken literally: its min() caps the margin at gamma, so anything more "
            "than gamma points below the backbone's best is flagged. 'fitted' is the rule that "
            "reproduces the paper's grey cells."
        ),
        gap="The paper's Eq. (1) does not match the cells it greyed out; the rule used here is stated in full.",
    )


def table_section(analysis: ReportAnalysis) -> Section:
    """Table 1: the heat map and the same numbers as a marked table (optimizers x backbones)."""
    results, chosen, flags = analysis.frame, analysis.chosen, analysis.flags
    table = wide(analysis.results).T  # optimizer x backbone, the paper's orientation
    flagged = flags.pivot(index="optimizer", columns="backbone", values="flagged")
    flagged = flagged.reindex(index=table.index, columns=table.columns).fillna(False).astype(bool)
    order = table.rank(axis=0, ascending=False, method="first")
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    marks = marks.mask(order <= TOP_K, "top").mask(order == 1, "best").mask(flagged, "fail")
    cells = table.map(lambda v: fmt(v, 2))
    if "category" in results.columns:
        category = results.drop_duplicates("optimizer").set_index("optimizer")["category"]
        cells.insert(0, "category", category.reindex(table.index).fillna("").astype(str))
        marks.insert(0, "category", "")
    cells.index.name = "optimizer"
    figure = heatmap_table(analysis.results, flags, TOP_K, rule_name=chosen.label)
    return Section(
        title="Table 1: top-1 per backbone and optimizer",
        blocks=(
            Plot(figure, "table1_heatmap",
                 f"Top-1 (%) of each pair. Colour: top-1 scaled within each backbone (column) between its "
                 f"worst and best unflagged result. Bold and outlined: the backbone's top {TOP_K}; thick "
                 f"outline: its best. Grey, hatched: flagged by rule '{chosen.label}'."),
            Table(cells, f"The same numbers. Bold: top {TOP_K} of the backbone; outlined (★ in Markdown): "
                         f"its best; grey hatched (✗ in Markdown): flagged by rule '{chosen.label}'.", marks),
        ),
        how_to_read=(
            "Read down a column to see which optimizers suit a backbone; read along a row to see "
            "whether an optimizer is good everywhere. Colours compare optimizers within a backbone "
            "only, never across backbones. A row that is light or grey everywhere is a weak "
            "optimizer, not coupling; coupling shows as a row that is dark for some backbones and "
            "grey for others."
        ),
        gap="The paper reports one accuracy per pair without its epoch or seed spread; see 'The data'.",
    )


def summary_section(analysis: ReportAnalysis) -> Section:
    """Per backbone: mean, std, range after dropping the worst optimizer, and the top 4."""
    results, chosen = analysis.results, analysis.chosen
    summary = backbone_summary(results).set_index("backbone")
    cells = pd.DataFrame({
        "optimizers kept": summary["n"].map(str),
        "mean": summary["mean"].map(lambda v: fmt(v, 2)),
        "std": summary["std"].map(lambda v: fmt(v, 2)),
        "range": summary["range"].map(lambda v: fmt(v, 1)),
        "dropped (worst)": summary["worst"],
        f"top {TOP_K}, best first": summary["top4"].map(", ".join),
    })
    return Section(
        title="Per-backbone summary",
        blocks=(
            Table(cells, "Mean, standard deviation (ddof = 1) and range (max - min) of top-1 over "
                         "optimizers, after dropping each backbone's single worst optimizer."),
            Plot(violins_per_backbone(results, chosen), "violins_per_backbone",
                 f"Each backbone's top-1 over optimizers: a violin (density), one dot per optimizer, the "
                 f"median as a bar, and red crosses for pairs flagged by rule '{chosen.label}'."),
        ),
        how_to_read=(
            "A small std and range means the backbone trains well with almost any optimizer; a large "
            "one means the choice of optimizer matters for it. Dropping the worst result keeps one "
            "collapse from dominating these numbers; the violins still show it."
        ),
        gap=(
            "The paper's printed mean and std cannot be reproduced from its own cells; the values "
            "here are computed as stated in the caption."
        ),
    )
