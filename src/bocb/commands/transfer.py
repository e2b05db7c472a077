"""``bocb transfer STUDY.toml``: fine-tune pre-trained models with several optimizers, into the store.

The pre-trained models come from a pre-training study in the same store (run it first with
``bocb run``) or from weights files (:mod:`bocb.transfer.study`). Fine-tuning trials then run
exactly as ``bocb run`` runs trials: same executors, live view, resumption and failure handling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bocb.commands.common import data_dirs, default_cache_dir
from bocb.commands.run import add_run_args, check_run_args, check_study_run, run_registered


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="run a transfer study: pre-trained models x fine-tuning optimizers")
    p.add_argument("study", type=Path, help="transfer study file (TOML, with [[pretrained]] entries)")
    add_run_args(p)


def run(args: argparse.Namespace) -> int:
    from bocb.store import SQLiteStore
    from bocb.transfer.study import keep_stored_ids, load_transfer, sources, superseded

    check_run_args(args)
    study = load_transfer(args.study)
    check_study_run(args, study)
    store = SQLiteStore(args.store)
    found, skipped = sources(study, store)
    stored = store.specs(study.study_id)
    trials = keep_stored_ids(_expand(study, found, args), set(stored))
    console = Console(stderr=True)
    for s in skipped:
        console.print(f"[yellow]not transferred[/]: {escape(f'{s.backbone} / {s.optimizer}: {s.reason}')}")
    settings = {"transfer": study.settings,
                "not_transferred": [{"backbone": s.backbone, "optimizer": s.optimizer, "reason": s.reason}
                                    for s in skipped]}
    store.add_study(study.study_id, study.name, study.path, settings)
    replaced = superseded(trials, stored)
    if replaced:
        store.unlink(study.study_id, replaced)
        console.print(f"{len(replaced)} fine-tuning trial(s) planned from other weights files (re-saved or "
                      f"changed) were replaced in this study; their results stay in the store")
    new = store.add_trials(study.study_id, [(t.trial_id, t.to_dict()) for t in trials])
    return run_registered(args, store, study, new)


def _expand(study, found, args) -> list:
    if study.task == "classification":
        from bocb.data import load_dataset
        from bocb.transfer.study import expand_classification

        # Loading the data up front makes missing data fail before any trial, as `bocb run` does.
        dataset = load_dataset(study.data, cache_dir=args.cache_dir or default_cache_dir(),
                               data_dirs=data_dirs(), download=args.download)
        return expand_classification(study, found, dataset.num_classes)
    from bocb.transfer.study import expand_coco

    return expand_coco(study, found)
