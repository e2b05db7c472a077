"""Training recipes as plain, serialisable objects (the paper's four CIFAR-100 recipes), and budget tiers.

The paper trains each backbone with one of four recipes; when another optimizer replaces the
recipe's base optimizer, only the learning rate, weight decay and the optimizer's own knobs change
and everything else here stays. The recipe's ``lr``/``weight_decay`` belong to its base optimizer;
another optimizer brings its own grid centre (see :func:`default_hparams`).

The authors released CIFAR-100 configs (repository Westlake-AI/openmixup, folders
``configs/classification/cifar100/optimizers/basic/`` for ResNet-50 and ``.../advanced/`` for
ConvNeXt-T, DeiT-S, MLP-Mixer-S, Swin-T and MogaNet-S). Where a backbone's released config departs
from its family recipe, the departure is a **backbone override** (``BackboneInfo.recipe_overrides``
in the zoo), applied by :func:`recipe_for` before the budget tier, listed in the resolved recipe's
``overrides`` and shown by ``bocb zoo show``; ``source`` names the config file, or says that no
config was released and the values are the paper's Table A3 recipe. ``bocb paper protocol`` prints
every value next to the paper's (:mod:`bocb.protocol`).

Choices, made here and recorded with every trial:
- CIFAR augmentation for every recipe starts with random crop 32 (**reflect** padding 4, as the
  released ``sz32`` pipelines) + flip; the DeiT/ConvNeXt/RSB recipes add their
  RandAugment/mixup/cutmix/erasing on top, as the CIFAR ports of those recipes do.
- ConvNeXt: "like DeiT at 32 px" with 5 warm-up epochs and drop-path 0.1; ConvNeXt-T's own
  override (drop-path 0.3, no clipping) comes from its released config.
- DeiT: cosine to an absolute floor of 1e-6 (the released DeiT-S and MLP-Mixer-S configs'
  ``min_lr``); the PyTorch and ConvNeXt recipes decay to 0, as their released configs do.
- RSB-A2: 5 warm-up epochs, drop-path 0.05, no random erasing and no label smoothing (BCE), as in
  Wightman et al. 2021; RandAugment m7 with 2 ops. No config was released for it.
- Schedules are cosine to ``min_lr`` (absolute, like the released configs' mmcv ``min_lr``;
  clipped to the run's lr) after a linear warm-up from 0, stepped per batch.
- Precision is part of a trial's identity: ``tf32`` (fp32 weights and activations, TF32 matmuls
  and convolutions where the GPU has them) for the ``full`` and ``fast`` tiers — the released
  configs ran fp32 (``use_fp16 = False``) on A100s, where PyTorch's cuDNN uses TF32 by default —
  and ``fp32`` for ``smoke``. ``bf16`` (autocast) is a study's explicit choice. On a CPU ``tf32``
  runs as plain fp32 and the record says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Literal

from bocb.data.augment import AugmentConfig
from bocb.plain import plain_dict
from bocb.recipes_in1k import ImageNetInput
from bocb.recipes_in1k import recipes as _in1k_recipes

PRECISIONS = {
    "fp32": "fp32 everywhere; TF32 switched off",
    "tf32": "fp32 storage, TF32 matmuls/convolutions on GPUs that have them (the paper's A100 runs)",
    "bf16": "bf16 autocast for forward and backward, fp32 weights and optimizer",
}

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
    min_lr: float = 0.0  # absolute floor of the cosine (the released configs' mmcv ``min_lr``)
    loss: Literal["ce", "bce"] = "ce"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0  # dropout inside the blocks, for backbones that take it (MLP-Mixer)
    grad_clip: float | None = None
    precision: str = "tf32"  # PRECISIONS; part of the trial's identity
    tier: str = "full"
    scale: Literal["paper", "tiny"] = "paper"
    train_per_class: int | None = None  # class-balanced subset; None = all
    test_per_class: int | None = None
    eval_batch_size: int = 500
    holdout_per_class: int | None = None  # training images per class held out for selection
    overrides: tuple[str, ...] = ()  # fields set by the backbone's override (BackboneInfo)
    source: str = ""  # where the values come from: a released config, or the paper's tables
    # ImageNet recipes only (bocb.recipes_in1k): crops, test resize and the lr's reference batch.
    imagenet: ImageNetInput | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: valid: {', '.join(PRECISIONS)}")
        if self.warmup_epochs < 0 or self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 and warmup_epochs >= 0, got {self.epochs}, {self.warmup_epochs}")
        if self.holdout_per_class is not None and self.holdout_per_class < 1:
            raise ValueError(f"holdout_per_class must be >= 1 (or None), got {self.holdout_per_class}")
        if not self.min_lr >= 0:
            raise ValueError(f"min_lr must be >= 0, got {self.min_lr}")

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON values; ``imagenet`` only when set, so that the CIFAR recipes keep
        the serialisation (and trial ids) they had before it existed."""
        out = plain_dict(self, skip=("augment", "imagenet"))
        out["augment"] = self.augment.to_dict()
        out["overrides"] = list(self.overrides)
        if self.imagenet is not None:
            out["imagenet"] = self.imagenet.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        data["augment"] = AugmentConfig.from_dict(data["augment"])
        data["overrides"] = tuple(data.get("overrides", ()))
        if data.get("imagenet") is not None:
            data["imagenet"] = ImageNetInput.from_dict(data["imagenet"])
        return cls(**data)

    def lr_factor(self, step: int, steps_per_epoch: int, schedule_free: bool = False,
                  base_lr: float | None = None) -> float:
        """Multiplier on the optimizer's lr at global ``step``: linear warm-up, then cosine.

        The cosine ends at ``min_lr`` (as a share of ``base_lr``, at most 1); without ``base_lr``
        it ends at 0. Schedule-free optimizers replace the decay by their own averaging, so they
        get the warm-up and then a constant factor.
        """
        warmup = self.warmup_epochs * steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if schedule_free:
            return 1.0
        total = max(self.epochs * steps_per_epoch - warmup, 1)
        progress = min((step - warmup) / total, 1.0)
        floor = min(self.min_lr / base_lr, 1.0) if base_lr and self.min_lr else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def at_tier(self, tier: str) -> Recipe:
        """The same recipe at a reduced budget (``fast``/``smoke``), through the same code path."""
        if tier not in TIERS:
            raise ValueError(f"unknown budget tier {tier!r}: valid: {', '.join(TIERS)}")
        if tier == "full":
            return self
        epochs = 10 if tier == "fast" else 3
        changes: dict[str, Any] = dict(tier=tier, epochs=epochs, warmup_epochs=self.scaled_warmup(epochs))
        if tier == "smoke":
            changes.update(scale="tiny", train_per_class=200, test_per_class=50, precision="fp32")
        return dataclasses.replace(self, **changes)

    def scaled_warmup(self, epochs: int) -> int:
        """The warm-up for a run of ``epochs``: the same share of training (DeiT: 20 of 200
        epochs -> 1 of 10), but never below one epoch when the recipe has a warm-up at all (at 10
        epochs ConvNeXt's 5 of 200 would round to none) and never longer than the run."""
        if not self.warmup_epochs:
            return 0
        return min(max(1, round(self.warmup_epochs * epochs / self.epochs)), epochs)

    def with_epochs(self, epochs: int) -> Recipe:
        """The same recipe for ``epochs`` epochs, warm-up scaled by :meth:`scaled_warmup`."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        return dataclasses.replace(self, epochs=epochs, warmup_epochs=self.scaled_warmup(epochs))

    def with_overrides(self, overrides: Mapping[str, Any], source: str) -> Recipe:
        """The recipe with a backbone's overrides (Recipe fields, or ``augment.<field>``) applied,
        the overridden names listed in ``overrides`` and ``source`` recorded."""
        top: dict[str, Any] = {}
        augment: dict[str, Any] = {}
        for key, value in overrides.items():
            if key.startswith("augment."):
                augment[key.removeprefix("augment.")] = value
            else:
                top[key] = value
        if augment:
            top["augment"] = checked_replace(self.augment, "augment", augment)
        names = tuple(sorted(overrides))
        return checked_replace(self, "recipe", {**top, "overrides": names, "source": source})

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


_CROP_FLIP = AugmentConfig(crop_padding=4, crop_pad_mode="reflect", flip=True)
_DEIT_AUG = AugmentConfig(
    crop_padding=4, crop_pad_mode="reflect", flip=True, randaugment=(2, 9), mixup_alpha=0.8, cutmix_alpha=1.0,
    label_smoothing=0.1, random_erasing=0.25,
)

RECIPES: dict[str, Recipe] = {
    "pytorch": Recipe("pytorch", "sgd_m", lr=0.1, weight_decay=1e-4, augment=_CROP_FLIP),
    "deit": Recipe(
        "deit", "adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=20, min_lr=1e-6, augment=_DEIT_AUG,
        drop_path_rate=0.1, grad_clip=5.0,
    ),
    "convnext": Recipe(
        "convnext", "adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=5, augment=_DEIT_AUG,
        drop_path_rate=0.1, grad_clip=5.0,
    ),
    "rsb-a2": Recipe(
        "rsb-a2", "lamb", lr=5e-3, weight_decay=0.02, warmup_epochs=5, loss="bce",
        augment=AugmentConfig(
            crop_padding=4, crop_pad_mode="reflect", flip=True, randaugment=(2, 7), mixup_alpha=0.1,
            cutmix_alpha=1.0,
        ),
        drop_path_rate=0.05,
    ),
}


# The paper's ImageNet-1K recipes (Table A3), from the released configs: bocb/recipes_in1k.py.
RECIPES.update(_in1k_recipes())


def get_recipe(name: str, tier: str = "full") -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: valid: {', '.join(RECIPES)}")
    return RECIPES[name].at_tier(tier)


def recipe_for(backbone: Any, recipe: str | None = None, tier: str = "full") -> Recipe:
    """The recipe a backbone trains with at ``tier``: its paper recipe (or ``recipe``), with the
    backbone's released-config overrides applied first when the recipe is the backbone's own.

    ``backbone`` is a :class:`bocb.zoo.BackboneInfo`. The result's ``source`` says where the values
    come from: the backbone's released config, or the paper's recipe tables when none was released.
    Overrides belong to the backbone's own recipe: a study that picks another recipe for it gets
    that recipe unchanged.
    """
    name = recipe or backbone.recipe
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: valid: {', '.join(RECIPES)}")
    base = RECIPES[name]
    own = name == backbone.recipe
    source = backbone.recipe_source if own and backbone.recipe_source else (
        f"paper: the '{name}' recipe of its Table A3 (no config released for {backbone.short})")
    overrides = dict(backbone.recipe_overrides) if own else {}
    return base.with_overrides(overrides, source).at_tier(tier)


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
