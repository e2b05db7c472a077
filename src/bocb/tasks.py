"""Tasks: what a trial trains for (classification, detection, ...), keyed by the spec's ``task``.

A task is one module that prepares its model, batches, loss and evaluation for the one training
loop (:func:`bocb.engine.train`) plus its registration here. The runner, the workers, the store,
the weight diagnostics and the analysis reach a task only through this registry: they never name
one. Entries point at their functions by ``"module:function"`` and are imported on first use, so
listing tasks costs nothing and no layer below imports the heavy task modules.

An entry's functions:

- ``execute(spec_dict, config, device, progress, claim) -> record``: run one trial in a worker
  (``config`` is the worker's :class:`bocb.executors.worker.WorkerConfig`; ``claim`` the runner's
  token, which fences every file the trial writes, :mod:`bocb.fencing`); never raises for the
  trial's own failure.
- ``snapshot(trial_id, path, spec_dict, conv) -> snapshot``: the weight diagnostics of a kept
  final weights file.

``metric`` names the headline score every row's ``score`` and the record's ``final_score`` hold
(:mod:`bocb.records`); ``unscored`` is that metric for a run whose weights
cannot be evaluated.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bocb.registry import Registry

DEFAULT_TASK = "classification"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    metric: str  # top1 | box_ap | keypoint_ap
    metric_label: str  # for reports, e.g. "top-1 (%)"
    execute_target: str  # "module:function"
    snapshot_target: str
    summary: str = ""

    def _load(self, target: str) -> Callable[..., Any]:
        module, name = target.split(":")
        return getattr(importlib.import_module(module), name)

    def execute(self, spec: dict[str, Any], config: Any, device: str | None, progress: Any,
                claim: str | None = None) -> dict[str, Any]:
        return self._load(self.execute_target)(spec, config, device, progress, claim)

    def snapshot(self, trial_id: str, path: str, spec: dict[str, Any], conv: str) -> dict[str, Any]:
        return self._load(self.snapshot_target)(trial_id, path, spec, conv)

    def unscored(self, record: dict[str, Any]) -> float:
        """The score of a run that has none (it diverged before any evaluation): chance top-1 for
        classification, 0 for the AP metrics."""
        if self.metric != "top1":
            return 0.0
        classes = (record.get("dataset") or {}).get("num_classes") or record["spec"]["backbone"]["num_classes"]
        return 100.0 / classes


TASKS: Registry[TaskInfo] = Registry("task")


def register_task(info: TaskInfo) -> TaskInfo:
    return TASKS.add(info)


def task_of(spec: dict[str, Any]) -> TaskInfo:
    """The task of a spec (as stored: a dict); specs without a ``task`` are classification."""
    return TASKS.get(spec.get("task") or DEFAULT_TASK)


register_task(TaskInfo(
    "classification", "top1", "top-1 (%)", "bocb.trial:execute", "bocb.diagnostics.snapshot:final_snapshot",
    summary="image classification: a backbone and its classifier, top-1/top-5 accuracy",
))
register_task(TaskInfo(
    "detection", "box_ap", "box AP (%)", "bocb.transfer.downstream:execute", "bocb.transfer.downstream:coco_snapshot",
    summary="RetinaNet + FPN on a pre-trained backbone, COCO box AP (pycocotools)",
))
register_task(TaskInfo(
    "pose", "keypoint_ap", "keypoint AP (%)", "bocb.transfer.downstream:execute",
    "bocb.transfer.downstream:coco_snapshot",
    summary="top-down 2D pose: SimpleBaseline heatmaps on a pre-trained backbone, COCO keypoint AP (OKS)",
))
