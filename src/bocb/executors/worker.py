"""What an executor runs for one trial, in whatever process it chose: data, trial, record.

After a trial that kept its final weights, the worker measures them (weight diagnostics, one BLAS
thread) and hands the snapshot back inside the record; the runner stores both at once.

Kept apart from the executors so the local process pool and Ray run exactly the same code. The
worker never names a task: the spec's task (:mod:`bocb.tasks`) runs it. Datasets are loaded once
per worker process and reused across its trials (each task module keeps its own cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bocb.engine import Progress
from bocb.tasks import task_of


@dataclass(frozen=True)
class WorkerConfig:
    """Where data and artifacts live, and how trials run; the same for every trial of a run."""

    artifacts_dir: str
    cache_dir: str | None = None
    data_dirs: tuple[str, ...] = ()
    download: bool = False
    device: str = "auto"
    compile: bool = False
    checkpoint_every: int = 1
    weight_conv: str = "slices"  # the study's conv matricisation for weight diagnostics
    plugins: tuple[str, ...] = ()  # user modules to import before a trial (bocb.plugins)


def execute(spec_dict: dict[str, Any], config: WorkerConfig, device: str | None = None,
            progress: Progress | None = None, claim: str | None = None) -> dict[str, Any]:
    """Run one trial (resuming from its checkpoint in ``artifacts_dir/<trial_id>`` if any) with
    its task's function (:mod:`bocb.tasks`). Never raises for a trial's own failure.

    ``claim`` is the runner's token for this attempt (:mod:`bocb.fencing`): every file the trial
    writes is refused once another claim replaced it, and the record carries it back as
    ``record["claim"]`` so the runner can refuse a stale result too.
    """
    if config.plugins:  # once per process in effect: an imported module is not imported again
        from bocb.plugins import load_plugins

        try:
            load_plugins(config.plugins)
        except ValueError as err:  # the trial's failure, not the worker's: recorded, the slot lives on
            return {"trial_id": spec_dict.get("trial_id"), "spec": spec_dict, "status": "failed",
                    "error": str(err), "epochs": [], "claim": claim}
    record = task_of(spec_dict).execute(spec_dict, config, device, progress, claim)
    record["claim"] = claim
    return record
