"""Synthetic stores for tests of what reads the store (reports, exports, analysis): a study file, the
study registered in a real SQLite store, and trial specs carrying the fields the store summarises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bocb.store import SQLiteStore
from bocb.study import Study, load_study


def trial_spec(backbone: str, optimizer: str, lr: float = 1e-3, weight_decay: float = 0.05, seed: int = 0,
               num_classes: int = 10) -> dict[str, Any]:
    """The part of a trial spec the store reads (summary columns); nothing trains from it."""
    return {"backbone": {"short": backbone, "num_classes": num_classes},
            "optimizer": {"short": optimizer, "category": "b", "args": {"lr": lr, "weight_decay": weight_decay}},
            "recipe": {"name": "pytorch", "tier": "smoke"}, "seed": seed}


def study_in_store(folder: Path, name: str, backbones: list[str], optimizers: list[str],
                   tuning: str = "fixed") -> tuple[Path, Study, Path]:
    """Write ``<folder>/<name>.toml``, register it in ``<folder>/store.sqlite``; returns (file, study, store)."""
    study_file = folder / f"{name}.toml"
    study_file.write_text(f"backbones = {json.dumps(backbones)}\noptimizers = {json.dumps(optimizers)}\n"
                          f'[study]\nname = "{name}"\ntuning = "{tuning}"\n')
    study = load_study(study_file)
    store_path = folder / "store.sqlite"
    with SQLiteStore(store_path) as store:
        store.add_study(study.study_id, name, str(study_file), study.settings)
    return study_file, study, store_path
