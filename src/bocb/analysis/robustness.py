"""Hyper-parameter robustness: how far each pair's best setting lies from its optimizer's usual one.

The paper (Sec. 3.2, Fig. 5) asks whether an optimizer's usual learning rate and weight decay
transfer across backbones. Here, in real units and on no grid:

- Each pair's best (lr, weight_decay) is taken as chosen (the paper's Tables A4/A5, or a study's
  best-tuned setting); nothing is snapped to a grid, so settings from any tuner (grid, random,
  Bayesian) are measured the same way.
- The optimizer's usual setting is the **mode over the values actually chosen** across its
  backbones, separately for lr and for weight decay. Values equal to 9 significant digits count as
  one (float noise from CSVs). Ties between equally frequent values go to the most central one
  (the smallest total distance, in decades, to all the optimizer's chosen values), then to the
  smaller value.
- Distance of a pair = ``|log10 lr - log10 mode_lr| + d_wd`` in **decades** (a factor of 10 is 1).
  ``d_wd`` is ``|log10 wd - log10 mode_wd|`` when both are non-zero.
- **No weight decay is its own level.** A weight decay ``<= ZERO_WD`` (1e-8, the paper's spelling
  of "no decay") is the level "0"; 0 is at distance 0 from 0 and at :data:`ZERO_WD_DISTANCE`
  (1 decade) from any non-zero value. Why not a floor value such as 1e-6: the distance would then
  depend on the floor (0 vs 0.05 would be 4.7 decades with a 1e-6 floor, 6.7 with 1e-8), i.e. on
  an arbitrary number rather than on the choices made. Switching decay off is one decision; it is
  counted like a tenfold change of one knob, and the constant is a parameter
  (``zero_wd_distance``) so a reader can check that a conclusion does not hang on it.

Summaries (:func:`distance_summary`) give mean, median and max per optimizer or backbone, ordered
by the **median** distance (the paper reads robustness off box plots), ties by the mean.

Inputs: the paper's Tables A4/A5 (``bocb.paper.best_hparams()``: one row per pair, lr and
weight_decay) or a study's runs (optimizer, backbone, top1, lr, weight_decay and optionally seed;
each pair's best setting is the one with the highest mean top-1 over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pandas as pd

from bocb.analysis.ranks import kendall_tau_b, spearman_rho
from bocb.analysis.results import Results

ZERO_WD = 1e-8  # the paper's spelling of "no weight decay": this and below is the level "0"
ZERO_WD_DISTANCE = 1.0  # decades between "no decay" and any non-zero decay (see the module doc)
SIGNIFICANT = 9  # values equal to this many significant digits are one value for the mode


def _key(value: float) -> float:
    """A chosen value rounded to :data:`SIGNIFICANT` digits (0 stays 0)."""
    return float(f"{value:.{SIGNIFICANT - 1}e}") if value else 0.0


def level_distance(a: float, b: float, zero_below: float = 0.0,
                   zero_distance: float = ZERO_WD_DISTANCE) -> float:
    """Distance in decades between two settings of one knob.

    ``|log10 a - log10 b|`` for two values above ``zero_below``; values ``<= zero_below`` are the
    level "0": 0 between two zeros, ``zero_distance`` between a zero and a non-zero value. With
    ``zero_below=0`` (the learning rate) a zero or negative value is an error.
    """
    for v in (a, b):
        if math.isnan(v) or v < 0:
            raise ValueError(f"a hyper-parameter value must be >= 0, got {v}")
    za, zb = a <= zero_below, b <= zero_below
    if za or zb:
        if zero_below <= 0:
            raise ValueError(f"a learning rate must be > 0 to be measured in decades, got {min(a, b)}")
        return 0.0 if za and zb else float(zero_distance)
    return abs(math.log10(a) - math.log10(b))


def usual_value(values: Sequence[float], zero_below: float = 0.0,
                zero_distance: float = ZERO_WD_DISTANCE) -> float:
    """The mode of the chosen ``values`` (see the module doc for equality and ties).

    Values ``<= zero_below`` are one level, returned as 0.0.
    """
    keys = [0.0 if v <= zero_below else _key(float(v)) for v in values]
    if not keys:
        raise ValueError("usual_value needs at least one value")
    counts = pd.Series(keys).value_counts(sort=False)
    tied = [float(k) for k in counts.index[counts == counts.max()]]

    def spread(m: float) -> float:
        return sum(level_distance(v, m, zero_below, zero_distance) for v in keys)

    return min(tied, key=lambda m: (spread(m), m))


def best_settings(frame: pd.DataFrame | Results) -> pd.DataFrame:
    """One row per pair: optimizer, backbone, lr, weight_decay (the best-tuned setting).

    A frame with ``top1`` is reduced with :func:`bocb.analysis.results.best_tuned`; a frame without
    it (the paper's tables) must already have one row per pair.
    """
    columns = frame.frame.columns if isinstance(frame, Results) else frame.columns
    missing = [c for c in ("optimizer", "backbone", "lr", "weight_decay") if c not in columns]
    if missing:
        raise ValueError(
            f"hyper-parameters lack column(s) {', '.join(missing)}: required: optimizer, backbone, "
            "lr, weight_decay (and top1 when several settings per pair)"
        )
    if "top1" in columns:
        runs = Results.of(frame).runs
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
    out = out.astype({"lr": float, "weight_decay": float}).fillna({"weight_decay": 0.0})
    return out.reset_index(drop=True)


def hparam_distances(frame: pd.DataFrame | Results, zero_wd_distance: float = ZERO_WD_DISTANCE) -> pd.DataFrame:
    """Long frame, one row per pair: optimizer, backbone, lr, weight_decay, lr_mode, wd_mode,
    lr_distance, wd_distance, distance (decades; see the module doc).

    ``wd_mode`` is 0.0 when "no decay" is the optimizer's usual level. Any optimizer name works:
    no grid or registry is consulted.
    """
    settings = best_settings(frame)
    if not (settings["lr"] > 0).all():
        row = settings.loc[~(settings["lr"] > 0)].iloc[0]
        raise ValueError(f"pair {row['optimizer']}/{row['backbone']} has lr {row['lr']}: a learning rate must be > 0")
    parts = []
    for _, rows in settings.groupby("optimizer", sort=False):
        rows = rows.copy()
        lr_mode = usual_value(rows["lr"].tolist())
        wd_mode = usual_value(rows["weight_decay"].tolist(), ZERO_WD, zero_wd_distance)
        rows["lr_mode"], rows["wd_mode"] = lr_mode, wd_mode
        rows["lr_distance"] = [level_distance(v, lr_mode) for v in rows["lr"]]
        rows["wd_distance"] = [level_distance(v, wd_mode, ZERO_WD, zero_wd_distance) for v in rows["weight_decay"]]
        rows["distance"] = rows["lr_distance"] + rows["wd_distance"]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def distance_summary(
    distances: pd.DataFrame, by: Literal["optimizer", "backbone"] = "optimizer"
) -> pd.DataFrame:
    """Median, mean, max distance and pair count per optimizer or backbone, most robust first
    (lowest median, then lowest mean; further ties keep input order)."""
    if by not in ("optimizer", "backbone"):
        raise ValueError(f"distance summary is by 'optimizer' or 'backbone', got {by!r}")
    grouped = distances.groupby(by, sort=False)["distance"]
    out = grouped.agg(median="median", mean="mean", max="max", pairs="size")
    return out.sort_values(["median", "mean"], kind="stable")


def reading_agreement(summary: pd.DataFrame, robust: Sequence[str], least: Sequence[str],
                      statistic: str = "median") -> dict[str, float | int | list[int]]:
    """How a robustness summary agrees with a coarse published reading (most / least robust names).

    The reading becomes a three-level order (``robust`` = 1, unnamed = 2, ``least`` = 3) over the
    summary's names; returned: Spearman rho and Kendall tau-b (ties corrected) between it and
    ``summary[statistic]``, the 1-based positions of the named ones in the summary's order, and
    ``n``. Names absent from the summary are ignored.
    """
    names = list(summary.index)
    level = [1 if n in robust else 3 if n in least else 2 for n in names]
    values = summary[statistic].to_numpy(float)
    return {
        "n": len(names),
        "spearman": spearman_rho(values, level),
        "kendall": kendall_tau_b(values, level),
        "robust_positions": [names.index(n) + 1 for n in robust if n in names],
        "least_positions": [names.index(n) + 1 for n in least if n in names],
    }


def usual_settings(distances: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: its usual lr and weight decay (the modes), from :func:`hparam_distances`."""
    return distances.drop_duplicates("optimizer").set_index("optimizer")[["lr_mode", "wd_mode"]]


__all__ = [
    "ZERO_WD", "ZERO_WD_DISTANCE", "best_settings", "distance_summary", "hparam_distances",
    "level_distance", "reading_agreement", "usual_settings", "usual_value",
]
