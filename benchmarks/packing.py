"""Study packing: aggregate images/s of N identical trials at 1, 2, 4, ... slots, in one run.

Each setting runs the same study (N trials of one model, different seeds, the ``pytorch`` recipe)
into a fresh store through the real runner and executor (``local`` worker processes, or ``ray``
tasks with 1/slots of a GPU each), and reports

- aggregate training images/s = all trials' training images / the study's wall time;
- runner overhead per trial = 1 - (training + evaluation seconds) / claim-to-finish seconds, from
  the store's per-trial timings: what start-up, data loading onto the device, model building,
  checkpoints, the weight snapshot and the store cost on top of the trial's own work; the
  evaluation share is shown on its own. A slot's first trial also carries that worker's start-up
  (importing torch, creating the CUDA context, loading the dataset), so with few trials per slot
  the overhead is mostly start-up, paid once per slot in a real study;
- the most trials that were training at once, from each trial's own run time ending at its
  finish (``finished - seconds_wall``, which leaves out a Ray task's wait for its share of a GPU
  and a worker's start-up), so "N slots" is seen to mean N trials running, not N queued.

The first setting also pays the workers' dataset decode unless ``--cache-dir`` already holds it.

    python benchmarks/packing.py --data /path/to/cifar10-parquet --trials 8 --slots 1 2 4 8
    python benchmarks/packing.py --executor ray --slots 2 --trials 2     # Ray, half a GPU per trial
    python benchmarks/packing.py --scale tiny --per-class 50 --epochs 2 --slots 1 2   # CPU check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bocb.data import load_dataset, parse_data_arg
from bocb.executors.worker import WorkerConfig
from bocb.runner import run_study
from bocb.spec import TrialSpec, resolve_trial
from bocb.store import SQLiteStore
from bocb.trial import resolve_device


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals that overlap at one moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def make_executor(kind: str, config: WorkerConfig, slots: int, device: str):
    if kind == "ray":
        from bocb.executors.ray_executor import RayExecutor

        return RayExecutor(config, slots=slots)
    from bocb.executors.local import LocalExecutor

    return LocalExecutor(config, slots=slots, devices=[device])


def run_setting(specs: list[TrialSpec], slots: int, executor_kind: str, device: str, cache: Path) -> dict[str, Any]:
    """Run ``specs`` with ``slots`` trials at once into a fresh store; the setting's figures.

    The store and the trials' checkpoints live in a temporary folder, removed afterwards (8
    ResNet-18 trials leave about 1 GB).
    """
    with tempfile.TemporaryDirectory(prefix=f"bocb-packing-{slots}-") as tmp:
        return _run_setting(specs, slots, executor_kind, device, cache, Path(tmp))


def _run_setting(specs: list[TrialSpec], slots: int, executor_kind: str, device: str, cache: Path,
                 work: Path) -> dict[str, Any]:
    store = SQLiteStore(work / "store.sqlite")
    store.add_study("bench", "bench", "packing.py", {"slots": slots, "executor": executor_kind})
    store.add_trials("bench", [(s.trial_id, s.to_dict()) for s in specs])
    config = WorkerConfig(artifacts_dir=str(work / "artifacts"), cache_dir=str(cache), device=device)
    executor = make_executor(executor_kind, config, slots, device)
    t0 = time.time()
    run_study(store, "bench", executor)  # shuts the executor down when done
    span = time.time() - t0
    rows = store.trials("bench")
    records = [store.record(r["trial_id"]) or {} for r in rows]
    store.close()
    images = sum(e["images"] for rec in records for e in rec.get("epochs", []))
    timed = [r for r in rows if r["finished"] and r["started"] and r["seconds_train"] is not None]
    spans = [r["finished"] - r["started"] for r in timed]
    overhead = [1 - (r["seconds_train"] + (r["seconds_eval"] or 0)) / s for r, s in zip(timed, spans)]
    eval_share = [(r["seconds_eval"] or 0) / s for r, s in zip(timed, spans)]
    devices = sorted({(rec.get("device") or {}).get("device", "?") for rec in records})

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

    return {
        "executor": executor_kind, "slots": slots, "trials": len(rows),
        "status": sorted({r["status"] for r in rows}),
        "errors": sorted({r["error"] for r in rows if r["error"]})[:3],
        "aggregate_images_per_s": round(images / span, 1), "study_seconds": round(span, 1),
        "runner_overhead_mean": mean(overhead),
        "runner_overhead_seconds_mean": mean([o * s for o, s in zip(overhead, spans)]), "runner_overhead_max": round(max(overhead), 4) if overhead else None,
        "eval_share_mean": mean(eval_share),
        "most_at_once": most_at_once([(r["finished"] - r["seconds_wall"], r["finished"])
                                      for r in timed if r["seconds_wall"]]),
        "precision": sorted({rec.get("precision", "?") for rec in records}),
        "device": (records[0].get("device") or {}).get("name") if records else None, "devices": devices,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data", default="sample")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--scale", default="paper")
    p.add_argument("--per-class", type=int, default=None, help="train images per class (default: all)")
    p.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all)")
    p.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-dataset cache (default: a temp dir, removed)")
    p.add_argument("--json-out", type=Path, default=None, help="append each setting's JSON line to this file")
    args = p.parse_args()

    data_spec = parse_data_arg(args.data)
    scratch = tempfile.TemporaryDirectory(prefix="bocb-packing-cache-")
    cache = args.cache_dir or Path(scratch.name)
    dataset = load_dataset(data_spec, cache_dir=cache)
    subsets = {k: v for k, v in (("train_per_class", args.per_class), ("test_per_class", args.test_per_class)) if v}
    specs: list[TrialSpec] = []
    for seed in range(args.trials):
        spec = resolve_trial(args.model, "sgd_m", data=data_spec, num_classes=dataset.num_classes,
                             recipe="pytorch", epochs=args.epochs, batch_size=args.batch_size,
                             policy="cifar", scale=args.scale, seed=seed,
                             precision="bf16" if resolve_device(args.device).type == "cuda" else "fp32")
        if subsets:
            spec = TrialSpec(spec.backbone, spec.optimizer, spec.recipe.with_changes(**subsets), spec.data, spec.seed)
        specs.append(spec)

    results = []
    for slots in args.slots:
        result = run_setting(specs, slots, args.executor, args.device, cache)
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json_out:
            with args.json_out.open("a") as f:
                f.write(json.dumps(result) + "\n")
    scratch.cleanup()
    base = results[0]["aggregate_images_per_s"] or float("nan")
    for r in results:
        print(f"{r['executor']} {r['slots']} slot(s): {r['aggregate_images_per_s']:.0f} img/s aggregate "
              f"({r['aggregate_images_per_s'] / base:.2f}x of {results[0]['slots']} slot), "
              f"{r['most_at_once']} at once, runner overhead {100 * (r['runner_overhead_mean'] or 0):.1f}% mean / "
              f"{100 * (r['runner_overhead_max'] or 0):.1f}% max per trial (evaluation {100 * (r['eval_share_mean'] or 0):.1f}%)")


if __name__ == "__main__":
    main()
