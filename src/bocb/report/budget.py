"""What budget a study's results were trained with, and what the real run would take.

A report shows a banner above everything when the budget is a toy or reduced one, because a
newcomer otherwise reads a 3-epoch, tiny-model demo's table as "the paper does not reproduce".
Read from the trial specs in the store (never the study file: the store is what was run):

- **toy**: scaled-down (``tiny``) models, the ``smoke`` tier, or the bundled few-hundred-image
  CIFAR-10 sample. Such results show the pipeline runs; they say nothing about coupling.
- **reduced**: real models and data but fewer epochs than the recipe publishes, or a per-class
  subset of the images (the ``fast`` tier, a study's ``epochs``/``train_per_class``).
- **full**: the recipes as published.

The real-run line sizes the same pairs at the paper's budget (published model sizes, the
recipes' full epochs, CIFAR-100's 50,000 training and 10,000 test images; ImageNet-1K's 1.28M and
50,000 at the recipe's crops for pairs trained with an ImageNet recipe) from the counted FLOPs
(:mod:`bocb.compute`), as ``bocb plan`` does, at its :data:`bocb.api.EFFECTIVE_FLOPS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CIFAR100_TRAIN, CIFAR100_TEST = 50_000, 10_000
IN1K_TRAIN, IN1K_TEST = 1_281_167, 50_000  # ImageNet-1K, for studies trained with its recipes


@dataclass(frozen=True)
class Budget:
    """``level``: ``toy``, ``reduced`` or ``full``; ``reasons``: why it is not full; ``real_run``:
    what the paper's budget would take (may be empty)."""

    level: str
    reasons: tuple[str, ...] = ()
    real_run: str = ""

    @property
    def toy(self) -> bool:
        return self.level == "toy"

    def banner(self) -> str:
        """The line a report shows above everything else (empty at the full budget)."""
        if self.level == "full":
            return ""
        if self.toy:
            text = (f"Toy budget: {'; '.join(self.reasons)}. These results show that the "
                    "pipeline runs; they are not evidence about coupling, and their agreement with the "
                    "paper means little either way.")
        else:
            text = (f"Reduced budget: {'; '.join(self.reasons)}. Failures and orders may differ "
                    "from a run at the recipes' full budget.")
        return f"{text} {self.real_run}".strip()


def budget_of(specs: Iterable[dict[str, Any]], effective_flops: float | None = None) -> Budget:
    """The budget of trials with these specs (one per backbone is enough; TrialSpec dicts).
    ``effective_flops``: sustained FLOP/s for the real-run line (None: no line)."""
    from bocb.recipes import RECIPES

    specs = list(specs)
    if not specs:
        return Budget("full")
    toy, reduced = [], []
    # Fields a spec may lack (records written by other tools, synthetic test stores) count as full.
    backbones = [s.get("backbone", {}) for s in specs]
    recipes = [s.get("recipe", {}) for s in specs]
    if any(b.get("scale") == "tiny" for b in backbones):
        toy.append("tiny (scaled-down) models")
    if any(r.get("tier") == "smoke" for r in recipes):
        toy.append("the smoke tier")
    if any(s.get("data", {}).get("kind") == "sample" for s in specs):
        toy.append("the bundled CIFAR-10 sample (5,000 training and 1,000 test images)")
    short_runs = sorted({(r["epochs"], RECIPES[r["name"]].epochs) for r in recipes
                         if r.get("name") in RECIPES and r.get("epochs", math.inf) < RECIPES[r["name"]].epochs})
    if short_runs:
        (toy if toy else reduced).append(
            "; ".join(f"{e} epochs where the recipe publishes {full}" for e, full in short_runs))
    per_class = sorted({r.get("train_per_class") for r in recipes} - {None})
    if per_class:
        (toy if toy else reduced).append(f"{'/'.join(map(str, per_class))} training images per class")
    level = "toy" if toy else "reduced" if reduced else "full"
    real = real_run(specs, effective_flops) if level != "full" and effective_flops else ""
    return Budget(level, tuple(toy or reduced), real)


def real_run(specs: list[dict[str, Any]], effective_flops: float) -> str:
    """One sentence: the study's pairs at the paper's budget, one setting and one seed each, and
    with the paper's lr x wd grids and 3 seeds (specs: one per pair is enough)."""
    from bocb.compute import epoch_flops
    from bocb.optim import get_optimizer_info
    from bocb.recipes import RECIPES
    from bocb.zoo import resolve_backbone

    pairs = {(s.get("backbone", {}).get("name"), s.get("backbone", {}).get("policy"), s.get("recipe", {}).get("name"),
              s.get("optimizer", {}).get("name")) for s in specs}
    one = grid = 0.0
    sized = 0
    datasets: set[str] = set()
    for name, policy, recipe, optimizer in pairs:
        if not (isinstance(name, str) and isinstance(optimizer, str)):
            continue
        inet = RECIPES[recipe].imagenet if recipe in RECIPES else None
        try:  # a pair bocb cannot size (a plug-in not loaded here, a partial record, a model it cannot count)
            full = resolve_backbone(name, num_classes=1000 if inet else 100, policy=policy, scale="paper")
            info = get_optimizer_info(optimizer)
            # ImageNet-1K at the recipe's crops for an ImageNet recipe, as bocb plan counts them
            images = (IN1K_TRAIN, IN1K_TEST) if inet else (CIFAR100_TRAIN, CIFAR100_TEST)
            flops = epoch_flops(full, RECIPES.get(recipe), *images)
        except (KeyError, TypeError, ValueError, RuntimeError):
            continue
        datasets.add("ImageNet-1K" if inet else "CIFAR-100")
        flops *= RECIPES[recipe].epochs if recipe in RECIPES else 200
        one += flops
        grid += flops * len(info.lr_grid()) * len(info.wd_grid()) * 3
        sized += 1
    if not sized:
        return ""
    return (f"The same {sized} pairs at the paper's budget (published sizes, the recipes' full epochs, "
            f"{' and '.join(sorted(datasets))}): about {_hours(one, effective_flops)} GPU-hours for one setting and seed each, "
            f"{_hours(grid, effective_flops)} "
            f"with the paper's lr x weight-decay grids and 3 seeds (one H100 at {effective_flops / 1e12:.0f} "
            "TFLOP/s; `bocb plan` sizes a study file).")


def _hours(flops: float, effective_flops: float) -> str:
    hours = flops / effective_flops / 3600
    return f"{hours:.1f}" if hours < 10 else f"{hours:,.0f}"
