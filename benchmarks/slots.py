"""Slot utilisation of `bocb run --slots N` on tiny trials: how much of each slot's time is training.

    python benchmarks/slots.py                 # 12 tiny trials, 2 slots (about a minute on 2 cores)
    python benchmarks/slots.py --trials 24 --slots 2

Tiny trials (a scaled-down ResNet-18, one epoch on 200 images of the bundled CIFAR-10 sample)
are where start-up costs show: a worker that imported torch, timm and the trainer per trial
spent most of its time starting (68-75 % of slot time in an earlier measurement). bocb's workers
now fork from a server that imported them once and run trial after trial
(bocb.executors.local).

Run through the real command line in a subprocess, then read from the store:

- **utilisation**: the trials' own wall seconds (the trainer's ``seconds_wall``: data on the
  device, training, evaluation) over slots x the command's wall time;
- **first trial**: seconds from the command's start to the first trial's claim;
- **per-trial overhead**: a trial's claim-to-finish time minus its own wall seconds (handing the
  trial to a worker, loading the data once per worker, the weight snapshot, the store writes).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIMIZERS = ["SGD-M", "AdamW", "LAMB", "LARS", "AdaGrad", "RMSProp"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12, help="tiny trials to run (a multiple of 6 optimizers)")
    p.add_argument("--slots", type=int, default=2)
    args = p.parse_args()
    if args.trials < 1 or args.trials % len(OPTIMIZERS):
        p.error(f"--trials must be a positive multiple of {len(OPTIMIZERS)} (the optimizers), got {args.trials}")
    seeds = args.trials // len(OPTIMIZERS)
    with tempfile.TemporaryDirectory(prefix="bocb-slots-") as tmp:
        folder = Path(tmp)
        study = folder / "slots.toml"
        study.write_text(
            f'backbones = ["R-18"]\noptimizers = {json.dumps(OPTIMIZERS)}\n[study]\nname = "slots-bench"\n'
            f'tuning = "fixed"\ndata = "sample"\ntier = "smoke"\nseeds = {list(range(seeds))}\n'
            "epochs = 1\ntrain_per_class = 20\ntest_per_class = 10\n")
        store = folder / "store.sqlite"
        env = {**os.environ, "BOCB_CACHE_DIR": str(folder / "cache")}
        start = time.time()
        done = subprocess.run([sys.executable, "-m", "bocb", "run", str(study), "--store", str(store),
                               "--slots", str(args.slots)], capture_output=True, text=True, env=env)
        wall = time.time() - start
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        with sqlite3.connect(store) as db:
            rows = db.execute("SELECT started, finished, seconds_wall FROM trials WHERE status = 'done'").fetchall()
    own = sum(r[2] for r in rows)
    overhead = [(r[1] - r[0]) - r[2] for r in rows]
    figures = {
        "trials": len(rows), "slots": args.slots, "wall_s": round(wall, 1),
        "utilisation": round(own / (args.slots * wall), 3),
        "first_trial_s": round(min(r[0] for r in rows) - start, 1),
        "trial_own_s_median": round(statistics.median(r[2] for r in rows), 2),
        "overhead_per_trial_s_median": round(statistics.median(overhead), 2),
        "load": os.getloadavg()[0],
    }
    print(f"{figures['trials']} tiny trials, {args.slots} slots: {wall:.1f} s wall; the trials' own time fills "
          f"{figures['utilisation']:.0%} of slot time; first trial claimed after {figures['first_trial_s']} s; "
          f"median trial {figures['trial_own_s_median']} s of its own plus {figures['overhead_per_trial_s_median']} s "
          f"around it (1-min load average at the end: {figures['load']:.2f})")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
