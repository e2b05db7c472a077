"""What an executor runs for one trial, in whatever process it chose: data, trial, record.

After a trial that kept its final weights, the worker measures them (weight diagnostics, one BLAS
thread) and hands the snapshot back inside the record; the runner stores both at once.

Kept apart from the executors so the local process pool and Ray run exactly the same code.
Datasets are loaded once per worker process and reused across its trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bocb.data import Dataset, DatasetSpec, load_dataset
from bocb.diagnostics.snapshot import final_snapshot
from bocb.fencing import Fence, StaleClaimError
from bocb.spec import TrialSpec
from bocb.transfer.detection_trial import DetectionTrialSpec, is_detection, run_detection_trial
from bocb.trial import Progress, RunOptions, run_trial


@dataclass(frozen=True)
class WorkerConfig:
    """Where data and artifacts live, and how trials run; the same for every trial of a run."""

    artifacts_dir: str
    cache_dir: str | None = None
    data_dirs: tuple[str, ...] = ()
    download: bool = False
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    checkpoint_every: int = 1


_DATASETS: dict[str, Dataset] = {}


def _dataset(spec: DatasetSpec, config: WorkerConfig) -> Dataset:
    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(
            spec, cache_dir=Path(config.cache_dir) if config.cache_dir else None,
            data_dirs=[Path(d) for d in config.data_dirs], download=config.download,
        )
    return _DATASETS[key]


def execute(spec_dict: dict[str, Any], config: WorkerConfig, device: str | None = None,
            progress: Progress | None = None, claim: str | None = None) -> dict[str, Any]:
    """Run one trial (resuming from its checkpoint in ``artifacts_dir/<trial_id>`` if any).

    ``claim`` is the runner's token for this attempt (:mod:`bocb.fencing`): every file the trial
    writes is refused once another claim replaced it, and the record carries it back as
    ``record["claim"]`` so the runner can refuse a stale result too.
    Never raises for a trial's own failure: data errors become a ``failed`` record too.
    """
    record = _execute(spec_dict, config, device, progress, claim)
    record["claim"] = claim
    return record


def _fence(config: WorkerConfig, trial_id: str, claim: str | None) -> Fence | None:
    return Fence(Path(config.artifacts_dir) / trial_id, claim) if claim is not None else None


def _execute(spec_dict: dict[str, Any], config: WorkerConfig, device: str | None, progress: Progress | None,
             claim: str | None) -> dict[str, Any]:
    if is_detection(spec_dict):
        trial_id = DetectionTrialSpec.from_dict(spec_dict).trial_id
        try:
            return run_detection_trial(spec_dict, device or config.device, Path(config.artifacts_dir), progress,
                                       fence=_fence(config, trial_id, claim))
        except StaleClaimError as exc:
            return {"trial_id": trial_id, "spec": spec_dict, "status": "failed", "error": str(exc), "epochs": []}
    spec = TrialSpec.from_dict(spec_dict)
    options = RunOptions(
        device=device or config.device, precision=config.precision, compile=config.compile,
        work_dir=Path(config.artifacts_dir) / spec.trial_id, checkpoint_every=config.checkpoint_every,
        fence=_fence(config, spec.trial_id, claim),
    )
    try:
        dataset = _dataset(spec.data, config)
    except Exception as exc:  # noqa: BLE001 - a trial that cannot load its data is a failed trial
        return {"trial_id": spec.trial_id, "spec": spec_dict, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}", "epochs": []}
    record = run_trial(spec, dataset, options, progress)
    weights = (record.get("artifacts") or {}).get("final_weights")
    if weights:
        record["diagnostics"] = final_snapshot(spec.trial_id, weights, spec_dict)
    return record
