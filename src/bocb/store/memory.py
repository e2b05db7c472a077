"""In-memory store: the whole :class:`~bocb.store.base.Store` contract in plain Python objects.

For tests, notebooks and dry runs: a study can be run (:func:`bocb.runner.run_study`), tuned and
analysed without a file, and what it stored disappears with the object. Semantics are those of
:class:`~bocb.store.sqlite.SQLiteStore` (one contract test suite runs against both): leases by
``time.time()``, claims in study position / insertion order, records refused with NaN, finishes
only from the runner holding the trial.

Thread-safe: one lock serialises every call, so runner threads of one process can share it the
way runner processes share an SQLite file. It is *not* shared between processes: a worker
process or a second ``bocb run`` gets a copy or nothing, never this store (the runner is the
store's only writer and its workers never open a store, so a study runs against it unchanged).

Choices, stated: values are kept as SQLite would return them (specs, settings and records as
JSON text, decoded into fresh copies on every read; numbers in the REAL columns as floats, in the
INTEGER ones as ints), so a caller cannot tell the two apart by the values it reads.
:meth:`MemoryStore.close` keeps the data (the object holds it, and ``bocb run``'s code closes its
store at the end of a run: a notebook reads the results afterwards); artifact paths come back
exactly as stored (there is no store folder to resolve a relative one against).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bocb.records import TrialResult
from bocb.store.base import (
    EPOCH_COLUMNS, LAYER_COLUMNS, SNAPSHOT_COLUMNS, STATUSES, SUMMARY_COLUMNS, TUNING_COLUMNS, Store,
    layer_rows, result_to_store, summary_fields,
)

# Columns SQLite declares REAL / INTEGER: a number stored there comes back as float / int.
_REAL = {"lr", "weight_decay", "final_score", "best_score", "final_top1", "best_top1", "seconds_train",
         "seconds_eval", "seconds_wall", "images_per_second", "peak_memory_mb", "final_val", "best_val",
         "started", "finished", "lease_expires", "created", "train_loss", "test_top1", "test_top5",
         "test_loss", "score", "seconds", "alpha", "xmin", "entropy", "l2", "pca_energy", "log_norm",
         "log_spectral_norm", "stable_rank", "alpha_weighted", "moved"}
_INTEGER = {"seed", "attempts", "best_epoch", "diverged_epoch", "epoch", "rows", "cols", "n_eig", "n_tail",
            "layer_index", "rung", "epochs"}


def _typed(column: str, value: Any) -> Any:
    """A value as SQLite's column affinity returns it (bools are integers there too)."""
    if isinstance(value, bool | int | float):
        if column in _REAL:
            return float(value)
        if column in _INTEGER and (isinstance(value, bool | int) or float(value).is_integer()):
            return int(value)
    return value


def _row(columns: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    return {c: _typed(c, values.get(c)) for c in columns}


@dataclass
class _Trial:
    spec: str  # JSON
    fields: dict[str, Any]  # the summary columns (status, settings, scores, lease ...)
    record: str | None = None  # JSON
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)


class MemoryStore(Store):
    """A store in this process's memory (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._studies: dict[str, dict[str, Any]] = {}
        self._trials: dict[str, _Trial] = {}  # insertion order = the store's order
        self._links: dict[str, dict[str, int]] = {}  # study -> trial -> position
        self._artifacts: dict[str, dict[str, str]] = {}  # trial -> kind -> path (any trial id, as in SQLite)
        self._rungs: dict[tuple[str, str, int], dict[str, Any]] = {}  # (study, trial, rung) -> row
        self._snapshots: dict[str, dict[str, Any]] = {}  # insertion order = storage order
        self._layers: dict[str, list[dict[str, Any]]] = {}
        self._study_snapshots: set[tuple[str, str]] = set()

    # -- plumbing ---------------------------------------------------------------------------------
    def _scoped(self, study_id: str | None) -> list[tuple[str, _Trial]]:
        """The trials in the contract's order (the caller holds the lock)."""
        if study_id is None:
            return list(self._trials.items())
        links = self._links.get(study_id, {})
        return [(tid, self._trials[tid]) for tid in sorted(links, key=links.__getitem__)]

    def _link(self, study_id: str, trial_id: str) -> None:
        links = self._links.setdefault(study_id, {})
        if trial_id not in links:
            links[trial_id] = max(links.values(), default=-1) + 1

    def _insert(self, trial_id: str, spec: dict[str, Any], status: str, reason: str | None) -> bool:
        if trial_id in self._trials:
            return False
        fields = dict.fromkeys(SUMMARY_COLUMNS)
        fields.update(summary_fields(spec), trial_id=trial_id, status=status, skip_reason=reason, attempts=0)
        self._trials[trial_id] = _Trial(json.dumps(spec, sort_keys=True), fields)
        return True

    def _held_by(self, trial_id: str, runner: str) -> _Trial | None:
        trial = self._trials.get(trial_id)
        if trial is None or trial.fields["status"] != "running" or trial.fields["runner"] != runner:
            return None
        return trial

    @staticmethod
    def _hand_back(trial: _Trial) -> None:
        trial.fields.update(status="pending", runner=None, lease_expires=None)

    # -- studies and trials -----------------------------------------------------------------------
    def add_study(self, study_id: str, name: str, path: str, settings: dict[str, Any]) -> None:
        text = json.dumps(settings, sort_keys=True)
        with self._lock:
            self._studies.setdefault(study_id, {"study_id": study_id, "name": name, "path": path,
                                                "settings": text, "created": time.time()})

    def add_trials(self, study_id: str, trials: list[tuple[str, dict[str, Any]]],
                   skipped: list[tuple[str, dict[str, Any], str]] = ()) -> int:
        rows = [(tid, spec, "pending", None) for tid, spec in trials]
        rows += [(tid, spec, "skipped", reason) for tid, spec, reason in skipped]
        new = 0
        with self._lock:
            for trial_id, spec, status, reason in rows:
                new += self._insert(trial_id, spec, status, reason)
                self._link(study_id, trial_id)
        return new

    def unlink(self, study_id: str, trial_ids: list[str]) -> int:
        with self._lock:
            links = self._links.get(study_id, {})
            return sum(links.pop(tid, None) is not None for tid in trial_ids)

    def studies(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = sorted(self._studies.values(), key=lambda s: s["created"])
            return [{k: s[k] for k in ("study_id", "name", "path", "created")} for s in rows]

    # -- the claim/lease protocol ---------------------------------------------------------------
    def claim(self, runner: str, lease_s: float, study_id: str | None = None) -> tuple[str, dict[str, Any]] | None:
        now = time.time()
        with self._lock:
            for trial_id, trial in self._scoped(study_id):
                f = trial.fields
                if f["status"] == "pending" or (f["status"] == "running" and f["lease_expires"] < now):
                    f.update(status="running", runner=runner, lease_expires=now + lease_s,
                             attempts=f["attempts"] + 1, started=now)
                    return trial_id, json.loads(trial.spec)
        return None

    def renew(self, trial_id: str, runner: str, lease_s: float) -> bool:
        with self._lock:
            trial = self._held_by(trial_id, runner)
            if trial is not None:
                trial.fields["lease_expires"] = time.time() + lease_s
            return trial is not None

    def finish(self, trial_id: str, runner: str, record: dict[str, Any] | TrialResult) -> bool:
        result = result_to_store(trial_id, record)
        text = json.dumps(result.record, allow_nan=False)  # before the lock: a refusal changes nothing
        device = json.dumps(result.device)
        epochs = {r.epoch: {"trial_id": trial_id, **{c: getattr(r, c) for c in EPOCH_COLUMNS[1:]}}
                  for r in result.epochs}
        with self._lock:
            trial = self._held_by(trial_id, runner)
            if trial is None:
                return False
            trial.fields.update(
                status=result.status, metric=result.metric, final_score=result.final_score,
                best_score=result.best_score, final_top1=result.final_top1, best_top1=result.best_top1,
                best_epoch=result.best_epoch, diverged_epoch=result.diverged_epoch, error=result.error,
                seconds_train=result.seconds_train, seconds_eval=result.seconds_eval,
                seconds_wall=result.seconds_wall, images_per_second=result.images_per_second,
                peak_memory_mb=result.peak_memory_mb, selection=result.selection, final_val=result.final_val,
                best_val=result.best_val, host=result.device.get("host"), device=device,
                code_version=result.code_version, finished=time.time(), lease_expires=None,
            )
            trial.record = text
            trial.epochs = epochs
            self._artifacts.setdefault(trial_id, {}).update(result.artifacts)
            if result.diagnostics is not None:
                self._put_snapshot(result.diagnostics)
        return True

    def release(self, trial_id: str, runner: str) -> None:
        with self._lock:
            trial = self._held_by(trial_id, runner)
            if trial is not None:
                self._hand_back(trial)

    def held(self, study_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [_row(("trial_id", "runner", "lease_expires"), t.fields)
                    for _, t in self._scoped(study_id) if t.fields["status"] == "running"]

    def reclaim(self, held: list[tuple[str, str]]) -> int:
        n = 0
        with self._lock:
            for trial_id, runner in held:
                trial = self._held_by(trial_id, runner)
                if trial is not None:
                    self._hand_back(trial)
                    n += 1
        return n

    def retry_failed(self, study_id: str | None = None) -> int:
        with self._lock:
            failed = [t for _, t in self._scoped(study_id) if t.fields["status"] == "failed"]
            for trial in failed:
                self._hand_back(trial)
            return len(failed)

    # -- reading trials -------------------------------------------------------------------------
    def counts(self, study_id: str | None = None) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        with self._lock:
            for _, trial in self._scoped(study_id):
                out[trial.fields["status"]] += 1
        out["total"] = sum(out[s] for s in STATUSES)
        return out

    def trials(self, study_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [_row(SUMMARY_COLUMNS, t.fields) for _, t in self._scoped(study_id)]

    def specs(self, study_id: str | None = None) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {tid: json.loads(t.spec) for tid, t in self._scoped(study_id)}

    def record(self, trial_id: str) -> dict[str, Any] | None:
        with self._lock:
            trial = self._trials.get(trial_id)
            return json.loads(trial.record) if trial is not None and trial.record else None

    def epochs(self, trial_id: str) -> list[dict[str, Any]]:
        with self._lock:
            trial = self._trials.get(trial_id)
            rows = trial.epochs if trial is not None else {}
            return [_row(EPOCH_COLUMNS, rows[e]) for e in sorted(rows)]

    # -- artifacts --------------------------------------------------------------------------------
    def set_artifact(self, trial_id: str, kind: str, path: str) -> None:
        with self._lock:
            self._artifacts.setdefault(trial_id, {})[kind] = path

    def drop_artifact(self, trial_id: str, kind: str) -> None:
        with self._lock:
            self._artifacts.get(trial_id, {}).pop(kind, None)

    def artifacts(self, trial_id: str) -> dict[str, str]:
        with self._lock:
            found = self._artifacts.get(trial_id, {})
            return {kind: found[kind] for kind in sorted(found)}

    # -- weight diagnostics -----------------------------------------------------------------------
    def put_snapshot(self, snapshot: dict[str, Any], study_id: str | None = None) -> None:
        with self._lock:
            self._put_snapshot(snapshot)
            if study_id is not None:
                self._study_snapshots.add((study_id, snapshot["snapshot_id"]))

    def _put_snapshot(self, snap: dict[str, Any]) -> None:
        """Store one snapshot (the caller holds the lock); a replaced one moves to the end, as a
        replaced SQLite row takes a new rowid."""
        sid = snap["snapshot_id"]
        layers = [dict(zip(("snapshot_id", "layer_index", *LAYER_COLUMNS), (sid, *row), strict=True))
                  for row in layer_rows(snap)]
        self._snapshots.pop(sid, None)
        self._snapshots[sid] = {
            "snapshot_id": sid, "trial_id": snap.get("trial_id"), "source": snap["source"],
            "backbone": snap["backbone"], "seed": snap.get("seed"), "path": snap.get("path"),
            "settings": json.dumps(snap.get("settings", {}), sort_keys=True), "seconds": snap.get("seconds"),
            "error": snap.get("error"), "created": time.time(),
        }
        self._layers[sid] = layers

    def snapshots(self, study_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._snapshots.values())
            if study_id is not None:
                trials = self._links.get(study_id, {})
                rows = [s for s in rows if s["trial_id"] in trials
                        or (study_id, s["snapshot_id"]) in self._study_snapshots]
            return [{**_row(SNAPSHOT_COLUMNS, s), "settings": json.loads(s["settings"])} for s in rows]

    def layer_metrics(self, snapshot_ids: list[str]) -> list[dict[str, Any]]:
        columns = ("snapshot_id", "layer_index", *LAYER_COLUMNS)
        with self._lock:
            return [_row(columns, layer) for sid in snapshot_ids for layer in self._layers.get(sid, [])]

    # -- adaptive tuning ----------------------------------------------------------------------------
    def add_proposals(self, study_id: str, pair: str, proposals: list[tuple[str, dict[str, Any], int, int]]) -> int:
        now = time.time()
        runnable = 0
        with self._lock:
            for trial_id, spec, rung, epochs in proposals:
                runnable += self._insert(trial_id, spec, "pending", None)
                self._link(study_id, trial_id)
                key = (study_id, trial_id, rung)
                if key in self._rungs:
                    continue
                self._rungs[key] = {"pair": pair, "trial_id": trial_id, "rung": rung, "epochs": epochs,
                                    "created": now}
                trial = self._trials[trial_id]
                if trial.fields["status"] == "paused":
                    self._hand_back(trial)
                    runnable += 1
        return runnable

    def stop_epoch(self, trial_id: str, study_id: str | None = None) -> int | None:
        with self._lock:
            asked = [r["epochs"] for (sid, tid, _), r in self._rungs.items()
                     if tid == trial_id and (study_id is None or sid == study_id)]
        return int(max(asked)) if asked else None

    def tuning_rows(self, study_id: str, epochs: list[int]) -> tuple[list[dict[str, Any]], dict[tuple[str, int], float | None]]:
        with self._lock:
            rungs = [r for (sid, _, _), r in self._rungs.items() if sid == study_id]
            rows = [_row(TUNING_COLUMNS, {**self._trials[r["trial_id"]].fields, **r}) for r in rungs]
            rows.sort(key=lambda r: (r["pair"], r["trial_id"], r["rung"]))
            wanted = set(epochs)
            scores = {(tid, e): _typed("score", row["score"])
                      for tid in {r["trial_id"] for r in rungs}
                      for e, row in self._trials[tid].epochs.items() if e in wanted}
        return rows, scores

    def trained_epochs(self, study_id: str) -> dict[str, int]:
        with self._lock:
            return {tid: len(t.epochs) for tid, t in self._scoped(study_id) if t.epochs}

    # -- lifetime -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Nothing to release; the data stays readable (see the module doc)."""


__all__ = ["MemoryStore"]
