"""The paper's ImageNet-1K recipes (its Table A3) as bocb recipes, from the authors' released configs.

The paper trains DeiT-S (DeiT recipe) and ResNet-50 (RSB A2) for 300 epochs on ImageNet-1K with
each of its 20 optimizers (Table 2), and pre-trains for its transfer table with the PyTorch
recipe (100 epochs), RSB A3 (100 epochs at 160 px), A2 (300) and A1 (600). The values here are
those of the released configs in the repository Westlake-AI/openmixup, folder
``configs/classification/imagenet/`` (each recipe's ``source`` names its file and the dataset
pipeline it includes); ``tests/test_recipes_in1k.py`` checks every value against them.

What an ImageNet recipe adds to a CIFAR one is how images become inputs (:class:`ImageNetInput`):
training on a random-resized crop (bicubic, scale 0.08-1, ratio 3/4-4/3, then a flip) at
``train_size``; testing on a resize of the short side to ``test_resize`` and a centre crop of
``test_size`` (crop ratio 0.875 for PyTorch and DeiT, 0.95 for RSB); ImageNet's mean and std;
whether the sampler repeats each image (RSB A1/A2's ``RepeatAugSampler``, with its default of
:data:`REPEATS` copies: the streaming loader draws each image that many times an epoch with
another crop each, the epoch kept about one dataset long, timm's rule in
:class:`bocb.data.stream.EpochSampler`; the released DeiT config removed DeiT's repeated
augmentation, and so does bocb). The recipe's ``lr`` belongs to
``reference_batch`` images per step (the released global batch: 8 GPUs x the per-GPU batch); a run
with another global batch scales it linearly (:meth:`ImageNetInput.scaled_lr`), the rule of DeiT
(lr = 5e-4 x batch / 512) and of the RSB configs.

Departures, stated: the released RSB configs train in fp16 with dynamic loss scaling; bocb's mixed
precision is bf16 autocast (no loss scaling needed), so those recipes use ``bf16``. The released A1
config uses cross-entropy with label smoothing 0.1, as recorded here (the RSB paper's A1 used BCE).
RandAugment's magnitude noise (``magnitude_std`` 0.5, timm's ``mstd0.5``) is recorded in
:class:`ImageNetInput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bocb.data.augment import AugmentConfig
from bocb.plain import plain_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RELEASED = "released: Westlake-AI/openmixup configs/classification/imagenet/"
# Copies of each image per epoch under repeated augmentation: openmixup's (and timm's, DeiT's)
# RepeatAugSampler default num_repeats, which the RSB A1/A2 configs keep.
REPEATS = 3


@dataclass(frozen=True)
class ImageNetInput:
    """How full-size images become a network's input under an ImageNet recipe (see the module doc)."""

    train_size: int = 224
    test_size: int = 224
    test_resize: int = 256
    interpolation: str = "bicubic"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    repeated_augment: bool = False
    randaugment_mstd: float = 0.0
    reference_batch: int = 256  # the global batch the recipe's lr belongs to

    def __post_init__(self) -> None:
        if not 0 < self.test_size <= self.test_resize:
            raise ValueError(f"test_size must be in (0, test_resize], got {self.test_size} and {self.test_resize}")
        if self.train_size < 1 or self.reference_batch < 1:
            raise ValueError("train_size and reference_batch must be >= 1")

    @property
    def repeats(self) -> int:
        """Draws of each image per epoch for the training loader: :data:`REPEATS` with repeated
        augmentation, else 1. A property, not a field, so the recipes' serialised form (and the
        trial ids) stay as they were."""
        return REPEATS if self.repeated_augment else 1

    @property
    def crop_pct(self) -> float:
        """The centre crop's share of the resized short side (0.875, 0.95)."""
        return self.test_size / self.test_resize

    def scaled_lr(self, lr: float, global_batch: int) -> float:
        """``lr`` for ``global_batch`` images per step: linear in the batch, from ``reference_batch``."""
        return lr * global_batch / self.reference_batch

    def to_dict(self) -> dict[str, Any]:
        out = plain_dict(self)
        out["crop_scale"], out["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageNetInput:
        data = dict(data)
        for key in ("crop_scale", "crop_ratio"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def not_trainable(names: list[str]) -> str:
    """Why these recipes cannot run here, in one line (a study, ``bocb train`` and the trainer say it)."""
    return (f"recipe(s) {', '.join(names)} train on full-size images with random-resized crops, streamed "
            "from disk (bocb train --data stream:PATH): data held in memory cannot take them, and a study "
            "naming them can be planned (bocb plan) but not run until studies stream")


def _augment(**changes: Any) -> AugmentConfig:
    # No CIFAR pad-crop: the random-resized crop and the flip happen while decoding (ImageNetInput).
    return AugmentConfig(crop_padding=None, flip=False, randaugment_group=1, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, **changes)


def recipes() -> dict[str, Any]:
    """The ImageNet-1K recipes by name (bocb.recipes adds them to RECIPES)."""
    from bocb.recipes import Recipe

    rsb = dict(base_optimizer="lamb", warmup_epochs=5, loss="bce", precision="bf16")
    return {
        "in1k-pytorch": Recipe(
            "in1k-pytorch", "sgd_m", lr=0.1, weight_decay=1e-4, epochs=100, batch_size=256, augment=_augment(),
            precision="tf32", imagenet=ImageNetInput(test_resize=256, reference_batch=256),
            source=_RELEASED + "resnet/resnet50_4xb64_cos_ep100.py (data: basic_sz224_4xbs64.py)"),
        "in1k-deit": Recipe(
            "in1k-deit", "adamw", lr=1e-3, weight_decay=0.05, epochs=300, batch_size=1024, warmup_epochs=5,
            min_lr=1e-6, drop_path_rate=0.1, precision="tf32",
            augment=_augment(randaugment=(2, 9), mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1,
                             random_erasing=0.25),
            imagenet=ImageNetInput(test_resize=256, randaugment_mstd=0.5, reference_batch=1024),
            source=_RELEASED + "deit/deit_small_8xb128_ep300.py (data: swin_sz224_8xbs128.py)"),
        "in1k-rsb-a1": Recipe(
            "in1k-rsb-a1", lr=5e-3, weight_decay=0.01, epochs=600, batch_size=2048, min_lr=1e-6,
            drop_path_rate=0.05, **{**rsb, "loss": "ce"},
            augment=_augment(randaugment=(2, 7), mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1),
            imagenet=ImageNetInput(test_resize=236, repeated_augment=True, randaugment_mstd=0.5, reference_batch=2048),
            source=_RELEASED + "resnet/resnet50_rsb_a1_sz224_8xb256_ep600.py (data: rsb_a2_sz224_8xbs256.py)"),
        "in1k-rsb-a2": Recipe(
            "in1k-rsb-a2", lr=5e-3, weight_decay=0.02, epochs=300, batch_size=2048, min_lr=1e-6,
            drop_path_rate=0.05, **rsb,
            augment=_augment(randaugment=(2, 7), mixup_alpha=0.1, cutmix_alpha=1.0),
            imagenet=ImageNetInput(test_resize=236, repeated_augment=True, randaugment_mstd=0.5, reference_batch=2048),
            source=_RELEASED + "resnet/resnet50_rsb_a2_sz224_8xb256_ep300.py (data: rsb_a2_sz224_8xbs256.py)"),
        "in1k-rsb-a3": Recipe(
            "in1k-rsb-a3", lr=8e-3, weight_decay=0.02, epochs=100, batch_size=2048, min_lr=0.0, **rsb,
            augment=_augment(randaugment=(2, 6), mixup_alpha=0.1, cutmix_alpha=1.0),
            imagenet=ImageNetInput(train_size=160, test_resize=236, randaugment_mstd=0.5, reference_batch=2048),
            source=_RELEASED + "resnet/resnet50_rsb_a3_sz160_8xb256_ep100.py (data: rsb_a3_sz160_8xbs256.py)"),
    }
