"""``bocb transfer STUDY.toml``: fine-tune pre-trained models with several optimizers, into the store.

The pre-trained models come from a pre-training study in the same store (run it first with
``bocb run``) or from weights files (:mod:`bocb.transfer.study`). Fine-tuning trials then run
exactly as ``bocb run`` runs trials: same executors, live view, resumption and failure handling
(:func:`bocb.api.run_transfer` does the work).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bocb.commands.run import add_run_args, run_options, show_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="run a transfer study: pre-trained models x fine-tuning optimizers")
    p.add_argument("study", type=Path, help="transfer study file (TOML, with [[pretrained]] entries)")
    add_run_args(p)


def run(args: argparse.Namespace) -> int:
    from bocb import api

    return show_run(lambda progress: api.run_transfer(args.study, args.store, progress=progress,
                                                      **run_options(args)), as_json=args.json)
