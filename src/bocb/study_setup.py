"""A study file into the store, validated up front: shared by :func:`bocb.api.run_study` and :func:`bocb.api.plan`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bocb.data import open_data
from bocb.data.safe_pickle import UnsafeDataError
from bocb.spec import resolve_trial
from bocb.store import Store
from bocb.fit import fit_recipe
from bocb.recipes import RECIPES
from bocb.recipes_in1k import not_trainable
from bocb.study import Study, StudyError, expand, load_study, pair_trial


@dataclass
class Prepared:
    study: Study
    trials: list[Any]  # TrialSpec
    skipped: list[tuple[str, dict[str, Any], str]]
    num_classes: int
    train_images: int
    test_images: int
    notes: tuple[str, ...] = ()  # budget values fitted to small data (bocb.fit), one line each


# Sizes of the standard datasets, so `bocb plan` can size a study on a machine without its data.
KNOWN_SIZES = {"cifar10": (10, 50_000, 10_000), "cifar100": (100, 50_000, 10_000), "sample": (10, 5_000, 1_000)}


def prepare(path: Path, cache_dir: Path | None, data_dirs: list[Path], download: bool,
            require_data: bool = True) -> Prepared:
    """Parse the study, load its dataset (so missing data fails before any trial) and expand it.

    Streamed data (``data = "stream:..."``) is indexed, not loaded (:func:`bocb.data.open_data`):
    its file list and labels are read here, its pixels by each trial's loader. With
    ``require_data=False`` (planning), data that is not present is sized from the study's
    ``data_sizes``, else for a standard dataset from :data:`KNOWN_SIZES`.
    """
    study = load_study(path)
    notes: list[str] = []
    try:
        dataset = open_data(study.data, cache_dir=cache_dir, data_dirs=data_dirs, download=download)
        sizes = (dataset.num_classes, len(dataset.train), len(dataset.test))
        study, notes = fit_study(study, dataset)
    except ValueError as err:
        # A data file that tried to run code is never papered over, not even when planning.
        if require_data or isinstance(err, (UnsafeDataError, StudyError)):
            raise
        if study.data_sizes is not None:  # the file says what to assume (data on another machine)
            sizes = study.data_sizes
        elif study.data.kind in KNOWN_SIZES and not study.data.stream:
            sizes = KNOWN_SIZES[study.data.kind]
        else:
            raise
    num_classes = sizes[0]
    trials, skipped = expand(study, num_classes)
    # The ImageNet recipes crop full-size images as they are read: streamed data only
    # (bocb.recipes_in1k). Read from the file's backbones, not the expanded trials: an adaptive
    # study expands none yet.
    imagenet = sorted({b["recipe"] for b in study.backbones if b.get("recipe") and RECIPES[b["recipe"]].imagenet})
    if imagenet and require_data and not study.data.stream:
        raise StudyError(f"{study.path}: {not_trainable(imagenet)}")
    check_input_sizes(study, num_classes)
    skipped_rows = []
    for s in skipped:
        # A skipped pair has no setting to run; its row carries the pair's default spec so it
        # shows up in tables, under an id that cannot collide with a runnable trial's.
        spec = resolve_trial(s.backbone, s.optimizer, data=study.data, num_classes=num_classes,
                             tier=study.tier, wd_policy=study.wd_policy)
        tid = hashlib.sha256(f"skipped:{spec.trial_id}".encode()).hexdigest()[:16]
        skipped_rows.append((tid, spec.to_dict(), s.reason))
    return Prepared(study, trials, skipped_rows, *sizes, notes=tuple(notes))


def check_input_sizes(study: Study, num_classes: int) -> None:
    """An ImageNet recipe trains and tests at its own sizes (RSB A3: 160 and 224); a backbone that
    takes one input size only (a ViT's patch embedding) cannot train with it. Refused here, in one
    line naming the entry, rather than as a failed trial per optimizer."""
    from bocb.compute import input_error

    for i, b in enumerate(study.backbones, 1):
        recipe = RECIPES.get(b.get("recipe", ""))
        if recipe is None or recipe.imagenet is None:
            continue
        spec = pair_trial(study, b, study.optimizers[0], None, None, study.seeds[0], num_classes)
        for what, size in (("trains", recipe.imagenet.train_size), ("tests", recipe.imagenet.test_size)):
            if size == spec.backbone.input_size:
                continue
            error = input_error(spec.backbone.to_json(), size)  # the network the trial builds, fed this size
            if error:
                raise StudyError(f"{study.path} backbones[{i}]: {b['name']} cannot take {size} px images, at which "
                                 f"{recipe.name} {what} ({error}): give it a recipe at {spec.backbone.input_size} px, "
                                 f"e.g. in1k-deit or in1k-pytorch")


def fit_study(study: Study, dataset: Any) -> tuple[Study, list[str]]:
    """The study with the budget values its file leaves to the tier fitted to ``dataset``
    (:func:`bocb.fit.fit_recipe`: per-class counts and batch size), as study-wide overrides, and
    a note per change. Values the file sets are checked, never changed (a :class:`StudyError`)."""
    overrides: dict[str, int] = {}
    notes: list[str] = []
    if not hasattr(dataset.train, "labels"):  # streamed shards: labels are known only by reading them all
        return study, ["streamed shards: the tier's per-class counts and batch are not fitted to the data"]
    for b in study.backbones:
        spec = pair_trial(study, b, study.optimizers[0], None, None, study.seeds[0], dataset.num_classes)
        try:
            changes, said = fit_recipe(spec.recipe, dataset.train.labels, dataset.test.labels, set(study.overrides))
        except ValueError as exc:
            raise StudyError(f"{study.path}: {b['name']}: {exc}") from None
        for key, value in changes.items():  # the smallest batch any backbone needs serves them all
            overrides[key] = min(value, overrides.get(key, value))
        notes += [n for n in said if n not in notes]
    if not overrides:
        return study, []
    return replace(study, overrides={**study.overrides, **overrides}), notes


def register(store: Store, prepared: Prepared) -> int:
    """Record the study and link its trials; returns how many trials were new to the store."""
    study = prepared.study
    store.add_study(study.study_id, study.name, study.path, study.settings)
    return store.add_trials(study.study_id, [(t.trial_id, t.to_dict()) for t in prepared.trials],
                            prepared.skipped)
