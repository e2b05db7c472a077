"""Result frames: the one input format of the analysis, its validation, and the pair-mean table.

Every analysis function takes a *long* frame with one row per run: ``optimizer``, ``backbone``,
``top1`` and optionally ``seed``, ``lr``, ``weight_decay``, ``category`` (other columns are kept
and ignored), like the paper's ``paper_cifar100_top1.csv`` or a study's trial table.

Three reductions, in this order, turn runs into the backbone x optimizer table the statistics use:

1. :func:`best_tuned` — when ``lr``/``weight_decay`` are present and a pair was run at several
   settings, keep only the setting with the highest mean top-1 over its seeds (the paper's "each
   pair's best-tuned top-1"). Ties go to the setting listed first. Two refinements:
   with a ``val_top1`` column (a study that held out training images, ``selection = "holdout"``)
   settings are chosen on it and ``top1`` (test) is reported for the choice; with a ``status``
   column, a setting where some run ``diverged`` is chosen only when every setting of the pair
   diverged somewhere, so a diverged run never wins tuning over a finished one.
2. :func:`pair_means` — mean top-1 over the seeds of each pair (at its best setting).
3. :func:`wide` — the pair means as a backbone (rows) x optimizer (columns) table, in the order of
   first appearance in the input, NaN where a pair was not run.

Every function here (and every analysis function that takes a result frame) also takes a
:class:`Results`: the frame validated once with these reductions computed once, on first use. A
caller that runs many statistics on one frame (the report) builds one and hands it to each, so the
frame is checked and each pair's best setting chosen once, not once per statistic.

Replicates without a ``seed`` column (a pair appearing several times at one setting) are taken as
unnamed seeds and numbered 0, 1, ... in input order, so they are kept, not collapsed. Rows equal in
every column are refused instead: a pasted-twice row is far likelier than two runs agreeing to the
last digit, and counting it as a seed would shrink every confidence interval. Rows with an empty
name or a non-finite ``top1`` are refused too (an ``inf`` would switch off flagging for its
backbone, an empty name would be dropped by grouping).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("optimizer", "backbone", "top1")
OPTIONAL = ("seed", "lr", "weight_decay", "category", "status", "val_top1")
PAIR = ["optimizer", "backbone"]
# With a status column (``bocb export``'s rows), rows with one of bocb's other statuses (pending,
# paused, running, failed, skipped) have no score and are left out (counted in
# ``frame.attrs["left_out"]``); any other word (a user's own "ok") is kept as a result.
NOT_RESULTS = ("pending", "running", "paused", "failed", "skipped")


def load_results(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read (``.csv`` or ``.parquet``) or copy a result frame and check it.

    Returns a new frame with every input row and column, ``top1`` as float, and a ``seed`` column
    whenever some pair has replicate rows (numbered in input order if the input had none).
    Raises ``ValueError`` (one line) for missing columns, non-numeric or missing ``top1``, or two
    rows claiming the same pair, setting and seed. With a ``status`` column, rows that are not
    results (see :data:`NOT_RESULTS`) are left out first, and counted in ``attrs["left_out"]``.
    """
    if isinstance(source, pd.DataFrame):
        frame = source.copy()
    else:
        path = Path(source)
        if path.suffix not in (".csv", ".parquet"):
            raise ValueError(f"cannot read results from {str(path)!r}: valid suffixes: .csv, .parquet")
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except FileNotFoundError:
            raise ValueError(f"no results file at {path}") from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # damaged Parquet, unparsable CSV
            raise ValueError(f"cannot read results from {path}: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"results lack column(s) {', '.join(missing)}: required: {', '.join(REQUIRED)}"
            f" (optional: {', '.join(OPTIONAL)})"
        )
    left_out = 0
    if "status" in frame.columns:
        result = ~frame["status"].isin(NOT_RESULTS)
        left_out = int((~result).sum())
        frame = frame.loc[result].reset_index(drop=True)
        if left_out and not len(frame):
            raise ValueError(f"none of the {left_out} rows is a result (they are {', '.join(NOT_RESULTS)}): "
                             "run the study first")
    if not len(frame):
        raise ValueError("results are empty: need at least one row of optimizer, backbone, top1")
    top1 = pd.to_numeric(frame["top1"], errors="coerce")
    bad = top1.isna()
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise ValueError(
            f"top1 is missing or not a number in {int(bad.sum())} row(s), first: "
            f"{row['optimizer']}/{row['backbone']} = {row['top1']!r}; record a diverged run's "
            "measured accuracy or drop the row"
        )
    infinite = ~np.isfinite(top1)
    if infinite.any():
        row = frame.loc[infinite].iloc[0]
        raise ValueError(f"top1 is infinite in {int(infinite.sum())} row(s), first: "
                         f"{row['optimizer']}/{row['backbone']} = {top1[infinite].iloc[0]}: accuracies are 0..100")
    for column in PAIR:
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise ValueError(f"{column} is empty in {int(empty.sum())} row(s), first at row "
                             f"{int(empty.to_numpy().argmax()) + 1}: every run needs its {column}'s name")
    frame["top1"] = top1.astype(float)
    frame["optimizer"] = frame["optimizer"].astype(str)
    frame["backbone"] = frame["backbone"].astype(str)
    setting = PAIR + [c for c in ("lr", "weight_decay") if c in frame.columns]
    if "seed" not in frame.columns and frame.duplicated().any():
        row = frame.loc[frame.duplicated()].iloc[0]
        raise ValueError(f"row {row['optimizer']}/{row['backbone']} top1 {row['top1']} appears twice, identical "
                         f"in every column: remove the copy, or add a seed column if they are two runs")
    if "seed" not in frame.columns and frame.duplicated(setting).any():
        frame["seed"] = frame.groupby(setting, sort=False).cumcount()
    if "seed" in frame.columns:
        dup = frame.duplicated(setting + ["seed"])
        if dup.any():
            row = frame.loc[dup].iloc[0]
            raise ValueError(
                f"duplicate run {row['optimizer']}/{row['backbone']} seed {row['seed']}: "
                f"each ({', '.join(setting)}, seed) must appear once"
            )
    frame = frame.reset_index(drop=True)
    frame.attrs["left_out"] = left_out
    return frame


class Results:
    """A result frame checked once by :func:`load_results`, with its reductions cached.

    ``frame``: the validated frame (every input row and column). ``runs``: :func:`best_tuned`'s
    runs; ``means``: :func:`pair_means`'s table; ``table``: :func:`wide`'s; ``replicates``:
    :func:`has_replicates`. Each is computed on first use and then shared by every statistic the
    object is handed to, so treat them as read-only: the public functions :func:`pair_means` and
    :func:`wide` return copies. Build it from a frame or a ``.csv``/``.parquet`` path; a
    ``Results`` given where a frame is expected is used as it is (:meth:`of`).
    """

    def __init__(self, source: str | Path | pd.DataFrame) -> None:
        self.frame = load_results(source)

    @classmethod
    def of(cls, source: Results | str | Path | pd.DataFrame) -> Results:
        """``source`` itself when it is a ``Results``, else a new one (validating the frame)."""
        return source if isinstance(source, Results) else cls(source)

    @classmethod
    def _reduced(cls, frame: pd.DataFrame, means: pd.DataFrame, table: pd.DataFrame) -> Results:
        # Built from already-reduced values: skips validation and best_tuned (see pair_level).
        out = cls.__new__(cls)
        out.frame = frame
        out.__dict__.update(runs=frame, means=means, table=table, replicates=False)
        return out

    @cached_property
    def runs(self) -> pd.DataFrame:
        return best_tuned(self.frame)

    @cached_property
    def means(self) -> pd.DataFrame:
        grouped = self.runs.groupby(PAIR, sort=False)
        out = grouped["top1"].agg(top1="mean", n_seeds="size").reset_index()
        if "category" in self.runs.columns:
            out["category"] = grouped["category"].first().to_numpy()
        return out

    @cached_property
    def table(self) -> pd.DataFrame:
        means = self.means
        table = means.pivot(index="backbone", columns="optimizer", values="top1")
        table = table.loc[list(dict.fromkeys(means["backbone"])), list(dict.fromkeys(means["optimizer"]))]
        table.index.name, table.columns.name = "backbone", "optimizer"
        return table.astype(float)

    @cached_property
    def replicates(self) -> bool:
        return bool((self.runs.groupby(PAIR, sort=False).size() > 1).any())

    def pair_level(self) -> Results:
        """The pair means as results of their own: one run per pair, no ``lr``/``weight_decay``
        columns, so a statistic given them cannot read the runs' settings as hyper-parameters.
        Shares this object's table; nothing is validated or tuned again."""
        frame = self.means[["optimizer", "backbone", "top1"]]
        return Results._reduced(frame, frame.assign(n_seeds=1), self.table)


def has_replicates(frame: pd.DataFrame | Results) -> bool:
    """True when some pair has two or more seeds at its best-tuned setting."""
    return Results.of(frame).replicates


def selection_rule(frame: pd.DataFrame) -> str:
    """How :func:`best_tuned` picks a pair's setting for this frame, in words for the report.

    ``held-out seed``: when every (pair, setting) has two or more seeds, the setting is chosen on
    each pair's lowest seed and the statistics use the other seeds only, so the numbers reported
    are not the numbers the choice was made on. ``same numbers``: with one seed (or one setting),
    the choice and the report share their numbers, which is optimistic when several settings
    were tried (the paper's practice); the report says so.
    """
    knobs = [c for c in ("lr", "weight_decay") if c in frame.columns]
    if not knobs or "seed" not in frame.columns:
        return "same numbers"
    sizes = frame.groupby(PAIR + knobs, sort=False, dropna=False)["seed"].nunique()
    tuned = frame.groupby(PAIR, sort=False).apply(lambda g: len(g.drop_duplicates(knobs)) > 1, include_groups=False)
    return "held-out seed" if tuned.any() and (sizes >= 2).all() else "same numbers"


def best_tuned(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of each pair's best (lr, weight_decay) setting.

    Best = highest mean top-1 over the selection seeds (see :func:`selection_rule`): with a held-out
    seed, the lowest seed chooses and only the other seeds are returned; otherwise all seeds choose
    and are returned. Without ``lr``/``weight_decay`` columns every row is kept. Expects a frame
    that passed :func:`load_results`.
    """
    knobs = [c for c in ("lr", "weight_decay") if c in frame.columns]
    if not knobs:
        return frame
    setting = PAIR + knobs
    held_out = selection_rule(frame) == "held-out seed"
    chooser = frame
    if held_out:
        first = frame.groupby(PAIR, sort=False)["seed"].transform("min")
        chooser = frame[frame["seed"] == first]
        frame = frame[frame["seed"] != first]
    score = selection_column(chooser)
    # dropna=False: a pair run without a weight decay (NaN) is still a setting.
    grouped = chooser.groupby(setting, sort=False, dropna=False)
    means = grouped[score].mean().rename("score").reset_index()
    if "status" in chooser.columns:
        means["clean"] = grouped["status"].agg(lambda s: not s.eq("diverged").any()).to_numpy()
        # Rank clean settings above any with a diverged run: score + a large offset.
        means["score"] = means["score"] + means["clean"].map({True: 1e6, False: 0.0})
    best = means.loc[means.groupby(PAIR, sort=False)["score"].idxmax(), setting]
    return frame.merge(best, on=setting, how="inner")


def selection_column(frame: pd.DataFrame) -> str:
    """The column settings are chosen on: ``val_top1`` when every run has one (a hold-out study),
    else ``top1`` (the test set, the paper's way)."""
    if "val_top1" in frame.columns and len(frame) and frame["val_top1"].notna().all():
        return "val_top1"
    return "top1"


def pair_means(frame: pd.DataFrame | str | Path | Results) -> pd.DataFrame:
    """One row per pair: optimizer, backbone, top1 (mean over seeds at the best setting), n_seeds.

    ``category`` is carried along when present (it is a property of the optimizer).
    """
    return Results.of(frame).means.copy()


def wide(frame: pd.DataFrame | str | Path | Results) -> pd.DataFrame:
    """Pair means as backbone (rows) x optimizer (columns), input order, NaN for missing pairs."""
    return Results.of(frame).table.copy()


def to_long(table: pd.DataFrame, value: str = "top1") -> pd.DataFrame:
    """Inverse of :func:`wide`: a backbone x optimizer table as optimizer, backbone, ``value`` rows.

    Rows come optimizer by optimizer (the paper's row order), NaN cells dropped.
    """
    long = table.T.stack().rename(value).reset_index()
    long.columns = ["optimizer", "backbone", value]
    return long.dropna(subset=[value]).reset_index(drop=True)
