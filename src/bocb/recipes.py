"""Training recipes as plain, serialisable objects (the paper's four CIFAR-100 recipes), and budget tiers.

The paper trains each backbone with one of four recipes; when another optimizer replaces the
recipe's base optimizer, only the learning rate, weight decay and the optimizer's own knobs change
and everything else here stays. The recipe's ``lr``/``weight_decay`` belong to its base optimizer;
another optimizer brings its own grid centre (see :func:`default_hparams`).

Choices the paper leaves open, made here and recorded with every trial:
- CIFAR augmentation for every recipe starts with random crop 32 (zero padding 4) + flip; the
  DeiT/ConvNeXt/RSB recipes add their RandAugment/mixup/cutmix/erasing on top, as the CIFAR ports
  of those recipes do.
- ConvNeXt: "like DeiT at 32 px" with 5 warm-up epochs and drop-path 0.1 (the low end of the
  paper's 0.1-0.3; a study can override it per backbone).
- RSB-A2: 5 warm-up epochs, drop-path 0.05, no random erasing and no label smoothing (BCE), as in
  Wightman et al. 2021; RandAugment m7 with 2 ops.
- Schedules are cosine to ``min_lr_ratio`` x lr after a linear warm-up from 0, stepped per batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bocb.data.augment import AugmentConfig

TIERS = {
    "full": "the recipe as published",
    "fast": "the same pipeline for 10 epochs (warm-up scaled), for one-GPU-day grids",
    "smoke": "tiny models, 3 epochs on 200 train / 50 test images per class, for CPU tests",
}


@dataclass(frozen=True)
class Recipe:
    """Everything about a training run except the backbone, optimizer and data."""

    name: str
    base_optimizer: str
    lr: float
    weight_decay: float
    epochs: int = 200
    batch_size: int = 100
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.0
    loss: Literal["ce", "bce"] = "ce"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    drop_path_rate: float = 0.0
    grad_clip: float | None = None
    tier: str = "full"
    scale: Literal["paper", "tiny"] = "paper"
    train_per_class: int | None = None  # class-balanced subset; None = all
    test_per_class: int | None = None
    eval_batch_size: int = 500

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["augment"] = self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        data["augment"] = AugmentConfig.from_dict(data["augment"])
        return cls(**data)

    def lr_factor(self, step: int, steps_per_epoch: int, schedule_free: bool = False) -> float:
        """Multiplier on the optimizer's lr at global ``step``: linear warm-up, then cosine.

        Schedule-free optimizers replace the decay by their own averaging, so they get the
        warm-up and then a constant factor.
        """
        warmup = self.warmup_epochs * steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if schedule_free:
            return 1.0
        total = max(self.epochs * steps_per_epoch - warmup, 1)
        progress = min((step - warmup) / total, 1.0)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def at_tier(self, tier: str) -> Recipe:
        """The same recipe at a reduced budget (``fast``/``smoke``), through the same code path."""
        if tier not in TIERS:
            raise ValueError(f"unknown budget tier {tier!r}: valid: {', '.join(TIERS)}")
        if tier == "full":
            return self
        epochs = 10 if tier == "fast" else 3
        # Keep the warm-up's share of training (DeiT: 20 of 200 epochs -> 1 of 10).
        warmup = round(self.warmup_epochs * epochs / self.epochs)
        changes: dict[str, Any] = dict(tier=tier, epochs=epochs, warmup_epochs=warmup)
        if tier == "smoke":
            changes.update(scale="tiny", train_per_class=200, test_per_class=50)
        return dataclasses.replace(self, **changes)

    def with_changes(self, **changes: Any) -> Recipe:
        """A copy with some fields replaced; unknown field names are an error naming the valid ones."""
        return checked_replace(self, "recipe", changes)


def checked_replace(obj: Any, what: str, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that names the valid fields when a change names an unknown one."""
    valid = {f.name for f in dataclasses.fields(obj)}
    bad = sorted(set(changes) - valid)
    if bad:
        raise ValueError(f"{what} has no field {', '.join(bad)}: valid: {', '.join(sorted(valid))}")
    return dataclasses.replace(obj, **changes)


_CROP_FLIP = AugmentConfig(crop_padding=4, flip=True)
_DEIT_AUG = AugmentConfig(
    crop_padding=4, flip=True, randaugment=(2, 9), mixup_alpha=0.8, cutmix_alpha=1.0,
    label_smoothing=0.1, random_erasing=0.25,
)

RECIPES: dict[str, Recipe] = {
    "pytorch": Recipe("pytorch", "sgd_m", lr=0.1, weight_decay=1e-4, augment=_CROP_FLIP),
    "deit": Recipe(
        "deit", "adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=20, augment=_DEIT_AUG,
        drop_path_rate=0.1, grad_clip=5.0,
    ),
    "convnext": Recipe(
        "convnext", "adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=5, augment=_DEIT_AUG,
        drop_path_rate=0.1, grad_clip=5.0,
    ),
    "rsb-a2": Recipe(
        "rsb-a2", "lamb", lr=5e-3, weight_decay=0.02, warmup_epochs=5, loss="bce",
        augment=AugmentConfig(
            crop_padding=4, flip=True, randaugment=(2, 7), mixup_alpha=0.1, cutmix_alpha=1.0,
        ),
        drop_path_rate=0.05,
    ),
}


def get_recipe(name: str, tier: str = "full") -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: valid: {', '.join(RECIPES)}")
    return RECIPES[name].at_tier(tier)


def default_hparams(recipe: Recipe, optimizer: str) -> tuple[float, float]:
    """(lr, weight_decay) for ``optimizer`` under ``recipe`` when the user gives none.

    The recipe's own values for its base optimizer; the optimizer's grid centre (the paper's
    typical choice) for any other.
    """
    from bocb.optim import get_optimizer_info

    info = get_optimizer_info(optimizer)
    if info.name == get_optimizer_info(recipe.base_optimizer).name:
        return recipe.lr, recipe.weight_decay
    return info.lr, info.weight_decay
