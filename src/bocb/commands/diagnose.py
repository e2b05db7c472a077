"""``bocb diagnose``: per-layer weight metrics for a study in the store, or for one checkpoint.

``bocb diagnose STUDY.toml`` measures what the study's store lacks: each backbone's random
initialisation, and final weights of trials that finished without a snapshot; ``--force``
recomputes everything. ``bocb diagnose --checkpoint FILE`` measures one weights file (a trial's
``final.safetensors`` names its own backbone; other state dicts need ``--backbone``) and prints or
writes the per-layer table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bocb.commands.common import add_json_arg, add_store_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="per-layer weight metrics (alpha, entropy, L2, PCA energy)")
    p.add_argument("study", nargs="?", type=Path, help="study file whose snapshots to measure")
    add_store_arg(p)
    add_json_arg(p, "the counts of a study's measured snapshots, or --checkpoint's layer table")
    p.add_argument("--force", action="store_true", help="recompute snapshots already in the store")
    p.add_argument("--workers", type=int, default=None,
                   help="processes, one BLAS thread each (default: the CPU count)")
    p.add_argument("--checkpoint", type=Path, help="measure this weights file (safetensors) instead")
    p.add_argument("--backbone", help="backbone of a checkpoint without a bocb spec (e.g. R-18)")
    p.add_argument("--num-classes", type=int, default=10, help="its head size (default 10)")
    p.add_argument("--policy", default=None, help="its input policy (default: the backbone's)")
    p.add_argument("--scale", default="paper", help="its scale: paper or tiny (default paper)")
    p.add_argument("--out", type=Path, help="CSV for --checkpoint's table (default: print it)")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        return _checkpoint(args)
    if args.study is None:
        raise ValueError("give a study file (bocb diagnose STUDY.toml) or --checkpoint FILE")
    from bocb.commands.common import open_existing_store
    from bocb.commands.common import load_any_study
    from bocb.diagnose import weight_conv

    study = load_any_study(args.study)
    with open_existing_store(args.store, readonly=False) as store:
        measured = diagnose_study(store, study.study_id, workers=args.workers, force=args.force,
                                  conv=weight_conv(study), console=Console(stderr=True) if args.json else None)
        errors = [s for s in measured if s.get("error")]
    print(json.dumps({"study": study.name, "study_id": study.study_id, "measured": len(measured),
                      "errors": len(errors)}), flush=True)
    return 0


def diagnose_study(store, study_id: str, workers: int | None = None, force: bool = False,
                   console: Console | None = None, conv: str | None = None) -> list[dict]:
    """Measure the study's missing snapshots (:func:`bocb.api.measure_snapshots`) with a progress
    bar; returns the new snapshots."""
    from bocb.api import measure_snapshots
    from bocb.commands.run import RunDisplay

    display = RunDisplay(console or Console())
    try:
        return measure_snapshots(store, study_id, workers=workers, force=force, conv=conv, progress=display)
    finally:
        display.stop()


def _checkpoint(args: argparse.Namespace) -> int:
    from bocb.diagnostics.snapshot import load_model, measure, read_spec
    from bocb.zoo import BackboneSpec, resolve_backbone

    from bocb.commands.common import input_file

    path = input_file(args.checkpoint, "checkpoint")
    if args.out is not None and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory: give a CSV file name")
    try:
        spec = read_spec(path)
    except Exception as exc:  # noqa: BLE001 - empty, truncated, pickle, garbage: one line naming the file
        raise ValueError(f"{path} is not a readable safetensors weights file "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if args.backbone:
        backbone = resolve_backbone(args.backbone, num_classes=args.num_classes, policy=args.policy,
                                    scale=args.scale)
    elif spec is not None:
        backbone = BackboneSpec.from_dict(spec["backbone"])
    else:
        raise ValueError(f"{path} is not a bocb trial's final weights: name its network with --backbone")
    import pandas as pd

    layers, seconds = measure(load_model(path, backbone))
    frame = pd.DataFrame(layers)
    if args.json:
        print(frame.to_json(orient="records"))
    elif args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        Console().print(escape(f"{len(frame)} layers of {backbone.short} in {seconds:.2f} s -> {args.out}"))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
            print(frame.to_string(index=False))
        print(f"# {len(frame)} layers of {backbone.short} in {seconds:.2f} s (one thread)")
    return 0
