"""The trial spec: one frozen, fully resolved description of a training run, and its identity.

A :class:`TrialSpec` is what the trainer consumes and what a store keys on: the resolved backbone,
the resolved optimizer (every argument), the recipe at its budget tier, the dataset and the seed.
Its canonical JSON (sorted keys, no whitespace) hashes to the ``trial_id``, so the same choice
always gets the same id and changing any knob gets a new one. Numeric precision is part of it (in
the recipe: fp32, tf32 or bf16 change the numbers); where and how fast it runs (device, compile)
is not, and the result records those.

A fine-tuning trial (transfer, issue 7) is a TrialSpec with ``pretrained`` (:class:`Pretrained`:
where its starting weights come from, the pre-training trial and optimizer, the weights' sha256)
and ``finetune`` (``full`` or ``linear``). Both enter the id, except the weights file's path: a
store moved to another disk keeps its ids. Specs without them serialise exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from bocb.data import DatasetSpec
from bocb.optim import DEFAULT_POLICY, OptimizerSpec, resolve_optimizer
from bocb.recipes import Recipe, default_hparams, recipe_for
from bocb.zoo import BackboneSpec, get_backbone_info, resolve_backbone


FINETUNE_MODES = {
    "full": "every weight trains; the classifier is new",
    "linear": "linear probe: only the new classifier trains; the backbone is frozen, BatchNorm in eval mode",
}


@dataclass(frozen=True)
class Pretrained:
    """The weights a fine-tuning trial starts from.

    ``label`` names the pre-trained model in transfer tables (e.g. ``R-50 / LAMB``); ``optimizer``
    is the pre-training optimizer's short name (``unknown`` for a foreign checkpoint); ``trial_id``
    the pre-training trial when it came from a store; ``sha256`` the digest of the weights' tensors
    (:func:`bocb.checkpoint.tensor_sha256`: names, dtypes, shapes, bytes; not the file's bytes,
    whose header order safetensors does not keep stable). Specs planned by earlier versions hold
    the file's sha256 here and keep their ids (see :func:`bocb.transfer.study.keep_stored_ids`).
    """

    label: str
    optimizer: str
    sha256: str
    path: str
    trial_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "optimizer": self.optimizer, "sha256": self.sha256, "path": self.path,
                "trial_id": self.trial_id}


@dataclass(frozen=True)
class TrialSpec:
    backbone: BackboneSpec
    optimizer: OptimizerSpec
    recipe: Recipe
    data: DatasetSpec
    seed: int
    pretrained: Pretrained | None = None
    finetune: str | None = None  # FINETUNE_MODES; set exactly when pretrained is

    def __post_init__(self) -> None:
        if (self.pretrained is None) != (self.finetune is None):
            raise ValueError("a fine-tuning trial needs both pretrained and finetune")
        if self.finetune is not None and self.finetune not in FINETUNE_MODES:
            raise ValueError(f"unknown finetune mode {self.finetune!r}: valid: {', '.join(FINETUNE_MODES)}")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "backbone": self.backbone.to_dict(),
            "optimizer": self.optimizer.to_dict(),
            "recipe": self.recipe.to_dict(),
            "data": self.data.to_dict(),
            "seed": self.seed,
        }
        if self.pretrained is not None:
            out["pretrained"] = self.pretrained.to_dict()
            out["finetune"] = self.finetune
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @property
    def trial_id(self) -> str:
        identity = self.to_dict()
        if "pretrained" in identity:
            identity["pretrained"] = {k: v for k, v in identity["pretrained"].items() if k != "path"}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        pretrained = data.get("pretrained")
        return cls(
            backbone=BackboneSpec.from_dict(data["backbone"]),
            optimizer=OptimizerSpec.from_dict(data["optimizer"]),
            recipe=Recipe.from_dict(data["recipe"]),
            data=DatasetSpec(**data["data"]),
            seed=int(data["seed"]),
            pretrained=Pretrained(**pretrained) if pretrained else None,
            finetune=data.get("finetune"),
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
    precision: str | None = None,
    holdout_per_class: int | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> TrialSpec:
    """Resolve a user's choice into a TrialSpec; ``None`` means "the default", stated here:

    recipe: the paper's recipe for the backbone, with the backbone's released-config overrides
    (:func:`bocb.recipes.recipe_for`); optimizer: the recipe's base optimizer; lr/weight_decay:
    :func:`bocb.recipes.default_hparams`; policy: the backbone's default; scale: the tier's
    (``tiny`` for smoke); drop_path_rate / dropout: the recipe's where the backbone has them, else
    0; epochs: the tier's (a change scales the warm-up, :meth:`Recipe.with_epochs`); precision: the
    tier's; holdout_per_class: none (settings are chosen on the test set, the paper's way);
    train_per_class / test_per_class: the tier's (class-balanced subsets; None in the full tier: all).
    """
    info = get_backbone_info(backbone)
    # Out-of-range budgets fail here, before anything is built: `--epochs -1` would otherwise
    # train nothing and report `done`.
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if value is not None and not (isinstance(value, int) and 1 <= value <= 1_000_000):
            raise ValueError(f"{name} must be an integer in {low}..1000000, got {value!r}")
    if drop_path_rate is not None and not (math.isfinite(drop_path_rate) and 0.0 <= drop_path_rate < 1.0):
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in 0..2^32-1, got {seed!r}")
    rec = recipe_for(info, recipe, tier)
    if epochs is not None:
        rec = rec.with_epochs(epochs)
    changes: dict[str, Any] = {}
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if precision is not None:
        changes["precision"] = precision
    if holdout_per_class is not None:
        changes["holdout_per_class"] = holdout_per_class
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if value is not None:
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            changes[name] = value
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
        drop_rate=rec.drop_rate if info.supports_dropout else 0.0,
    )
    opt = resolve_optimizer(
        opt_name,
        lr=default_lr if lr is None else lr,
        weight_decay=default_wd if weight_decay is None else weight_decay,
        wd_policy=wd_policy,
        **(optimizer_args or {}),
    )
    return TrialSpec(backbone=bb, optimizer=opt, recipe=rec, data=data, seed=seed)
