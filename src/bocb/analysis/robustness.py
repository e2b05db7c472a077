"""Hyper-parameter robustness (method.md section 6).

For each optimizer: each pair's best (lr, weight_decay) becomes a pair of indices on that
optimizer's 5-point grids (``bocb.optim.get_optimizer_info(name).lr_grid()`` / ``.wd_grid()``); the
mode of each index over the optimizer's backbones is its "usual setting"; each pair's distance is
``|lr_idx - lr_mode| + |wd_idx - wd_mode|`` (Manhattan, in grid steps). Low distance = the usual
setting transfers across backbones.

Choices the paper does not state:

- Off-grid values map to the nearest grid point in log space (ties to the lower index), so values
  outside the grid are clipped to its ends: distances are capped at 2 x 4 = 8 and the pairs
  concerned are marked ``off_grid`` (more than 1 % from every grid value).
- A weight decay <= 1e-8 counts as 0 (the paper writes 1e-8 for "no decay", as
  ``bocb.optim.catalog`` does); 0 maps to the grid's 0 entry when the grid starts with 0, else to
  index 0 (the smallest decay).
- Mode ties go to the tied index with the smallest total distance of the optimizer's pairs to it
  (the one nearer the median), then to the lower index.

Inputs: the paper's Tables A4/A5 (``bocb.paper.best_hparams()``: one row per pair, lr and
weight_decay) or a study's runs (optimizer, backbone, top1, lr, weight_decay and optionally seed;
each pair's best setting is the one with the highest mean top-1 over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from bocb.analysis.results import best_tuned, load_results

ZERO_WD = 1e-8  # the paper's spelling of "no weight decay"
OFF_GRID_RTOL = 0.01


def grid_index(value: float, grid: Sequence[float], zero_below: float = 0.0) -> int:
    """Index of the grid point nearest to ``value`` in log space (see the module docstring).

    ``value <= zero_below`` counts as 0; 0 maps to the grid's 0 entry if it has one, else index 0.
    """
    if not grid:
        raise ValueError("grid_index needs a non-empty grid")
    if math.isnan(value) or value < 0:
        raise ValueError(f"a grid value must be >= 0, got {value}")
    if value <= zero_below:
        return 0  # either the grid's 0 entry (always first in bocb's grids) or its smallest value
    candidates = [(abs(math.log(value / g)), i) for i, g in enumerate(grid) if g > 0]
    return min(candidates)[1]


def _on_grid(value: float, grid: Sequence[float], zero_below: float) -> bool:
    if value <= zero_below:
        return 0.0 in grid
    return any(g > 0 and abs(value / g - 1) <= OFF_GRID_RTOL for g in grid)


def _mode(indices: np.ndarray) -> int:
    values, counts = np.unique(indices, return_counts=True)
    tied = values[counts == counts.max()]
    # Smallest total distance to the tied candidate, then the lower index.
    return int(min(tied, key=lambda m: (np.abs(indices - m).sum(), m)))


def best_settings(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: optimizer, backbone, lr, weight_decay (the best-tuned setting).

    A frame with ``top1`` is reduced with :func:`bocb.analysis.results.best_tuned`; a frame without
    it (the paper's tables) must already have one row per pair.
    """
    missing = [c for c in ("optimizer", "backbone", "lr", "weight_decay") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"hyper-parameters lack column(s) {', '.join(missing)}: required: optimizer, backbone, "
            "lr, weight_decay (and top1 when several settings per pair)"
        )
    if "top1" in frame.columns:
        runs = best_tuned(load_results(frame))
    else:
        runs = frame
        dup = runs.duplicated(["optimizer", "backbone"])
        if dup.any():
            row = runs.loc[dup].iloc[0]
            raise ValueError(
                f"pair {row['optimizer']}/{row['backbone']} has several settings and no top1 to "
                "choose the best: give one row per pair or a top1 column"
            )
    out = runs.drop_duplicates(["optimizer", "backbone"])[["optimizer", "backbone", "lr", "weight_decay"]]
    return out.astype({"lr": float, "weight_decay": float}).reset_index(drop=True)


def hparam_distances(frame: pd.DataFrame, points: int = 5) -> pd.DataFrame:
    """Long frame, one row per pair: optimizer, backbone, lr, weight_decay, lr_idx, wd_idx,
    lr_mode, wd_mode, distance, off_grid (see the module docstring).

    Optimizer names are looked up in the zoo (``bocb.optim``), so the paper's short names work; an
    unknown name raises the registry's one-line error listing the valid ones.
    """
    # Imported here: bocb.optim pulls in torch, which the rest of the analysis does not need.
    from bocb.optim import get_optimizer_info

    settings = best_settings(frame)
    parts = []
    for optimizer, rows in settings.groupby("optimizer", sort=False):
        info = get_optimizer_info(optimizer)
        lr_grid, wd_grid = info.lr_grid(points), info.wd_grid(points)
        rows = rows.copy()
        rows["lr_idx"] = [grid_index(v, lr_grid) for v in rows["lr"]]
        rows["wd_idx"] = [grid_index(v, wd_grid, ZERO_WD) for v in rows["weight_decay"]]
        rows["lr_mode"] = _mode(rows["lr_idx"].to_numpy())
        rows["wd_mode"] = _mode(rows["wd_idx"].to_numpy())
        rows["distance"] = (rows["lr_idx"] - rows["lr_mode"]).abs() + (rows["wd_idx"] - rows["wd_mode"]).abs()
        rows["off_grid"] = [
            not (_on_grid(lr, lr_grid, 0.0) and _on_grid(wd, wd_grid, ZERO_WD))
            for lr, wd in zip(rows["lr"], rows["weight_decay"], strict=True)
        ]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def distance_summary(
    distances: pd.DataFrame, by: Literal["optimizer", "backbone"] = "optimizer"
) -> pd.DataFrame:
    """Mean, median, max distance and pair count per optimizer or backbone, most robust first
    (lowest mean; ties keep input order)."""
    if by not in ("optimizer", "backbone"):
        raise ValueError(f"distance summary is by 'optimizer' or 'backbone', got {by!r}")
    grouped = distances.groupby(by, sort=False)["distance"]
    out = grouped.agg(mean="mean", median="median", max="max", pairs="size")
    return out.sort_values("mean", kind="stable")
