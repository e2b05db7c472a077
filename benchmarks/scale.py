"""The paper's grid on one store: every store-reading command timed at N trials (30,000 by default).

    python benchmarks/scale.py                          # 30,000 trials x 200 epoch rows (about 10-20 min)
    python benchmarks/scale.py --trials 300 --epochs 5  # the size the test suite runs

The store is built through its real interface, as runners fill it: the study (the paper's 20 x 20
pairs, grid tuning, as many backbones, optimizers and seeds as N needs) is expanded and registered
by ``bocb.study_setup``, then every trial is claimed and finished with a record shaped like a real
one (a row per epoch, the spec, library versions, timings). A share of the trials
(``--diagnostics``) also carries a final weight snapshot of 20 layers. Nothing trains: the
records' numbers are drawn, per pair, around a pair effect, so the analysis has something to find.

Timed (wall and CPU seconds, one process, on this machine): registering the study, a claim (at
the start, the middle and the end of the study; mean and worst of each batch), a finish, the end
of a run (its results table and the snapshot planner), and the commands ``plan``, ``status``,
``export`` and ``report`` (without, then with, weight diagnostics), each run in this process
through ``bocb.cli.main``. Printed: a table against the targets of the issue that asked for this
benchmark, the store's size (and per epoch row), and a last JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import resource
import time
from pathlib import Path

TARGETS = {"claim": 0.005, "plan": 5.0, "status": 3.0, "export": 3.0, "report (diagnostics)": 90.0}
TARGET_MB_AT_200 = 600.0

STUDY = """
backbones = {backbones}
optimizers = {optimizers}

[study]
name = "scale-bench"
description = "the paper's pairs on a grid, for benchmarks/scale.py (nothing trains)"
data = "cifar100"
tier = "full"
tuning = "grid"
seeds = {seeds}
"""


class Clock:
    """Wall and CPU seconds of a block, kept by name."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        wall, cpu = time.perf_counter(), _cpu()
        yield
        self.rows[name] = (time.perf_counter() - wall, _cpu() - cpu)
        print(f"  {name}: {self.rows[name][0]:.2f} s", flush=True)  # as it goes: a cut run keeps its figures


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _study(out: Path, trials: int) -> Path:
    from bocb import paper

    backbones, optimizers = paper.backbone_order(), paper.optimizer_order()
    per_seed = len(backbones) * len(optimizers) * 25
    seeds = max(1, math.ceil(trials / per_seed))
    k = len(backbones)
    while k > 1 and (k - 1) ** 2 * 25 * seeds >= trials:
        k -= 1  # the smallest square of pairs that holds N trials
    path = out / "scale-bench.toml"
    path.write_text(STUDY.format(seeds=seeds, backbones=json.dumps(backbones[:k]),
                                 optimizers=json.dumps(optimizers[:k])))
    return path


def _record(trial_id: str, spec: dict, epochs: int, rng: random.Random, pair_effect: float, snapshot: bool) -> dict:
    final = max(1.0, min(99.0, pair_effect + rng.gauss(0, 1.5)))
    rows = [{"epoch": e + 1, "train_loss": 4.6 * (1 - e / epochs) + 0.2, "test_top1": final * (e + 1) / epochs,
             "test_top5": min(100.0, final * 1.2 * (e + 1) / epochs), "test_loss": 4.0 * (1 - e / epochs) + 0.5,
             "score": final * (e + 1) / epochs, "lr": 0.1 * (1 - e / epochs), "seconds_train": 30.0,
             "seconds_eval": 2.0, "images": 50_000} for e in range(epochs)]
    record = {"spec": spec, "task": "classification", "metric": "top1", "status": "done", "error": None,
              "epochs": rows, "final_top1": rows[-1]["test_top1"], "best_top1": max(r["test_top1"] for r in rows),
              "best_epoch": epochs, "final_score": rows[-1]["score"], "best_score": max(r["score"] for r in rows),
              "seconds": {"train": 30.0 * epochs, "eval": 2.0 * epochs, "compile": 0.0, "wall": 33.0 * epochs},
              "train_images_per_second": 1666.7, "peak_memory_mb": 2048.0, "code_version": "scale-bench",
              "libraries": {"torch": "2.14.1", "timm": "1.0.31"}, "device": {"host": "bench", "device": "cuda"},
              "artifacts": {}, "selection": "test"}
    if snapshot:
        record["diagnostics"] = {
            "snapshot_id": trial_id, "trial_id": trial_id, "source": "final", "path": f"/bench/{trial_id}/final.safetensors",
            "backbone": spec["backbone"]["short"], "seed": spec["seed"], "settings": {"conv": "reshape"},
            "layers": [{"layer": f"layer{i}", "kind": "conv", "shape": (64, 576), "n_eig": 64,
                        "alpha": 2.0 + rng.random() * 4, "alpha_status": "ok", "n_tail": 20, "xmin": 0.1,
                        "entropy": 0.9, "l2": 10.0, "pca_energy": 0.5, "log_norm": 1.0, "log_spectral_norm": 0.5,
                        "stable_rank": 5.0, "alpha_weighted": 1.0, "moved": 0.3} for i in range(20)],
        }
    return record


def _command(*argv: str) -> str:
    from bocb.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"bocb {' '.join(map(str, argv))} exited {code}: {err.getvalue().strip()}")
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=30_000)
    p.add_argument("--epochs", type=int, default=200, help="epoch rows per trial (the paper's schedule: 200)")
    p.add_argument("--diagnostics", type=float, default=1.0,
                   help="share of trials with a final weight snapshot (default: every one, as a real run)")
    p.add_argument("--out", type=Path, default=Path("bocb-results/scale-bench"))
    p.add_argument("--no-report", action="store_true", help="skip the two report timings")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store_path = args.out / "store.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)

    from bocb.commands.run import _results_table
    from bocb.diagnose import plan as snapshot_plan
    from bocb.store import SQLiteStore
    from bocb.study_setup import prepare, register
    from rich.console import Console

    clock = Clock()
    study_path = _study(args.out, args.trials)
    with clock("expand"):
        prepared = prepare(study_path, None, [], False, require_data=False)
    prepared.trials[:] = prepared.trials[:args.trials]
    n = len(prepared.trials)
    store = SQLiteStore(store_path)
    with clock("register"):
        register(store, prepared)
    study_id = prepared.study.study_id

    rng = random.Random(0)
    effects: dict[tuple[str, str], float] = {}
    claims: list[tuple[int, float]] = []
    finishes: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        trial_id, spec = store.claim("bench", 3600, study_id)
        claims.append((i, time.perf_counter() - t0))
        key = (spec["backbone"]["short"], spec["optimizer"]["short"])
        effects.setdefault(key, rng.uniform(20, 80))
        record = _record(trial_id, spec, args.epochs, rng, effects[key], rng.random() < args.diagnostics)
        t0 = time.perf_counter()
        store.finish(trial_id, "bench", record)
        finishes.append(time.perf_counter() - t0)
        if (i + 1) % max(1, n // 20) == 0:
            recent = [t for _, t in claims[-max(1, n // 20):]]
            print(f"  {i + 1}/{n} trials stored; claims in this stretch: mean {sum(recent) / len(recent) * 1e3:.3f} ms, "
                  f"worst {max(recent) * 1e3:.3f} ms", flush=True)
    store.close()

    def batch(lo: float, hi: float) -> tuple[float, float]:
        times = [t for i, t in claims if lo * n <= i < max(hi * n, lo * n + 1)]
        return sum(times) / len(times), max(times)

    with clock("end of run"):
        with SQLiteStore(store_path) as s:
            Console(file=io.StringIO(), width=160).print(_results_table(s.trials(study_id)))
            snapshot_plan(s, study_id)
    with clock("plan"):
        _command("plan", study_path, "--store", store_path, "--json")
    with clock("status"):
        _command("status", study_path, "--store", store_path, "--json")
    with clock("export"):
        _command("export", study_path, "--store", store_path, "--out", args.out / "export.csv")
    if not args.no_report:
        with clock("report (diagnostics)"):
            _command("report", study_path, "--store", store_path, "--out", args.out / "report", "--json")
    size = sum(Path(f"{store_path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{store_path}{s}").exists())

    start, middle, end = batch(0, 0.01), batch(0.49, 0.51), batch(0.99, 1.0)
    rows = [("claim (start: mean, worst)", *start), ("claim (middle)", *middle), ("claim (end)", *end),
            ("finish (mean, worst)", sum(finishes) / n, max(finishes))]
    print(f"\n{n} trials x {args.epochs} epoch rows, {args.diagnostics:.0%} with a weight snapshot; store "
          f"{size / 1e6:.0f} MB ({size / max(n * args.epochs, 1):.0f} bytes per epoch row, all included)")
    print(f"{'step':<28} {'seconds':>12} {'(cpu or worst)':>16} {'target':>8}  met")
    for name, mean, worst in rows:
        target = TARGETS["claim"] if name.startswith("claim") else None
        print(f"{name:<28} {mean * 1e3:>10.3f}ms {worst * 1e3:>14.3f}ms "
              f"{'' if target is None else f'{target * 1e3:>6g}ms'}  "
              f"{'' if target is None else ('yes' if worst <= target else 'no')}")
    for name, (wall, cpu) in clock.rows.items():
        target = TARGETS.get(name)
        print(f"{name:<28} {wall:>11.2f}s {cpu:>15.2f}s {'' if target is None else f'{target:>7g}s'}  "
              f"{'' if target is None else ('yes' if wall <= target else 'no')}")
    target_mb = TARGET_MB_AT_200 * n / 30_000
    if args.epochs == 200:
        print(f"store {size / 1e6:.0f} MB at 200 epochs (target {target_mb:.0f} MB for {n} trials): "
              f"{'yes' if size / 1e6 <= target_mb else 'no'}")
    else:  # scaling the whole file by 200 / epochs also scales the per-trial part: an upper bound
        print(f"store at 200 epochs: at most {size / args.epochs * 200 / 1e6:.0f} MB (this size x 200 / "
              f"{args.epochs}; target {target_mb:.0f} MB for {n} trials)")
    print(json.dumps({"trials": n, "epochs": args.epochs, "store_mb": size / 1e6,
                      "claim_ms": {k: [v * 1e3 for v in b] for k, b in
                                   (("start", start), ("middle", middle), ("end", end))},
                      "finish_ms_mean": sum(finishes) / n * 1e3,
                      "seconds": {k: {"wall": w, "cpu": c} for k, (w, c) in clock.rows.items()}}))


if __name__ == "__main__":
    main()
