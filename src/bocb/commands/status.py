"""``bocb status``, ``bocb plan`` and ``bocb export``: read the store (and a study file)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bocb.commands.common import add_data_args, data_dirs, default_cache_dir, open_existing_store
from bocb.store import DEFAULT_STORE, STATUSES, Store

# Effective training throughput used for the plan's time estimate, from a measurement: a CIFAR
# ResNet-18 (0.56 GFLOPs forward) trains at 18.6k img/s on one H100 with bf16 and data on the GPU
# (issue #3's anchor), i.e. 0.56e9 * 3 * 18.6e3 = 31 TFLOP/s of forward+backward work.
EFFECTIVE_FLOPS = 31e12


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("status", help="trial counts by status, for a study or the whole store")
    s.add_argument("study", nargs="?", type=Path, help="study file (default: the whole store)")
    s.add_argument("--store", default=DEFAULT_STORE)
    s.add_argument("--json", action="store_true", help="last line: one JSON object of counts")
    s.set_defaults(func=status)

    p = sub.add_parser("plan", help="a study's trial count, compute estimate and what is done")
    p.add_argument("study", type=Path)
    p.add_argument("--store", default=DEFAULT_STORE)
    add_data_args(p, data=False)
    p.set_defaults(func=plan)

    e = sub.add_parser("export", help="one row per trial as CSV or Parquet")
    e.add_argument("--store", default=DEFAULT_STORE)
    e.add_argument("--study", type=Path, help="only this study file's trials")
    e.add_argument("--format", choices=("csv", "parquet"), default="csv")
    e.add_argument("--out", type=Path, help="output file (CSV default: stdout)")
    e.set_defaults(func=export)


def _study_id(path: Path | None) -> tuple[str | None, str | None]:
    if path is None:
        return None, None
    from bocb.commands.common import load_any_study

    study = load_any_study(path)
    return study.study_id, study.name


def status(args: argparse.Namespace) -> int:
    study_id, name = _study_id(args.study)
    with open_existing_store(args.store) as store:
        counts = store.counts(study_id)
        tuning = _tuning_rows(store, args.study)
    if args.json:
        extra = {"tuning": tuning} if tuning is not None else {}
        print(json.dumps({"study": name, "study_id": study_id, **counts, **extra}))
        return 0
    table = Table(title=escape(f"{name or 'all studies'} in {args.store}"))
    for s in (*STATUSES, "total"):
        table.add_column(s, justify="right")
    table.add_row(*[str(counts[s]) for s in (*STATUSES, "total")])
    Console().print(table)
    if tuning is not None:
        from bocb.tuning.adapter import states
        from bocb.tuning.views import tuning_table

        with open_existing_store(args.store) as store:
            Console().print(tuning_table(states(store, _load(args.study))))
    return 0


def _load(path: Path):
    from bocb.study import load_study

    return load_study(path)


def _tuning_rows(store: Store, path: Path | None) -> list[dict] | None:
    """Per-pair tuning state of an adaptive study (None for any other study or the whole store)."""
    from bocb.transfer.study import is_transfer_file

    if path is None or is_transfer_file(path):
        return None
    study = _load(path)
    if study.tuning != "adaptive":
        return None
    from bocb.tuning.adapter import states
    from bocb.tuning.views import state_rows

    return state_rows(states(store, study))


def plan(args: argparse.Namespace) -> int:
    from bocb.commands.study_setup import prepare
    from bocb.compute import trial_flops
    from bocb.transfer.study import is_transfer_file

    if is_transfer_file(args.study):
        raise ValueError(f"{args.study} is a transfer study: its trials depend on the pre-trained models in "
                         f"the store; `bocb plan` sizes pre-training studies (plan those, then `bocb transfer`)")
    prepared = prepare(args.study, args.cache_dir or default_cache_dir(), data_dirs(), args.download,
                       require_data=False)
    study = prepared.study
    if study.tuning == "adaptive":
        from bocb.tuning.plan import print_plan

        print_plan(prepared, EFFECTIVE_FLOPS)
        return 0
    done: dict[str, str] = {}
    if Path(args.store).exists():
        with open_existing_store(args.store) as store:
            done = {r["trial_id"]: r["status"] for r in store.trials()}
    flops = 0.0
    per_backbone: dict[str, list[float]] = {}
    for spec in prepared.trials:
        f = trial_flops(spec, prepared.train_images, prepared.test_images, prepared.num_classes)
        flops += f
        per_backbone.setdefault(spec.backbone.short, []).append(f)
    finished = sum(1 for t in prepared.trials if done.get(t.trial_id) in ("done", "diverged"))
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=escape(f"plan: {study.name} ({study.study_id}), {study.tuning} tuning, tier {study.tier}"))
    for col in ("backbone", "trials", "PFLOP"):
        table.add_column(col, justify="right")
    for bb, fs in per_backbone.items():
        table.add_row(bb, str(len(fs)), f"{sum(fs) / 1e15:.3f}")
    console.print(table)
    console.print(escape(
        f"{len(prepared.trials)} trials ({len(prepared.skipped)} pairs skipped), "
        f"{finished} already finished in {args.store}; compute {flops / 1e15:.2f} PFLOP "
        f"= about {flops / EFFECTIVE_FLOPS / 3600:.1f} GPU-hours at {EFFECTIVE_FLOPS / 1e12:.0f} TFLOP/s "
        f"(one H100, bf16, measured on CIFAR ResNet-18; small models pack several per GPU)"
    ))
    reasons: dict[str, int] = {}
    for _, _, reason in prepared.skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        console.print(escape(f"skipped ({n}): {reason}"))
    return 0


def export(args: argparse.Namespace) -> int:
    import pandas as pd

    from bocb.commands.common import output_file

    if args.out is not None:
        output_file(args.out, "--out")
    study_id, _ = _study_id(args.study)
    with open_existing_store(args.store) as store:
        rows = store.trials(study_id)
    frame = pd.DataFrame(rows)
    if args.format == "parquet":
        if args.out is None:
            raise ValueError("--format parquet needs --out FILE")
        frame.to_parquet(args.out, index=False)
    elif args.out is None:
        frame.to_csv(sys.stdout, index=False)
    else:
        frame.to_csv(args.out, index=False)
    return 0
