"""The trial spec: one frozen, fully resolved description of a training run, and its identity.

A :class:`TrialSpec` is what the trainer consumes and what a store keys on: the resolved backbone,
the resolved optimizer (every argument), the recipe at its budget tier, the dataset and the seed.
Its canonical JSON (sorted keys, no whitespace) hashes to the ``trial_id``, so the same choice
always gets the same id and changing any knob gets a new one. Where and how fast it runs (device,
precision, compile) is not part of it; the result records those.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bocb.data import DatasetSpec
from bocb.optim import DEFAULT_POLICY, OptimizerSpec, resolve_optimizer
from bocb.recipes import Recipe, default_hparams, get_recipe
from bocb.zoo import BackboneSpec, get_backbone_info, resolve_backbone


@dataclass(frozen=True)
class TrialSpec:
    backbone: BackboneSpec
    optimizer: OptimizerSpec
    recipe: Recipe
    data: DatasetSpec
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.to_dict(),
            "optimizer": self.optimizer.to_dict(),
            "recipe": self.recipe.to_dict(),
            "data": self.data.to_dict(),
            "seed": self.seed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def trial_id(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        return cls(
            backbone=BackboneSpec.from_dict(data["backbone"]),
            optimizer=OptimizerSpec.from_dict(data["optimizer"]),
            recipe=Recipe.from_dict(data["recipe"]),
            data=DatasetSpec(**data["data"]),
            seed=int(data["seed"]),
        )


def resolve_trial(
    backbone: str,
    optimizer: str | None,
    *,
    data: DatasetSpec,
    num_classes: int,
    lr: float | None = None,
    weight_decay: float | None = None,
    recipe: str | None = None,
    tier: str = "full",
    seed: int = 0,
    policy: str | None = None,
    scale: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    drop_path_rate: float | None = None,
    wd_policy: str = DEFAULT_POLICY,
    optimizer_args: dict[str, Any] | None = None,
) -> TrialSpec:
    """Resolve a user's choice into a TrialSpec; ``None`` means "the default", stated here:

    recipe: the paper's recipe for the backbone; optimizer: the recipe's base optimizer;
    lr/weight_decay: :func:`bocb.recipes.default_hparams`; policy: the backbone's default; scale:
    the tier's (``tiny`` for smoke); drop_path_rate: the recipe's where the backbone has stochastic
    depth, else 0.
    """
    info = get_backbone_info(backbone)
    rec = get_recipe(recipe or info.recipe, tier)
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes["epochs"] = epochs
        # Keep the warm-up's share of training, as the budget tiers do.
        changes["warmup_epochs"] = round(rec.warmup_epochs * epochs / rec.epochs)
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if changes:
        rec = rec.with_changes(**changes)
    opt_name = optimizer or rec.base_optimizer
    default_lr, default_wd = default_hparams(rec, opt_name)
    dpr = rec.drop_path_rate if info.supports_drop_path else 0.0
    bb = resolve_backbone(
        backbone,
        num_classes=num_classes,
        policy=policy,
        scale=scale or rec.scale,
        drop_path_rate=dpr if drop_path_rate is None else drop_path_rate,
    )
    opt = resolve_optimizer(
        opt_name,
        lr=default_lr if lr is None else lr,
        weight_decay=default_wd if weight_decay is None else weight_decay,
        wd_policy=wd_policy,
        **(optimizer_args or {}),
    )
    return TrialSpec(backbone=bb, optimizer=opt, recipe=rec, data=data, seed=seed)
