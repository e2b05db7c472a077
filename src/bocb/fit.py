"""A budget fitted to small data: per-class counts and batch size that a dataset can honour.

A tier's defaults are written for CIFAR (the smoke tier: 200 train / 50 test images per class, a
batch of 100). On a user's folder of 45 images per class they would fail: a class-balanced subset
cannot take 200 of 45, and 90 training images make no full batch of 100 (the loop drops the last,
incomplete batch, so an epoch would have no step). :func:`fit_recipe` turns such defaults into
values the data can honour and says so, one note per change:

- **per-class counts** larger than the smallest class become that class's count (for training,
  after the held-out images of ``selection = "holdout"`` are set aside);
- **batch size**: when the training set holds less than one full batch (an epoch would have no
  step at all), the batch becomes the largest power of two that gives at least :data:`MIN_STEPS`
  steps an epoch (never below 2: mixup and cutmix pair images within a batch). A set that holds
  one batch or more keeps its batch, so a study that ran before keeps its trial ids.

A value the user chose (a study file's key, a ``--train-per-class`` flag) is never changed: one
that the data cannot honour is an error naming the most it can be. Changes go into the trial's
spec (its recipe), so they are part of its identity and of every record.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

MIN_STEPS = 4  # optimizer steps an epoch that a fitted batch size guarantees
MIN_BATCH = 2


def _fewest(labels: Any) -> tuple[int, int]:
    """(count of the smallest class present, number of classes present)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    present = counts[counts > 0]
    return (int(present.min()), len(present)) if len(present) else (0, 0)


def fit_recipe(recipe: Any, train_labels: Any, test_labels: Any,
               explicit: Collection[str] = ()) -> tuple[dict[str, int], list[str]]:
    """The changes (``Recipe.with_changes`` keywords) that fit ``recipe`` to a dataset with these
    label arrays, and a note per change. ``explicit``: the names of values the user set
    (``train_per_class``, ``test_per_class``, ``batch_size``); those are checked, never changed:
    a ``ValueError`` with one line says what the data allows."""
    changes: dict[str, int] = {}
    notes: list[str] = []
    holdout = recipe.holdout_per_class or 0
    fewest_train, classes = _fewest(train_labels)
    fewest_test, _ = _fewest(test_labels)
    room = {"train_per_class": fewest_train - holdout, "test_per_class": fewest_test}
    for name, most in room.items():
        wanted = getattr(recipe, name)
        if wanted is None or wanted <= most:
            continue
        where = "training" if name == "train_per_class" else "test"
        extra = f" after the {holdout} held out" if holdout and name == "train_per_class" else ""
        if most < 1:
            raise ValueError(f"the smallest class has no {where} images{extra} to take")
        if name in explicit:
            raise ValueError(f"{name} = {wanted}, but the smallest class has {most} {where} images{extra}: "
                             f"at most {most}")
        changes[name] = most
        notes.append(f"{name} {wanted} (the tier's) -> {most}: the smallest class has {most} {where} images{extra}")
    per_class = changes.get("train_per_class", recipe.train_per_class)
    if per_class is not None:
        n_train = classes * per_class
    else:
        n_train = len(np.asarray(train_labels)) - holdout * classes
    batch = recipe.batch_size
    if batch > n_train:
        if "batch_size" in explicit:
            raise ValueError(f"batch_size = {batch}, but there are {n_train} training images: at most {n_train}")
        else:
            fitted = 1 << max(0, (n_train // MIN_STEPS).bit_length() - 1)
            if fitted < MIN_BATCH:
                raise ValueError(f"{n_train} training images are too few: at least {MIN_BATCH * MIN_STEPS} are needed "
                                 f"for {MIN_STEPS} steps of {MIN_BATCH} an epoch")
            changes["batch_size"] = fitted
            notes.append(f"batch_size {batch} -> {fitted}: {n_train} training images make no full batch of {batch}; "
                         f"{fitted} gives at least {MIN_STEPS} steps an epoch")
    return changes, notes
