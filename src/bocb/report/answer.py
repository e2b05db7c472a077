"""The report's first section: the answer per backbone, in plain words, with how strong it is.

Per backbone: what to use (the best optimizer and, with seeds, every optimizer not separable from
it), what to avoid (the pairs the failure rule flags), a verdict on coupling, the strength of the
evidence, and what the paper says about the same optimizers where it has the backbone. A later
section (:func:`versus_section`) compares every pair the paper also has. Every word here is derived from the numbers of the sections
below it; choices:

- **Not separable from the best** (only with two or more seeds per pair): the difference of the
  two pair means is within 1.96 standard errors of that difference (each mean's standard error is
  its seeds' standard deviation / sqrt(seeds)). With one seed per pair no spread is measured, so
  only the best and the runner-up are named and the evidence says so.
- **Verdict:** "no optimizer fails" when nothing is flagged; otherwise "coupled" ("possibly
  coupled" when the evidence is weak), naming every
  optimizer category whose tried optimizers all fail (the paper's categories: (a) fixed learning
  rate with momentum, (b) adaptive with momentum, (c) estimated learning rate, (d) adaptive
  without momentum), else the share that fails.
- **Evidence:** "weak" for a toy budget (:mod:`bocb.report.budget`), or for one seed at fixed
  settings (nothing was tuned, so a failure may be a bad learning rate); "moderate" for tuned
  settings on one seed, fixed settings on several, or tuned settings at a reduced budget;
  "strong" for tuned settings on three or more seeds at the full budget.
- **The paper's column** compares orders, not numbers: its values are CIFAR-100 top-1 at the
  published size and budget, which a different dataset, scale or budget does not reproduce.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bocb.analysis.results import PAIR
from bocb.report.budget import Budget
from bocb.report.context import ReportAnalysis
from bocb.report.document import Section, Table, Text, fmt

PAPER_FAILS = ("fail", "severe")
NOTHING_TRAINED = 1.5  # a backbone whose best is under 1.5 x chance trained on nothing
Z_95 = 1.96
STRONG_SEEDS = 3


def answer_section(analysis: ReportAnalysis, tuning: str | None, budget: Budget | None,
                   paper: pd.DataFrame | None, evidence: str | None = None,
                   chance: dict[str, float] | None = None) -> Section:
    """The per-backbone answer. ``tuning``: the study's (fixed, grid, adaptive; None when unknown);
    ``paper``: :func:`bocb.paper.top1` (None: no comparison); ``evidence``: the strength in words
    when the caller knows better than the results (the paper's published means); ``chance``:
    backbone -> chance-level score (100 / classes), when known, so that a backbone on which nothing
    trained is called that rather than "no coupling"."""
    rows = {}
    stats = _pair_stats(analysis)
    flags = analysis.flags.set_index(PAIR)["flagged"]
    category = (analysis.frame.drop_duplicates("optimizer").set_index("optimizer")["category"]
                if "category" in analysis.frame.columns else pd.Series(dtype=str))
    evidence = evidence or _evidence(tuning, (int(stats["n"].min()), int(stats["n"].max())), budget)
    weak = evidence.startswith("weak")
    for backbone, group in stats.groupby("backbone", sort=False):
        group = group.sort_values("mean", ascending=False)
        flagged = [o for o in group["optimizer"] if flags.get((o, backbone), False)]
        verdict = _verdict(group, flagged, category, (chance or {}).get(backbone))
        if weak and flagged and verdict.startswith("coupled"):
            verdict = "possibly " + verdict + " (weak evidence: may be noise)"
        rows[backbone] = {
            "use": _use(group),
            "avoid" if not weak else "flagged": ", ".join(flagged) or "–",
            "verdict": verdict,
            **({"paper, same optimizers": _paper_view(paper, backbone, list(group["optimizer"]))} if paper is not None
               else {}),
        }
    cells = pd.DataFrame.from_dict(rows, orient="index")
    cells.index.name = "backbone"
    coupled = [b for b, r in rows.items() if r.get("avoid", r.get("flagged")) != "–"]
    headline = (f"{len(coupled)} of {len(rows)} backbones have optimizers that "
                + ("the failure rule flags" if weak else "fail with them")
                + (f" ({', '.join(coupled)})." if coupled else ".")
                + f" Evidence: {evidence}."
                + (" At this strength a flag is a lead to test (tune, add seeds, train longer), not a finding."
                   if weak and coupled else ""))
    caption = ("Per backbone: what to use, what the failure rule flags (rule "
               f"'{analysis.chosen.label}'), the verdict" + (", and the paper's view of the same optimizers."
                                                             if paper is not None else "."))
    blocks: list = [Text(headline), Table(cells, caption)]
    return Section(
        title="The answer",
        blocks=tuple(blocks),
        how_to_read=(
            "'use' names the best optimizer; with several seeds it also names every optimizer whose mean "
            "is not separable from the best (within 1.96 standard errors of the difference). 'avoid' lists "
            "the pairs the failure rule flags ('flagged' when the evidence is weak: then a flag may be "
            "noise). The paper's column, when there is one, names its best and its failures among the "
            "optimizers tried here, from its CIFAR-100 table: compare orders, not numbers, when the data, "
            "model size or budget differ (bocb bundles the paper's CIFAR-100 tables only, not its "
            "ImageNet-1K Table 2, so a study on ImageNet is compared with CIFAR-100 orders)."),
    )


def versus_section(analysis: ReportAnalysis, paper: pd.DataFrame) -> Section | None:
    """"Yours vs the paper": :func:`yours_vs_paper` as a section (None when the paper has no pair)."""
    table = yours_vs_paper(analysis, paper)
    if table is None:
        return None
    return Section(
        title="Yours vs the paper",
        blocks=(table,),
        how_to_read=(
            "The paper's numbers are CIFAR-100 top-1 of the published model sizes after 200-300 epochs, each "
            "the mean of 3 runs. Unless this study ran the same, compare the ranks and the failure marks, "
            "not the values."),
    )


def yours_vs_paper(analysis: ReportAnalysis, paper: pd.DataFrame) -> Table | None:
    """Per pair the paper also has: your top-1 and rank within the backbone, the paper's, and
    whether each flags it (None when the paper has none of the pairs)."""
    stats = _pair_stats(analysis)
    theirs = paper.set_index(PAIR)
    have = [(o, b) in theirs.index for o, b in zip(stats["optimizer"], stats["backbone"], strict=True)]
    shared = stats[have].copy()
    if shared.empty:
        return None
    shared["paper"] = [float(theirs.loc[(o, b), "top1"]) for o, b in zip(shared["optimizer"], shared["backbone"], strict=True)]
    shared["paper_fails"] = [theirs.loc[(o, b), "mark"] in PAPER_FAILS
                             for o, b in zip(shared["optimizer"], shared["backbone"], strict=True)]
    flags = analysis.flags.set_index(PAIR)["flagged"]
    by = shared.groupby("backbone", sort=False)
    shared["rank"] = by["mean"].rank(ascending=False, method="min")
    shared["paper_rank"] = by["paper"].rank(ascending=False, method="min")
    cells = pd.DataFrame({
        "backbone": shared["backbone"], "optimizer": shared["optimizer"],
        "yours": shared["mean"].map(lambda v: fmt(v, 2)), "paper": shared["paper"].map(lambda v: fmt(v, 2)),
        "rank here": shared["rank"].map(lambda v: str(int(v))),
        "rank in paper": shared["paper_rank"].map(lambda v: str(int(v))),
        "flagged here": [fmt(bool(flags.get((o, b), False))) for o, b in zip(shared["optimizer"], shared["backbone"], strict=True)],
        "paper marks it failed": shared["paper_fails"].map(fmt),
    }).set_index("backbone")
    # The best agrees when an optimizer is first in both (ties share first place).
    agree = int(((shared["rank"] == 1) & (shared["paper_rank"] == 1)).groupby(shared["backbone"]).any().sum())
    return Table(cells, f"Yours vs the paper, for the {len(shared)} pairs it also has. Ranks are within each "
                        f"backbone among these optimizers; the best agrees on {agree} of "
                        f"{shared['backbone'].nunique()} backbones.")


def _pair_stats(analysis: ReportAnalysis) -> pd.DataFrame:
    """Per pair of best-tuned runs: mean, standard error of the mean (NaN for one seed), seeds."""
    runs = analysis.results.runs
    out = runs.groupby(PAIR, sort=False)["top1"].agg(mean="mean", sd="std", n="size").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out


def _use(group: pd.DataFrame) -> str:
    best = group.iloc[0]
    text = f"{best['optimizer']} ({fmt(best['mean'], 2)})"
    rest = group.iloc[1:]
    if rest.empty:
        return text
    if best["n"] > 1 and rest["n"].gt(1).all():
        margin = Z_95 * np.sqrt(best["se"] ** 2 + rest["se"] ** 2)
        tied = rest[best["mean"] - rest["mean"] <= margin]
        return text + (f"; not separable: {', '.join(tied['optimizer'])}" if len(tied) else "; ahead of the rest")
    runner = rest.iloc[0]
    return text + f"; next {runner['optimizer']} ({fmt(runner['mean'] - best['mean'], 2)})"


def _verdict(group: pd.DataFrame, flagged: list[str], category: pd.Series, chance: float | None) -> str:
    best = float(group["mean"].iloc[0])
    if chance is not None and best < NOTHING_TRAINED * chance:
        return f"nothing trained: the best ({fmt(best, 1)}) is near chance ({fmt(chance, 1)})"
    if len(group) < 2:
        return "one optimizer tried: coupling cannot be judged"
    worst_gap = best - float(group["mean"].iloc[-1])
    if not flagged:
        return f"no optimizer fails: the worst is {fmt(worst_gap, 1)} points below the best"
    tried = list(group["optimizer"])
    whole = []
    for cat in sorted({category.get(o, "") for o in tried} - {""}):
        members = [o for o in tried if category.get(o) == cat]
        if len(members) >= 2 and all(o in flagged for o in members):  # one optimizer is not a category
            whole.append(f"({cat})")
    if whole and len(whole) < len({category.get(o) for o in tried}):
        return (f"coupled: every category {' and '.join(whole)} optimizer tried fails; "
                f"{len(flagged)} of {len(tried)} fail")
    return f"coupled: {len(flagged)} of {len(tried)} optimizers fail"


def _evidence(tuning: str | None, seed_range: tuple[int, int], budget: Budget | None) -> str:
    tuned = tuning in ("grid", "adaptive")
    how = {"grid": "grid-tuned", "adaptive": "adaptively tuned", "fixed": "fixed settings"}.get(tuning or "",
                                                                                                  "settings as given")
    seeds, most = seed_range  # the weakest pair decides the strength; the span is stated
    span = str(seeds) if seeds == most else f"{seeds}-{most}"
    said = f"{how}, {span} seed{'s' if most != 1 else ''} per pair"
    if budget is not None and budget.toy:
        return f"weak ({said}, toy budget)"
    if budget is not None and budget.level == "reduced":
        return f"{'moderate' if tuned else 'weak'} ({said}, reduced budget)"
    if not tuned and seeds < 2:
        return f"weak ({said}: a failure may be a learning rate that was never tuned)"
    if tuned and seeds >= STRONG_SEEDS:
        return f"strong ({said})"
    return f"moderate ({said})"


def _paper_view(paper: pd.DataFrame | None, backbone: str, optimizers: list[str]) -> str:
    if paper is None:
        return "–"
    theirs = paper[(paper["backbone"] == backbone) & paper["optimizer"].isin(optimizers)]
    if theirs.empty:
        return "not in the paper"
    best = theirs.loc[theirs["top1"].idxmax(), "optimizer"]
    fails = theirs.loc[theirs["mark"].isin(PAPER_FAILS), "optimizer"].tolist()
    return f"best {best}; fails: {', '.join(fails) or 'none'}"
