"""Typed result records: what one trial's run hands to the store, field by field.

A run (:func:`bocb.engine.train` and the task around it) builds its result as a plain dict, the
form that crosses process boundaries (pipes, Ray) and is kept whole as JSON in the store. This
module is the one place that reads that dict: :meth:`TrialResult.from_record` turns it into typed
fields, so a misspelt key is an ``AttributeError`` in the reader rather than a silent NULL in the
store, and no layer reads the record by string key to find a trial's numbers.

Every task scores its runs with one headline metric (:mod:`bocb.tasks`): ``top1`` (test top-1 %),
``box_ap`` (COCO box AP %), ``keypoint_ap`` (COCO keypoint AP %). ``score`` is that number, with
``metric`` naming it; ``test_top1`` is only ever top-1 accuracy (None for detection and pose).

Records written before the ``score``/``metric`` fields existed (bocb store schema v2 and older)
carried the headline metric in ``final_top1``/``best_top1`` and each epoch row's ``test_top1``,
whatever the task; :meth:`TrialResult.from_record` reads those too, so an old record and a new
one give the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bocb.tasks import DEFAULT_TASK, TASKS


def metric_of(task: str | None) -> str:
    """The headline metric of a task (classification when unnamed)."""
    return TASKS.get(task or DEFAULT_TASK).metric


@dataclass(frozen=True)
class EpochRow:
    """One evaluated epoch. ``score`` is the task's metric; the rest may be None where the task
    does not measure it (no top-5 for detection) or the run diverged (no finite loss)."""

    epoch: int
    score: float | None
    test_top1: float | None = None
    test_top5: float | None = None
    test_loss: float | None = None
    train_loss: float | None = None
    lr: float | None = None
    seconds_train: float | None = None
    seconds_eval: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any], metric: str) -> EpochRow:
        if "epoch" not in row:
            raise ValueError(f"an epoch row without 'epoch': keys {sorted(row)}")
        # Older rows: the task's score sat in test_top1 whatever the metric.
        score = row["score"] if "score" in row else row.get("test_top1")
        top1 = row.get("test_top1") if metric == "top1" else None
        return cls(epoch=int(row["epoch"]), score=score, test_top1=top1, test_top5=row.get("test_top5"),
                   test_loss=row.get("test_loss"), train_loss=row.get("train_loss"), lr=row.get("lr"),
                   seconds_train=row.get("seconds_train"), seconds_eval=row.get("seconds_eval"))


@dataclass(frozen=True)
class TrialResult:
    """A finished (or failed) trial as the store keeps it.

    ``record`` is the run's whole record (JSON-ready, the weight diagnostics' per-layer rows
    removed: they go to their own table); the typed fields are what the store indexes and the
    analysis reads."""

    status: str
    task: str
    metric: str
    final_score: float | None
    best_score: float | None
    best_epoch: int | None
    diverged_epoch: int | None
    error: str | None
    epochs: tuple[EpochRow, ...]
    selection: str  # the epoch chosen on "test" scores, or on a held-out "holdout" split
    final_val: float | None  # with a hold-out: the validation score of the ended weights
    best_val: float | None  # ... and at best_epoch
    seconds_train: float | None
    seconds_eval: float | None
    seconds_wall: float | None
    images_per_second: float | None
    peak_memory_mb: float | None
    device: dict[str, Any]
    code_version: str | None
    libraries: dict[str, Any]
    artifacts: dict[str, str]
    diagnostics: dict[str, Any] | None
    record: dict[str, Any] = field(repr=False)

    @property
    def final_top1(self) -> float | None:
        """Test top-1 of the ended weights; None unless the metric is top-1."""
        return self.final_score if self.metric == "top1" else None

    @property
    def best_top1(self) -> float | None:
        return self.best_score if self.metric == "top1" else None

    @classmethod
    def from_record(cls, record: dict[str, Any], spec: dict[str, Any] | None = None) -> TrialResult:
        """Read a run's record; ``spec`` (the stored trial spec) names the task when the record
        does not (a worker that died before its task started)."""
        if "status" not in record:
            raise ValueError(f"a trial record without 'status': keys {sorted(record)[:12]}")
        task = record.get("task") or (spec or {}).get("task") or DEFAULT_TASK
        metric = record.get("metric") or metric_of(task)
        final = record["final_score"] if "final_score" in record else record.get("final_top1")
        best = record["best_score"] if "best_score" in record else record.get("best_top1")
        seconds = record.get("seconds") or {}
        diagnostics = record.get("diagnostics")
        kept = record if diagnostics is None else {
            **record, "diagnostics": {k: v for k, v in diagnostics.items() if k != "layers"}}
        json.dumps(kept, allow_nan=False)  # NaN/inf cannot be stored: refuse here, before the store
        return cls(
            status=record["status"], task=task, metric=metric, final_score=final, best_score=best,
            best_epoch=record.get("best_epoch"), diverged_epoch=record.get("diverged_epoch"),
            error=record.get("error"), selection=record.get("selection") or "test",
            final_val=record.get("final_val_top1"), best_val=record.get("best_val_top1"),
            epochs=tuple(EpochRow.from_row(r, metric) for r in record.get("epochs") or ()),
            seconds_train=seconds.get("train"), seconds_eval=seconds.get("eval"), seconds_wall=seconds.get("wall"),
            images_per_second=record.get("train_images_per_second"), peak_memory_mb=record.get("peak_memory_mb"),
            device=record.get("device") or {}, code_version=record.get("code_version"),
            libraries=record.get("libraries") or {}, artifacts=dict(record.get("artifacts") or {}),
            diagnostics=diagnostics, record=kept,
        )


__all__ = ["EpochRow", "TrialResult", "metric_of"]
