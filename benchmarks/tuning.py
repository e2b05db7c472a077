"""Adaptive tuning against the full grid, on real images, in one run (CPU by default).

    python benchmarks/tuning.py                      # 3 tiny backbones x 3 optimizers, 3 epochs, 100 images
    python benchmarks/tuning.py --data PARQUET_DIR --epochs 9 --rungs 3 --train-per-class 50 --test-per-class 50
    python benchmarks/tuning.py --out DIR --tag other --eta 4   # another tuner setting against the same grid

Pair by pair, both arms run the same study (CIFAR-10 images, tiny models, one seed) through
`bocb run`'s own runner and local executor, into one store: first every point of each optimizer's
5 x 5 grid at full budget, then `tuning = "adaptive"`. The lattice holds the grid's points, so an
adaptive proposal that is a grid point is the very same trial (same id) and is not trained twice.
The tuner reads such a trial only up to the rungs it asked for (as if it had paused it there), and
its epochs are charged to the adaptive arm as those rungs: what it would have cost alone (training
is deterministic and a paused-then-resumed trial equals an uninterrupted one).

Printed per pair: the grid's best setting and score, the adaptive choice and its score (both:
final-epoch test top-1 at full budget), the epochs each arm spent, how many grid settings lie
within 0.5 points of the grid's best (how sharp its optimum is) and where the adaptive choice ranks
in the grid; then the share of pairs where adaptive picks the grid's best or a setting within 0.5
points of it, and the epoch ratio (the target: >= 80 % of pairs at <= 40 % of the grid's epochs).
The last line is JSON.

Sizing: the defaults are the smallest that still train (about 1 s an epoch per tiny model on an
idle core). The bundled sample has 10 test images per class, so its accuracies move in whole
points; a CIFAR-10 Parquet folder (``--data``) gives more test images. At 3 epochs with 2 rungs
the first rung is a third of the schedule, so the epoch ratio is far worse than at the paper's
200 epochs (3 rungs: 22, 67, 200); the second command (9 epochs; rungs at 1, 3, 9) has the
paper's proportions, and takes about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bocb.study_setup import prepare, register
from bocb.executors.local import LocalExecutor
from bocb.executors.worker import WorkerConfig
from bocb.runner import run_study
from bocb.store import SQLiteStore
from bocb.tuning.adapter import Tuner, states

STUDY = """
[study]
name = "tuning-bench-{tuning}{tag}-{pair}"
data = "{data}"
tier = "smoke"
tuning = "{tuning}"
seeds = [0]
epochs = {epochs}
batch_size = {batch}
train_per_class = {train}
test_per_class = {test}
{backbones}
{optimizers}
{extra}
"""


def _study(out: Path, tuning: str, args: argparse.Namespace, backbone: str, optimizer: str) -> Path:
    tag = f"-{args.tag}" if args.tag and tuning == "adaptive" else ""
    text = STUDY.format(
        tuning=tuning, tag=tag,
        pair=f"{backbone}-{optimizer}", data=args.data, epochs=args.epochs, batch=args.batch_size,
        train=args.train_per_class, test=args.test_per_class,
        backbones=f'\n[[backbones]]\nname = "{backbone}"\npolicy = "cifar"\n',
        optimizers=f'\n[[optimizers]]\nname = "{optimizer}"\n',
        extra=f"\n[tuning]\nrungs = {args.rungs}\neta = {args.eta}\n" if tuning == "adaptive" else "",
    )
    path = out / f"{tuning}{tag}-{backbone}-{optimizer}.toml"
    path.write_text(text)
    return path


def _run(store: SQLiteStore, path: Path, args: argparse.Namespace, out: Path, adaptive: bool):
    prepared = prepare(path, out / "cache", [], False)
    register(store, prepared)
    config = WorkerConfig(artifacts_dir=str(out / "artifacts"), cache_dir=str(out / "cache"), device=args.device)
    executor = LocalExecutor(config, slots=args.slots, devices=[args.device])
    tuner = Tuner(store, prepared.study, prepared.num_classes) if adaptive else None
    t0 = time.time()
    run_study(store, prepared.study.study_id, executor, propose=tuner.propose if tuner else None)
    return prepared.study, time.time() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["DeiT-S", "AlexNet", "CNX-T"])
    p.add_argument("--optimizers", nargs="+", default=["SGD-M", "AdamW", "RMSProp"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rungs", type=int, default=2)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--train-per-class", type=int, default=10)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--data", default="sample",
                   help="as a study's data: sample (bundled, 10 test images per class), or a CIFAR-10 Parquet "
                        "folder for more test images (less noise)")
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--tag", default="",
                   help="names the adaptive studies apart: rerun the adaptive arm (another tuner setting) against "
                        "the grid already in --out's store, whose trials are not trained again")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("bocb-results/tuning-bench"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(args.out / "store.sqlite")
    rows: list[dict] = []
    print(f"{'pair':<18} {'grid best (lr, wd): top1':<32} {'adaptive (lr, wd): top1':<32} {'ok':<4} "
          f"epochs grid/adaptive", flush=True)
    # Pair by pair (grid, then adaptive), so that a run cut short still compares whole pairs.
    for backbone in args.backbones:
        for optimizer in args.optimizers:
            grid, grid_s = _run(store, _study(args.out, "grid", args, backbone, optimizer), args, args.out, False)
            adaptive, adaptive_s = _run(store, _study(args.out, "adaptive", args, backbone, optimizer), args,
                                        args.out, True)
            r = _compare(store, grid, adaptive)
            r.update(grid_seconds=round(grid_s), adaptive_seconds=round(adaptive_s))
            rows.append(r)
            print(f"{r['pair']:<18} {r['grid_lr']:g}, {r['grid_wd']:g}: {r['grid_top1']:.2f}".ljust(51)
                  + f"{r['adaptive_lr']:g}, {r['adaptive_wd']:g}: {r['adaptive_top1']:.2f}".ljust(33)
                  + f"{'yes' if r['within_0.5'] else 'no':<4} {r['grid_epochs']}/{r['adaptive_epochs']} "
                  f"({r['state']}; {r['adaptive_trials']} candidates; grid rank {r['grid_rank'] or '-'}, "
                  f"{r['grid_near_best']} grid points within 0.5; wall {grid_s:.0f} s / {adaptive_s:.0f} s)",
                  flush=True)
    hits = sum(r["within_0.5"] for r in rows)
    grid_epochs = sum(r["grid_epochs"] for r in rows)
    adaptive_epochs = sum(r["adaptive_epochs"] for r in rows)
    share, ratio = hits / len(rows), adaptive_epochs / grid_epochs
    print(f"adaptive picks the grid's best or within 0.5 points in {hits}/{len(rows)} pairs ({share:.0%}), "
          f"spending {adaptive_epochs} of the grid's {grid_epochs} epochs ({ratio:.0%}); adaptive wall time "
          f"excludes its grid points, trained by the grid arm")
    print(json.dumps({"pairs": len(rows), "hits": hits, "share": share, "grid_epochs": grid_epochs,
                      "adaptive_epochs": adaptive_epochs, "epoch_ratio": ratio, "rows": rows}))
    store.close()


def _compare(store: SQLiteStore, grid, adaptive) -> dict:
    """One pair's row: the grid's best and the adaptive choice, with the epochs each spent."""
    trained = store.trained_epochs(grid.study_id)
    mine = [r for r in store.trials(grid.study_id) if r["status"] in ("done", "diverged")]
    best = max(mine, key=lambda r: (r["final_top1"] or 0.0, -r["lr"]))
    rungs, _ = store.tuning_rows(adaptive.study_id, [])
    all_trained = store.trained_epochs(adaptive.study_id)
    (s,) = states(store, adaptive)
    asked: dict[str, int] = {}
    for r in rungs:
        asked[r["trial_id"]] = max(asked.get(r["trial_id"], 0), r["epochs"])
    score = s.decision.best_score if s.decision.best_score is not None else 0.0
    grid_best = best["final_top1"] or 0.0
    # How sharp the grid's own optimum is: grid settings within 0.5 points of its best (1 = a clear
    # winner; many = the best is one of several the test set cannot tell apart).
    near = sum((r["final_top1"] or 0.0) >= grid_best - 0.5 for r in mine)
    # Where the adaptive choice ranks in the grid, when it is a grid point (1 = the grid's best).
    ranked = sorted(mine, key=lambda r: (-(r["final_top1"] or 0.0), r["lr"]))
    rank = next((i + 1 for i, r in enumerate(ranked)
                 if (r["lr"], r["weight_decay"]) == (s.best_lr, s.best_wd)), None)
    return {"pair": s.key, "grid_lr": best["lr"], "grid_wd": best["weight_decay"],
            "grid_top1": best["final_top1"] or 0.0, "adaptive_lr": s.best_lr, "adaptive_wd": s.best_wd,
            "adaptive_top1": score, "state": s.decision.state,
            "within_0.5": bool(score >= grid_best - 0.5), "grid_near_best": near, "grid_rank": rank,
            "grid_epochs": sum(trained.get(r["trial_id"], 0) for r in mine),
            "adaptive_epochs": sum(min(e, all_trained.get(t, 0)) for t, e in asked.items()),
            "adaptive_trials": len(asked)}

if __name__ == "__main__":
    main()
