"""A study file into the store, validated up front: shared by :func:`bocb.api.run_study` and :func:`bocb.api.plan`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb.data import load_dataset
from bocb.data.safe_pickle import UnsafeDataError
from bocb.spec import resolve_trial
from bocb.store import Store
from bocb.study import Study, expand, load_study


@dataclass
class Prepared:
    study: Study
    trials: list[Any]  # TrialSpec
    skipped: list[tuple[str, dict[str, Any], str]]
    num_classes: int
    train_images: int
    test_images: int


# Sizes of the standard datasets, so `bocb plan` can size a study on a machine without its data.
KNOWN_SIZES = {"cifar10": (10, 50_000, 10_000), "cifar100": (100, 50_000, 10_000), "sample": (10, 5_000, 1_000)}


def prepare(path: Path, cache_dir: Path | None, data_dirs: list[Path], download: bool,
            require_data: bool = True) -> Prepared:
    """Parse the study, load its dataset (so missing data fails before any trial) and expand it.

    With ``require_data=False`` (planning), a standard dataset that is not present is sized from
    :data:`KNOWN_SIZES` instead.
    """
    study = load_study(path)
    try:
        dataset = load_dataset(study.data, cache_dir=cache_dir, data_dirs=data_dirs, download=download)
        sizes = (dataset.num_classes, len(dataset.train), len(dataset.test))
    except ValueError as err:
        # A data file that tried to run code is never papered over, not even when planning.
        if require_data or study.data.kind not in KNOWN_SIZES or isinstance(err, UnsafeDataError):
            raise
        sizes = KNOWN_SIZES[study.data.kind]
    num_classes = sizes[0]
    trials, skipped = expand(study, num_classes)
    skipped_rows = []
    for s in skipped:
        # A skipped pair has no setting to run; its row carries the pair's default spec so it
        # shows up in tables, under an id that cannot collide with a runnable trial's.
        spec = resolve_trial(s.backbone, s.optimizer, data=study.data, num_classes=num_classes,
                             tier=study.tier, wd_policy=study.wd_policy)
        tid = hashlib.sha256(f"skipped:{spec.trial_id}".encode()).hexdigest()[:16]
        skipped_rows.append((tid, spec.to_dict(), s.reason))
    return Prepared(study, trials, skipped_rows, *sizes)


def register(store: Store, prepared: Prepared) -> int:
    """Record the study and link its trials; returns how many trials were new to the store."""
    study = prepared.study
    store.add_study(study.study_id, study.name, study.path, study.settings)
    return store.add_trials(study.study_id, [(t.trial_id, t.to_dict()) for t in prepared.trials],
                            prepared.skipped)
