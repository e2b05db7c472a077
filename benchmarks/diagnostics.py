"""Weight-diagnostics speed (issue 6): seconds per snapshot on one thread, and the pool's gain.

Prints, measured in this one run:
- per model (CIFAR ResNet-18 and ResNet-50 at paper scale, 10 classes): seconds for one
  snapshot's ``layer_metrics`` with one BLAS and one torch thread (best of ``--repeats``), for
  each conv matricisation;
- the same snapshot with every thread the machine has (BLAS free to use them all);
- ``--snapshots N`` snapshots done by ``bocb.diagnose``'s spawned pool (one thread per worker)
  against the same N done one after another in this process with free threads.

Usage: ``python benchmarks/diagnostics.py [--repeats 3] [--snapshots 4] [--workers 2]``
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import time

import torch
from threadpoolctl import threadpool_limits

from bocb.diagnostics import layer_metrics
from bocb.zoo import init_backbone, resolve_backbone


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    return init_backbone(resolve_backbone(name, num_classes=10, policy="cifar", scale="paper"), seed)


def _time(model: torch.nn.Module, conv: str, repeats: int, threads: int | None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if threads is None:
            t0 = time.perf_counter()
            layer_metrics(model, conv=conv)
        else:
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                t0 = time.perf_counter()
                layer_metrics(model, conv=conv)
        best = min(best, time.perf_counter() - t0)
    return best


def _one_thread() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def _pool_job(seed: int) -> float:
    t0 = time.perf_counter()
    layer_metrics(_model("R-18", seed))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--snapshots", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"{cores} CPU cores, torch {torch.__version__}")
    for name in ("R-18", "R-50"):
        model = _model(name)
        for conv in ("reshape", "slices"):
            one = _time(model, conv, args.repeats, threads=1)
            free = _time(model, conv, args.repeats, threads=None)
            print(f"{name:5s} conv={conv:8s} one thread {one:6.2f} s/snapshot   all threads {free:6.2f} s   "
                  f"ratio {free / one:5.2f}x")
    # Pool vs sequential: N R-18 snapshots (build + metrics each).
    t0 = time.perf_counter()
    for seed in range(args.snapshots):
        _pool_job(seed)
    sequential = time.perf_counter() - t0
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_one_thread) as pool:
        list(pool.map(_pool_job, range(args.snapshots)))
    pooled = time.perf_counter() - t0
    print(f"{args.snapshots} R-18 snapshots: sequential (free threads) {sequential:.1f} s, "
          f"pool of {args.workers} x 1 thread {pooled:.1f} s (incl. worker start-up), "
          f"speed-up {sequential / pooled:.2f}x")


if __name__ == "__main__":
    main()
