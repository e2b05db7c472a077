"""The BOCB paper's published numbers, shipped as package data.

Source: Li et al., "Unveiling the Backbone-Optimizer Coupling Bias in Visual Representation
Learning", arXiv 2410.06373v1, taken from the paper's LaTeX tables (see ``data/README.md``).

- :func:`top1` — Table 1: CIFAR-100 top-1 of 20 backbones x 20 optimizers with the paper's marks.
- :func:`best_hparams` — Tables A4/A5: the chosen lr and weight decay per optimizer x backbone
  (from an earlier 16-backbone version of the study; its backbone spellings are mapped to Table 1's
  with :data:`HPARAM_BACKBONE_ALIASES`).
- :func:`summary` — Table 1's mean/std/range rows per backbone, as printed.
- :func:`table1` — Table 1 as a wide optimizer x backbone frame, in the paper's order.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import pandas as pd

# Tables A4/A5 use older spellings; these map them to the Table 1 short names.
HPARAM_BACKBONE_ALIASES = {
    "Mob-V2": "MobV2",
    "CX-T": "CNX-T",
    "IF-S12": "IF-12",
    "PF-S12": "PFV2-12",
    "CF-S12": "CF-12",
    "AF-S12": "AF-12",
}

# Table A4/A5 say "Novograd"; Table 1 says "NovoGrad".
HPARAM_OPTIMIZER_ALIASES = {"Novograd": "NovoGrad"}

# The paper's overall optimizer ranking (Table 4), best first.
RANKING = (
    "LAMB", "AdamW", "Adan", "AdamP", "AdaBelief", "AdaFactor", "Adam", "NAdam", "Sophia", "LION",
    "RAdam", "Adamax", "SGDP", "RMSProp", "NovoGrad", "SGD-M", "AdaBound", "AdaDelta", "AdaGrad",
    "LARS",
)

# The paper's reading of its hyper-parameter robustness box plots (Fig. 5): the optimizers it names
# as most robust and as least robust. A coarse reading, not an ordering of all 20.
FIG5_ROBUST = ("AdamW", "LAMB", "RMSProp")
FIG5_LEAST = ("SGDP", "AdaBound", "LARS")


def _read(name: str) -> pd.DataFrame:
    with resources.files(__package__).joinpath("data", name).open("rb") as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""])


@cache
def _top1() -> pd.DataFrame:
    df = _read("paper_cifar100_top1.csv")
    df["mark"] = df["mark"].fillna("")
    return df


def top1() -> pd.DataFrame:
    """Long table: optimizer, category, backbone, top1, mark (best/top4/fail/severe/'')."""
    return _top1().copy()


def best_hparams() -> pd.DataFrame:
    """Long table: optimizer, backbone (Table 1 spelling where one exists), lr, weight_decay."""
    df = _read("paper_cifar100_best_hparams.csv")
    df["backbone"] = df["backbone"].replace(HPARAM_BACKBONE_ALIASES)
    df["optimizer"] = df["optimizer"].replace(HPARAM_OPTIMIZER_ALIASES)
    return df


def summary() -> pd.DataFrame:
    """backbone, mean, std, range: Table 1's bottom rows, as printed in the paper."""
    return _read("paper_cifar100_summary.csv")


def backbone_order() -> list[str]:
    """Table 1's column order."""
    return list(dict.fromkeys(_top1()["backbone"]))


def optimizer_order() -> list[str]:
    """Table 1's row order."""
    return list(dict.fromkeys(_top1()["optimizer"]))


def table1(values: str = "top1") -> pd.DataFrame:
    """Table 1 as optimizer (rows) x backbone (columns) of ``values`` ('top1' or 'mark')."""
    df = _top1()
    wide = df.pivot(index="optimizer", columns="backbone", values=values)
    return wide.loc[optimizer_order(), backbone_order()]
