"""One contract suite for every store implementation (as Optuna tests its storages): the same
tests, with the same hand-computed expectations, run against a real SQLite file and a MemoryStore.

SQLite-only behaviour (schema versions, damaged files, several connections) is in test_store.py.
"""

import inspect
import json
import math
import re
import threading
import time

import numpy as np
import pytest

from bocb.store import STATUSES, MemoryStore, SQLiteStore, Store
from bocb.store.base import EPOCH_COLUMNS, LAYER_COLUMNS, SNAPSHOT_COLUMNS, SUMMARY_COLUMNS, TUNING_COLUMNS


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    made = SQLiteStore(tmp_path / "store.sqlite") if request.param == "sqlite" else MemoryStore()
    yield made
    made.close()


def _spec(i: int, task: str | None = None) -> dict:
    spec = {
        "backbone": {"short": "R-50"},
        "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": i / 10, "weight_decay": 1e-4}},
        "recipe": {"name": "pytorch", "tier": "smoke"},
        "seed": i,
    }
    if task:
        spec["task"] = task
    return spec


def _record(status: str = "done", scores: tuple = (50.0,), task: str | None = None, **extra) -> dict:
    """A run's record as bocb.engine writes it: one row per epoch (epochs 1, 2, ...), the final
    score the last row's, the best the largest."""
    top1 = task in (None, "classification")
    rows = [{"epoch": e, "train_loss": 1.0 / e, "score": s, "test_top1": s if top1 else None,
             "test_top5": 90.0 if top1 else None, "test_loss": 1.5, "lr": 0.1, "seconds_train": 2.0,
             "seconds_eval": 0.5} for e, s in enumerate(scores, 1)]
    best = max(range(len(scores)), key=scores.__getitem__) if scores else None
    record = {
        "status": status, "task": task or "classification",
        "final_score": scores[-1] if scores else None, "best_score": scores[best] if scores else None,
        "best_epoch": None if best is None else best + 1, "error": None, "epochs": rows,
        "seconds": {"train": 2.0 * len(scores), "eval": 0.5 * len(scores), "wall": 3.0 * len(scores)},
        "train_images_per_second": 400.0, "peak_memory_mb": 812.5, "device": {"host": "h", "type": "cpu"},
        "code_version": "abc123", "libraries": {"torch": "2"},
        "artifacts": {"final_weights": "/x/final.safetensors"},
    }
    record.update(extra)
    return record


def _layer(name: str, alpha, n_eig) -> dict:
    return {"layer": name, "kind": "linear", "shape": (4, 3), "n_eig": n_eig, "alpha": alpha,
            "alpha_status": "ok", "n_tail": 2, "xmin": 0.5, "entropy": 0.75, "l2": 1.25, "pca_energy": 0.9,
            "log_norm": 0.1, "log_spectral_norm": 0.2, "stable_rank": 1.5, "alpha_weighted": 0.3}


def _claim_and_finish(store: Store, study: str, record: dict, runner: str = "r") -> str:
    trial_id, _ = store.claim(runner, 60, study)
    assert store.finish(trial_id, runner, record)
    return trial_id


def _ids(rows) -> list[str]:
    return [r["trial_id"] for r in rows]


# -- studies and trials ---------------------------------------------------------------------------


def test_trials_are_added_once_and_shared_between_studies(store):
    store.add_study("s1", "one", "one.toml", {"a": 1})
    assert store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2))]) == 2
    assert store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2))]) == 0
    store.add_study("s2", "two", "two.toml", {"a": 2})
    store.add_study("s1", "renamed", "other.toml", {"a": 3})  # idempotent: the first one stays
    _claim_and_finish(store, "s1", _record())  # t1 done: linking it elsewhere keeps its result
    assert store.add_trials("s2", [("t3", _spec(3)), ("t2", _spec(2)), ("t1", _spec(1))]) == 1
    assert (store.counts("s1")["total"], store.counts("s2")["total"], store.counts()["total"]) == (2, 3, 3)
    assert [s["name"] for s in store.studies()] == ["one", "two"]
    assert set(store.studies()[0]) == {"study_id", "name", "path", "created"}
    assert _ids(store.trials("s2")) == ["t3", "t2", "t1"]  # the study's order
    assert _ids(store.trials()) == ["t1", "t2", "t3"]  # the store's: first added first
    assert list(store.specs("s2")) == ["t3", "t2", "t1"]
    assert store.trials("s2")[2]["status"] == "done"


def test_unlink_removes_a_trial_from_one_study_only(store):
    store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2)), ("t3", _spec(3))])
    store.add_trials("s2", [("t2", _spec(2))])
    assert store.unlink("s1", ["t2", "nope"]) == 1
    assert list(store.specs("s1")) == ["t1", "t3"] and list(store.specs("s2")) == ["t2"]
    assert store.counts()["total"] == 3  # the trial stays in the store
    assert store.add_trials("s1", [("t2", _spec(2))]) == 0  # linked again: last in the study
    assert list(store.specs("s1")) == ["t1", "t3", "t2"]


def test_specs_come_back_as_fresh_json_copies(store):
    spec = {**_spec(1), "extra": (1, 2)}
    store.add_trials("s", [("t1", spec)])
    got = store.specs("s")["t1"]
    assert got["extra"] == [1, 2] and got["optimizer"]["args"]["lr"] == 0.1
    got["seed"] = 99
    assert store.specs()["t1"]["seed"] == 1
    assert store.claim("r", 60, "s") == ("t1", {**_spec(1), "extra": [1, 2]})


def test_skipped_rows_keep_their_reason_and_are_never_claimed(store):
    store.add_trials("s", [("t1", _spec(1))], skipped=[("x1", _spec(2), "no paper value")])
    rows = store.trials("s")
    assert [(r["trial_id"], r["status"], r["skip_reason"]) for r in rows] == [
        ("t1", "pending", None), ("x1", "skipped", "no paper value")]
    assert store.claim("r", 60, "s")[0] == "t1"
    assert store.claim("r", 60, "s") is None
    assert store.record("x1") is None


def test_counts_name_every_status(store):
    store.add_trials("s", [(f"t{i}", _spec(i)) for i in range(1, 6)], skipped=[("x", _spec(9), "why")])
    _claim_and_finish(store, "s", _record("done"))
    _claim_and_finish(store, "s", _record("diverged", scores=(10.0,)))
    _claim_and_finish(store, "s", _record("failed", scores=()))
    store.claim("r", 60, "s")
    assert store.counts("s") == {"pending": 1, "running": 1, "done": 1, "diverged": 1, "failed": 1,
                                 "skipped": 1, "paused": 0, "total": 6}
    assert store.counts("nothing") == {**dict.fromkeys(STATUSES, 0), "total": 0}


# -- the claim/lease protocol -----------------------------------------------------------------------


def test_claims_are_exclusive_and_follow_the_study_order(store):
    store.add_trials("a", [("t1", _spec(1)), ("t2", _spec(2)), ("t3", _spec(3))])
    store.add_trials("b", [("t3", _spec(3)), ("t2", _spec(2)), ("t1", _spec(1))])
    got = [store.claim(f"r{i}", 60, "b") for i in range(4)]
    assert [g and g[0] for g in got] == ["t3", "t2", "t1", None]
    assert store.claim("r9", 60, "a") is None and store.claim("r9", 60) is None  # every lease is live
    assert [(h["trial_id"], h["runner"]) for h in store.held("a")] == [("t1", "r2"), ("t2", "r1"), ("t3", "r0")]
    assert [r["attempts"] for r in store.trials("a")] == [1, 1, 1]


def test_a_claim_without_a_study_takes_the_first_added(store):
    store.add_trials("b", [("t2", _spec(2))])
    store.add_trials("a", [("t1", _spec(1)), ("t2", _spec(2))])
    assert store.claim("r", 60)[0] == "t2" and store.claim("r", 60)[0] == "t1"


def test_expired_lease_is_taken_over_and_the_old_runner_cannot_finish(store):
    store.add_trials("s", [("t1", _spec(1))])
    assert store.claim("dead", lease_s=0.05, study_id="s")[0] == "t1"
    assert store.claim("alive", lease_s=60, study_id="s") is None  # lease still live
    time.sleep(0.1)
    assert store.claim("alive", lease_s=60, study_id="s")[0] == "t1"
    assert not store.renew("t1", "dead", 60)
    assert not store.finish("t1", "dead", _record(scores=(10.0,)))
    assert store.record("t1") is None and store.epochs("t1") == []  # nothing of it stored
    assert store.finish("t1", "alive", _record(scores=(61.0,)))
    row = store.trials("s")[0]
    assert (row["status"], row["final_score"], row["attempts"]) == ("done", 61.0, 2)
    assert store.held("s") == []


def test_finish_needs_the_runner_that_holds_the_trial(store):
    store.add_trials("s", [("t1", _spec(1))])
    assert not store.finish("t1", "r", _record())  # never claimed
    assert not store.finish("nope", "r", _record())
    store.claim("r", 60, "s")
    assert not store.finish("t1", "other", _record())
    assert store.finish("t1", "r", _record())
    assert not store.finish("t1", "r", _record(scores=(1.0,)))  # finished: no second result
    assert store.trials("s")[0]["final_score"] == 50.0


def test_renew_extends_only_the_holders_lease(store):
    store.add_trials("s", [("t1", _spec(1))])
    before = time.time()
    store.claim("r", 60, "s")
    first = store.held("s")[0]["lease_expires"]
    assert before + 60 <= first <= time.time() + 60
    assert store.renew("t1", "r", 600)
    assert store.held("s")[0]["lease_expires"] >= before + 600
    assert not store.renew("t1", "other", 6000) and not store.renew("nope", "r", 60)
    assert store.held("s")[0]["lease_expires"] < before + 6000
    store.finish("t1", "r", _record())
    assert not store.renew("t1", "r", 60)


def test_release_hands_a_trial_back_and_only_its_holder_can(store):
    store.add_trials("s", [("t1", _spec(1))])
    store.claim("r", 60, "s")
    store.release("t1", "other")
    assert store.counts("s")["running"] == 1
    store.release("t1", "r")
    assert store.counts("s")["pending"] == 1 and store.held("s") == []
    assert store.claim("r2", 60, "s")[0] == "t1"
    assert store.trials("s")[0]["attempts"] == 2


def test_reclaim_takes_back_what_the_named_runner_still_holds(store):
    store.add_trials("s", [("t1", _spec(1)), ("t2", _spec(2)), ("t3", _spec(3))])
    store.claim("r1", 60, "s")
    store.claim("r2", 60, "s")
    _claim_and_finish(store, "s", _record(), runner="r3")
    assert [(h["trial_id"], h["runner"]) for h in store.held("s")] == [("t1", "r1"), ("t2", "r2")]
    assert store.reclaim([("t1", "r1"), ("t2", "wrong"), ("t3", "r3")]) == 1  # t3 is finished
    assert [r["status"] for r in store.trials("s")] == ["pending", "running", "done"]
    assert store.claim("r4", 60, "s")[0] == "t1"


def test_failed_trials_are_retried_on_request_only(store):
    store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2))])
    store.add_trials("s2", [("t3", _spec(3))])
    _claim_and_finish(store, "s1", _record("done"))
    _claim_and_finish(store, "s1", _record("failed", scores=(), error="boom"))
    _claim_and_finish(store, "s2", _record("failed", scores=(), error="bang"))
    assert store.claim("r", 60) is None
    assert store.retry_failed("s1") == 1
    assert store.record("t2")["error"] == "boom"  # readable until it finishes again
    assert store.claim("r", 60)[0] == "t2"
    assert store.retry_failed() == 1 and store.retry_failed() == 0
    assert store.counts("s2")["pending"] == 1


def test_a_finish_with_a_status_it_cannot_set_is_refused(store):
    store.add_trials("s", [("t1", _spec(1))])
    store.claim("r", 60, "s")
    for status in ("pending", "running", "skipped", "bogus"):
        with pytest.raises(ValueError, match=f"status '{status}'"):
            store.finish("t1", "r", _record(status))
    assert store.counts("s")["running"] == 1 and store.record("t1") is None
    assert store.finish("t1", "r", _record("done"))


@pytest.mark.parametrize("where", ["final_score", "seconds", "epoch row", "twice the same epoch"])
def test_an_unstorable_record_is_refused_and_nothing_is_stored(store, where):
    store.add_trials("s", [("t1", _spec(1))])
    store.claim("r", 60, "s")
    record = _record(scores=(50.0, 60.0))
    if where == "final_score":
        record["final_score"] = math.nan
    elif where == "seconds":
        record["seconds"]["train"] = math.inf
    elif where == "epoch row":
        record["epochs"][0]["train_loss"] = math.nan
    else:
        record["epochs"][1]["epoch"] = 1
    with pytest.raises(ValueError):
        store.finish("t1", "r", record)
    assert store.record("t1") is None and store.epochs("t1") == [] and store.artifacts("t1") == {}
    assert store.trials("s")[0]["status"] == "running"


# -- what a finished trial reads back -------------------------------------------------------------


def test_summary_rows_hold_typed_scores_top1_only_in_the_top1_columns(store):
    store.add_trials("s", [("c", _spec(1)), ("d", _spec(2, task="detection"))])
    _claim_and_finish(store, "s", _record(scores=(40.0, 55.0, 50.0)))
    _claim_and_finish(store, "s", _record(scores=(30.25, 31.5), task="detection", metric="box_ap"))
    cls, det = store.trials("s")
    assert tuple(cls) == SUMMARY_COLUMNS
    assert (cls["metric"], cls["final_score"], cls["best_score"], cls["final_top1"], cls["best_top1"],
            cls["best_epoch"]) == ("top1", 50.0, 55.0, 50.0, 55.0, 2)
    assert (det["metric"], det["final_score"], det["best_score"], det["final_top1"], det["best_top1"],
            det["best_epoch"]) == ("box_ap", 31.5, 31.5, None, None, 2)
    assert (cls["backbone"], cls["optimizer"], cls["category"], cls["lr"], cls["weight_decay"], cls["seed"],
            cls["recipe"], cls["tier"], cls["pretrained"]) == ("R-50", "SGD-M", "a", 0.1, 1e-4, 1, "pytorch",
                                                                "smoke", None)
    # 3 epochs of 2.0 s training, 0.5 s evaluation, 3.0 s wall each
    assert (cls["seconds_train"], cls["seconds_eval"], cls["seconds_wall"]) == (6.0, 1.5, 9.0)
    assert (cls["images_per_second"], cls["peak_memory_mb"], cls["host"], cls["code_version"]) == (
        400.0, 812.5, "h", "abc123")
    assert json.loads(cls["device"]) == {"host": "h", "type": "cpu"}
    assert (cls["selection"], cls["final_val"], cls["best_val"], cls["error"]) == ("test", None, None, None)
    assert cls["started"] <= cls["finished"] <= time.time()


def test_a_holdout_record_keeps_its_validation_scores(store):
    store.add_trials("s", [("t1", _spec(1))])
    _claim_and_finish(store, "s", _record(selection="holdout", final_val_top1=47.5, best_val_top1=48.0))
    row = store.trials("s")[0]
    assert (row["selection"], row["final_val"], row["best_val"]) == ("holdout", 47.5, 48.0)


def test_an_old_record_with_the_score_in_the_top1_keys_reads_the_same(store):
    store.add_trials("s", [("t1", _spec(1, task="detection"))])
    old = {"status": "done", "final_top1": 20.5, "best_top1": 21.0, "best_epoch": 1,
           "epochs": [{"epoch": 1, "test_top1": 21.0}], "spec": _spec(1, task="detection")}
    _claim_and_finish(store, "s", old)
    row, epoch = store.trials("s")[0], store.epochs("t1")[0]
    assert (row["metric"], row["final_score"], row["final_top1"]) == ("box_ap", 20.5, None)
    assert (epoch["score"], epoch["test_top1"]) == (21.0, None)


def test_epoch_rows_come_by_epoch_with_their_score(store):
    store.add_trials("s", [("c", _spec(1)), ("d", _spec(2, task="detection"))])
    record = _record(scores=(40.0, 55.0))
    record["epochs"].reverse()
    _claim_and_finish(store, "s", record)
    _claim_and_finish(store, "s", _record(scores=(12.5,), task="detection"))
    rows = store.epochs("c")
    assert [tuple(r) for r in rows] == [EPOCH_COLUMNS] * 2
    assert [(r["epoch"], r["score"], r["test_top1"], r["train_loss"]) for r in rows] == [
        (1, 40.0, 40.0, 1.0), (2, 55.0, 55.0, 0.5)]
    assert [(r["epoch"], r["score"], r["test_top1"], r["test_top5"]) for r in store.epochs("d")] == [
        (1, 12.5, None, None)]
    assert store.epochs("nope") == []


def test_a_second_finish_replaces_the_epoch_rows(store):
    store.add_trials("s", [("t1", _spec(1))])
    _claim_and_finish(store, "s", _record("failed", scores=(10.0, 11.0, 12.0)))
    store.retry_failed("s")
    _claim_and_finish(store, "s", _record(scores=(20.0,)))
    assert [(r["epoch"], r["score"]) for r in store.epochs("t1")] == [(1, 20.0)]


def test_the_record_is_kept_whole_without_the_layer_rows(store):
    store.add_trials("s", [("t1", _spec(1))])
    assert store.record("t1") is None and store.record("nope") is None
    diagnostics = {"snapshot_id": "t1", "trial_id": "t1", "source": "final", "backbone": "R-50",
                   "layers": [_layer("fc", 2.0, 3)], "settings": {"conv": "slices"}}
    record = _record(spec=_spec(1), diagnostics=diagnostics)
    _claim_and_finish(store, "s", record)
    got = store.record("t1")
    assert got["diagnostics"] == {k: v for k, v in diagnostics.items() if k != "layers"}
    assert {k: v for k, v in got.items() if k != "diagnostics"} == {
        k: v for k, v in json.loads(json.dumps(record)).items() if k != "diagnostics"}


def test_artifacts_by_kind(store):
    store.add_trials("s", [("t1", _spec(1))])
    store.set_artifact("t1", "checkpoint", "/x/old.safetensors")
    _claim_and_finish(store, "s", _record())
    store.set_artifact("t1", "checkpoint", "/x/checkpoint.safetensors")  # replaces the earlier path
    assert store.artifacts("t1") == {"checkpoint": "/x/checkpoint.safetensors",
                                     "final_weights": "/x/final.safetensors"}
    assert list(store.artifacts("t1")) == ["checkpoint", "final_weights"]
    assert store.artifacts("nope") == {}
    store.drop_artifact("t1", "checkpoint")
    store.drop_artifact("t1", "checkpoint")  # twice, and an unknown trial: nothing happens
    store.drop_artifact("nope", "final_weights")
    assert store.artifacts("t1") == {"final_weights": "/x/final.safetensors"}


# -- weight diagnostics -----------------------------------------------------------------------------


def test_snapshots_belong_to_their_trials_studies_or_the_study_they_were_linked_to(store):
    store.add_trials("s1", [("t1", _spec(1))])
    store.add_trials("s2", [("t2", _spec(2))])
    init = {"snapshot_id": "init:r50", "source": "init", "backbone": "R-50", "seed": 0,
            "settings": {"conv": "slices", "b": (1, 2)}, "seconds": 0.25,
            "layers": [_layer("conv1", np.float32(2.5), np.int64(3)), _layer("fc", math.nan, 2)]}
    store.put_snapshot(init, "s1")
    diagnostics = {"snapshot_id": "t1", "trial_id": "t1", "source": "final", "backbone": "R-50",
                   "layers": [{**_layer("fc", 4.0, 3), "moved": 0.125}], "path": "/x/final.safetensors"}
    _claim_and_finish(store, "s1", _record(diagnostics=diagnostics))
    store.put_snapshot({"snapshot_id": "t2", "trial_id": "t2", "source": "final", "backbone": "R-50",
                        "layers": [], "error": "ValueError: no weights"})
    snaps = store.snapshots("s1")
    assert [s["snapshot_id"] for s in snaps] == ["init:r50", "t1"]
    assert [tuple(s) for s in snaps] == [SNAPSHOT_COLUMNS] * 2
    assert snaps[0]["settings"] == {"conv": "slices", "b": [1, 2]} and snaps[1]["settings"] == {}
    assert (snaps[0]["seed"], snaps[0]["seconds"], snaps[0]["error"]) == (0, 0.25, None)
    assert (snaps[1]["trial_id"], snaps[1]["path"]) == ("t1", "/x/final.safetensors")
    assert [s["snapshot_id"] for s in store.snapshots("s2")] == ["t2"]
    assert store.snapshots("s2")[0]["error"] == "ValueError: no weights"
    assert [s["snapshot_id"] for s in store.snapshots()] == ["init:r50", "t1", "t2"]

    layers = store.layer_metrics(["t1", "init:r50", "nope"])
    assert [tuple(r) for r in layers] == [("snapshot_id", "layer_index", *LAYER_COLUMNS)] * 3
    assert [(r["snapshot_id"], r["layer_index"], r["layer"], r["alpha"], r["n_eig"], r["moved"]) for r in layers] == [
        ("t1", 0, "fc", 4.0, 3, 0.125), ("init:r50", 0, "conv1", 2.5, 3, None), ("init:r50", 1, "fc", None, 2, None)]
    assert (layers[0]["rows"], layers[0]["cols"]) == (4, 3)
    assert type(layers[1]["alpha"]) is float and type(layers[1]["n_eig"]) is int  # not numpy scalars

    store.put_snapshot({**init, "layers": [_layer("conv1", 3.0, 3)]}, "s1")  # recomputed: replaces
    assert [(r["layer"], r["alpha"]) for r in store.layer_metrics(["init:r50"])] == [("conv1", 3.0)]
    assert [s["snapshot_id"] for s in store.snapshots()] == ["t1", "t2", "init:r50"]  # now the newest


def test_layer_metrics_of_many_snapshots_come_in_the_given_order(store):
    # More snapshots than one SQLite query reads (bocb.store.sqlite._LAYER_BATCH), a repeat, an unknown id.
    ids = [f"s{i:04d}" for i in range(1200)]
    for sid in ids:
        store.put_snapshot({"snapshot_id": sid, "source": "init", "backbone": "R-50",
                            "layers": [_layer("conv1", 3.0, 3), _layer("fc", 4.0, 2)]}, "s")
    asked = [*ids[::-1][:700], "nope", ids[5], *ids[::-1][700:], ids[5]]
    rows = store.layer_metrics(asked)
    assert [(r["snapshot_id"], r["layer"]) for r in rows] == [(sid, name) for sid in asked if sid != "nope"
                                                             for name in ("conv1", "fc")]
    rows[0]["alpha"] = -1.0  # fresh dicts, even for a snapshot asked twice
    assert store.layer_metrics([asked[0]])[0]["alpha"] == 3.0
    twice = [r for r in rows if r["snapshot_id"] == ids[5]]
    assert twice[0] is not twice[2]


# -- adaptive tuning ----------------------------------------------------------------------------------


def test_proposals_are_recorded_once_and_a_promotion_resumes_a_paused_trial(store):
    store.add_study("s", "s", "s.toml", {})
    proposals = [("t1", _spec(1), 0, 1), ("t2", _spec(2), 0, 1)]
    assert store.add_proposals("s", "p", proposals) == 2
    assert store.add_proposals("s", "p", proposals) == 0  # a second runner proposing the same: nothing
    assert (store.stop_epoch("t1"), store.stop_epoch("t1", "s"), store.stop_epoch("t1", "other")) == (1, 1, None)
    assert store.stop_epoch("nope") is None
    _claim_and_finish(store, "s", _record("paused", scores=(20.0,)))
    _claim_and_finish(store, "s", _record("paused", scores=(30.0,)))
    assert store.claim("r", 60, "s") is None  # paused trials are not claimed
    assert store.trained_epochs("s") == {"t1": 1, "t2": 1}

    rows, scores = store.tuning_rows("s", [1, 3])
    assert [tuple(r) for r in rows] == [TUNING_COLUMNS] * 2
    assert [(r["pair"], r["trial_id"], r["rung"], r["epochs"], r["status"], r["lr"], r["seed"], r["final_score"])
            for r in rows] == [("p", "t1", 0, 1, "paused", 0.1, 1, 20.0), ("p", "t2", 0, 1, "paused", 0.2, 2, 30.0)]
    assert scores == {("t1", 1): 20.0, ("t2", 1): 30.0}

    assert store.add_proposals("s", "p", [("t2", _spec(2), 1, 3)]) == 1  # promotion
    assert store.add_proposals("s", "p", [("t2", _spec(2), 1, 3)]) == 0
    assert store.stop_epoch("t2", "s") == 3
    _claim_and_finish(store, "s", _record(scores=(30.0, 35.0, 40.0)))
    assert store.trained_epochs("s") == {"t1": 1, "t2": 3}
    rows, scores = store.tuning_rows("s", [1, 3])
    assert [(r["trial_id"], r["rung"], r["status"]) for r in rows] == [("t1", 0, "paused"), ("t2", 0, "done"),
                                                                      ("t2", 1, "done")]
    assert scores == {("t1", 1): 20.0, ("t2", 1): 30.0, ("t2", 3): 40.0}
    assert store.tuning_rows("s", [])[1] == {}
    assert store.tuning_rows("other", [1]) == ([], {})


def test_rung_rows_are_per_study(store):
    store.add_proposals("a", "p", [("t1", _spec(1), 0, 1)])
    _claim_and_finish(store, "a", _record("paused", scores=(20.0,)))
    # Another study asking for more of the shared trial: a new rung row for it, and it resumes.
    assert store.add_proposals("b", "q", [("t1", _spec(1), 0, 3)]) == 1
    assert (store.stop_epoch("t1", "a"), store.stop_epoch("t1", "b"), store.stop_epoch("t1")) == (1, 3, 3)
    assert [(r["pair"], r["rung"]) for r in store.tuning_rows("b", [])[0]] == [("q", 0)]
    assert list(store.specs("b")) == ["t1"] and store.trained_epochs("b") == {"t1": 1}
    assert store.trained_epochs("nothing") == {}


# -- lifetime and the suite itself ------------------------------------------------------------------


def test_a_store_is_a_context_manager(store):
    with store as inside:
        assert inside is store
        inside.add_trials("s", [("t1", _spec(1))])


def test_this_suite_calls_every_method_of_the_contract():
    source = inspect.getsource(inspect.getmodule(test_this_suite_calls_every_method_of_the_contract))
    untested = sorted(m for m in Store.__abstractmethods__ if not re.search(rf"\.{m}\(", source))
    assert untested == []


def _typed(value):
    """A structure with every leaf as (type name, value), times left out: the two stores must
    return the same values of the same types."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items() if k not in ("created", "started", "finished", "lease_expires")}
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def test_both_stores_read_back_the_same_values_of_the_same_types(tmp_path):
    def script(s: Store) -> dict:
        s.add_study("s", "s", "s.toml", {"k": [1, 2.5]})
        s.add_trials("s", [("t1", _spec(1)), ("t2", _spec(2, task="detection")), ("t3", _spec(3))],
                     skipped=[("x", _spec(4), "why")])
        _claim_and_finish(s, "s", _record(scores=(40.0, 55.0)))
        _claim_and_finish(s, "s", _record(scores=(31, 30), task="detection", best_epoch=1.0))  # ints too
        s.claim("r", 60, "s")
        s.add_proposals("s", "p", [("t4", _spec(5), 0, 2)])
        s.put_snapshot({"snapshot_id": "i", "source": "init", "backbone": "R-50", "layers": [_layer("fc", 2, 3)]}, "s")
        return {"trials": s.trials("s"), "specs": s.specs(), "epochs": [s.epochs(t) for t in ("t1", "t2")],
                "held": s.held(), "counts": s.counts(), "snapshots": s.snapshots(), "record": s.record("t2"),
                "layers": s.layer_metrics(["i"]), "tuning": s.tuning_rows("s", [1, 2])[0],
                "studies": s.studies(), "artifacts": s.artifacts("t1")}

    with SQLiteStore(tmp_path / "a.sqlite") as sqlite:
        expected = _typed(script(sqlite))
    assert _typed(script(MemoryStore())) == expected


# -- MemoryStore only -------------------------------------------------------------------------------


def test_memory_store_threads_claim_each_trial_once():
    store = MemoryStore()
    store.add_trials("s", [(f"t{i:02d}", _spec(i)) for i in range(40)])
    claimed: list[str] = []

    def runner(name: str) -> None:
        while (got := store.claim(name, 60, "s")) is not None:
            claimed.append(got[0])
            assert store.finish(got[0], name, _record())

    threads = [threading.Thread(target=runner, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"t{i:02d}" for i in range(40)]
    assert store.counts("s")["done"] == 40


def test_memory_store_keeps_its_data_after_close():
    with MemoryStore() as store:
        store.add_trials("s", [("t1", _spec(1))])
    assert store.counts("s")["pending"] == 1
