"""Weight diagnostics for a study in the store: what is missing (or everything), in a process pool.

Trials measure their own final weights when they finish (:mod:`bocb.executors.worker`); this module
fills the rest: each backbone's random initialisation once per study (under the study's lowest
seed; not for fine-tuning trials, whose reference is their pre-trained model), and final snapshots of trials finished before diagnostics existed or recomputed on request
(``force``; a snapshot whose weights file is gone is kept, not replaced by an error). Jobs run in ``workers`` spawned processes with one BLAS and one torch thread each
(:mod:`bocb.diagnostics.snapshot`); with one worker, or one job, they run in this process. The
calling process is the store's only writer.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb.diagnostics.metrics import DEFAULT_CONV
from bocb.diagnostics.snapshot import init_snapshot, init_snapshot_id
from bocb.store import Store
from bocb.tasks import task_of
from bocb.zoo import BackboneSpec


@dataclass(frozen=True)
class Job:
    """One snapshot to measure: a trial's final weights, or a backbone's initialisation."""

    source: str  # final | init
    snapshot_id: str
    backbone: dict[str, Any]
    seed: int
    trial_id: str | None = None
    path: str | None = None
    spec: dict[str, Any] | None = None
    conv: str = DEFAULT_CONV

    def run(self) -> dict[str, Any]:
        if self.source == "final":
            return task_of(self.spec or {}).snapshot(self.trial_id, self.path, self.spec, self.conv)
        return init_snapshot(BackboneSpec.from_dict(self.backbone), self.seed, conv=self.conv)


def weight_conv(study: Any) -> str:
    """A study's conv convention for weight diagnostics (its ``weight_conv`` key; transfer studies,
    which have none, use the default)."""
    return getattr(study, "weight_conv", DEFAULT_CONV)


def plan(store: Store, study_id: str, force: bool = False, conv: str = DEFAULT_CONV) -> list[Job]:
    """The study's snapshots still to measure (all of them with ``force``), finals first.

    A snapshot measured under another conv convention than ``conv`` (the study's ``weight_conv``)
    counts as missing, so changing the convention remeasures."""
    snaps = [s for s in store.snapshots(study_id) if s["error"] is None]
    good = {s["snapshot_id"] for s in snaps}  # measured, under any convention
    done = {s["snapshot_id"] for s in snaps if s["settings"].get("conv", "reshape") == conv} if not force else set()
    jobs: list[Job] = []
    inits: dict[str, Job] = {}
    trials = store.trials(study_id)
    specs = store.specs(study_id)
    seed = min((t["seed"] for t in trials), default=0)
    for t in trials:
        if t["status"] not in ("done", "diverged"):
            continue
        spec = specs[t["trial_id"]]
        if t["trial_id"] not in done:  # the artifact look-up only where a job may follow (once per trial
            # here made every `bocb run` end with one query per trial of the study)
            path = store.artifacts(t["trial_id"]).get("final_weights")
            # Weights that cannot be found (moved, or stored as a path relative to another working
            # directory by an older bocb) never replace a good snapshot: with `force` it is kept.
            if path and t["trial_id"] in good and not Path(path).exists():
                continue
            if path:
                jobs.append(Job("final", t["trial_id"], spec["backbone"], spec["seed"], t["trial_id"], path, spec, conv))
        if spec.get("pretrained"):
            continue  # a fine-tuned model's reference is its pre-trained model, already measured
        init_id = init_snapshot_id(BackboneSpec.from_dict(spec["backbone"]), seed)
        if init_id not in done and init_id not in inits:
            inits[init_id] = Job("init", init_id, spec["backbone"], seed, conv=conv)
    return jobs + list(inits.values())


def _one_thread(plugins: tuple[str, ...] = ()) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    from bocb.plugins import load_plugins

    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    load_plugins(plugins)  # the user modules this process imported: their backbones are measured too


def run(store: Store, study_id: str, jobs: list[Job], workers: int = 1,
        on_done: Callable[[Job, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Measure ``jobs`` and store each snapshot as it arrives (random-init ones linked to the study)."""
    results = []

    def keep(job: Job, snap: dict[str, Any]) -> None:
        store.put_snapshot(snap, study_id if job.source == "init" else None)
        results.append(snap)
        if on_done:
            on_done(job, snap)

    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            keep(job, job.run())
        return results
    ctx = mp.get_context("spawn")  # fork after torch/BLAS threads exist is unsafe
    from bocb.plugins import LOADED

    with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_one_thread,
                                initargs=(tuple(LOADED),)) as pool:
        futures = {pool.submit(job.run): job for job in jobs}
        for future in cf.as_completed(futures):
            job = futures[future]
            try:
                snap = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker (e.g. killed for memory) is recorded
                snap = {"snapshot_id": job.snapshot_id, "source": job.source, "trial_id": job.trial_id,
                        "backbone": job.backbone["short"], "seed": job.seed, "path": job.path,
                        "layers": [], "error": f"{type(exc).__name__}: {exc}"}
            keep(job, snap)
    return results
