"""Study packing: aggregate images/s of N identical trials at 1, 2, 4, ... slots, in one run.

Each setting runs the same study (N ResNet-18-CIFAR trials, different seeds, the ``pytorch``
recipe) into a fresh store through the real runner and local executor, and reports

- aggregate training images/s = all trials' training images / the study's wall time;
- runner overhead per trial = 1 - training seconds / claim-to-finish seconds: what start-up,
  data loading, evaluation, checkpoints and the store cost on top of training itself (the
  issue's definition); the eval share is also shown on its own.

    python benchmarks/packing.py --data /path/to/cifar10-parquet --trials 8 --slots 1 2 4 8
    python benchmarks/packing.py --scale tiny --per-class 50 --epochs 2 --slots 1 2   # CPU check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bocb.data import load_dataset, parse_data_arg
from bocb.executors.local import LocalExecutor
from bocb.executors.worker import WorkerConfig
from bocb.runner import run_study
from bocb.spec import TrialSpec, resolve_trial
from bocb.store import SQLiteStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data", default="sample")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--scale", default="paper")
    p.add_argument("--per-class", type=int, default=None)
    p.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    data_spec = parse_data_arg(args.data)
    cache = Path(tempfile.mkdtemp(prefix="bocb-packing-cache-"))
    dataset = load_dataset(data_spec, cache_dir=cache)
    specs: list[TrialSpec] = []
    for seed in range(args.trials):
        spec = resolve_trial(args.model, "sgd_m", data=data_spec, num_classes=dataset.num_classes,
                             recipe="pytorch", epochs=args.epochs, batch_size=args.batch_size,
                             policy="cifar", scale=args.scale, seed=seed)
        if args.per_class:
            spec = TrialSpec(spec.backbone, spec.optimizer,
                             spec.recipe.with_changes(train_per_class=args.per_class), spec.data, spec.seed)
        specs.append(spec)

    results = []
    for slots in args.slots:
        work = Path(tempfile.mkdtemp(prefix=f"bocb-packing-{slots}-"))
        store = SQLiteStore(work / "store.sqlite")
        store.add_study("bench", "bench", "packing.py", {"slots": slots})
        store.add_trials("bench", [(s.trial_id, s.to_dict()) for s in specs])
        config = WorkerConfig(artifacts_dir=str(work / "artifacts"), cache_dir=str(cache), device=args.device)
        executor = LocalExecutor(config, slots=slots, devices=[args.device])
        t0 = time.time()
        run_study(store, "bench", executor)
        span = time.time() - t0
        rows = store.trials("bench")
        records = [store.record(r["trial_id"]) for r in rows]
        images = sum(r2["images"] for rec in records for r2 in rec["epochs"])
        overhead = [1 - r["seconds_train"] / (r["finished"] - r["started"]) for r in rows]
        eval_share = [r["seconds_eval"] / (r["finished"] - r["started"]) for r in rows]
        result = {
            "slots": slots, "trials": len(rows), "status": sorted({r["status"] for r in rows}),
            "aggregate_images_per_s": round(images / span, 1), "study_seconds": round(span, 1),
            "runner_overhead_mean": round(sum(overhead) / len(overhead), 4),
            "runner_overhead_max": round(max(overhead), 4),
            "eval_share_mean": round(sum(eval_share) / len(eval_share), 4),
            "device": records[0].get("device", {}).get("name"),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        store.close()
    base = results[0]["aggregate_images_per_s"]
    for r in results:
        print(f"{r['slots']} slot(s): {r['aggregate_images_per_s']:.0f} img/s aggregate "
              f"({r['aggregate_images_per_s'] / base:.2f}x of {results[0]['slots']} slot), runner overhead "
              f"{100 * r['runner_overhead_mean']:.1f}% mean / {100 * r['runner_overhead_max']:.1f}% max per trial "
              f"(of which eval {100 * r['eval_share_mean']:.1f}%)")


if __name__ == "__main__":
    main()
