"""The store contract, on real SQLite files (several connections = several runners)."""

import sqlite3
import time

import pytest

from bocb.store import SCHEMA_VERSION, SQLiteStore, StoreVersionError


def _spec(i: int) -> dict:
    return {
        "backbone": {"short": "R-50"},
        "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": 0.1 * i, "weight_decay": 1e-4}},
        "recipe": {"name": "pytorch", "tier": "smoke"},
        "seed": i,
    }


def _record(status="done", top1=50.0) -> dict:
    return {
        "status": status, "final_top1": top1, "best_top1": top1, "best_epoch": 1, "error": None,
        "epochs": [{"epoch": 1, "train_loss": 1.0, "test_top1": top1, "test_top5": 90.0, "test_loss": 1.2,
                    "lr": 0.1, "seconds_train": 1.0, "seconds_eval": 0.1}],
        "seconds": {"train": 1.0, "eval": 0.1, "wall": 1.2}, "device": {"host": "h"},
        "artifacts": {"final_weights": "/x/final.safetensors"},
    }


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store.sqlite"


def test_trials_are_added_once_and_shared_between_studies(path):
    with SQLiteStore(path) as store:
        store.add_study("s1", "one", "one.toml", {"a": 1})
        assert store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2))]) == 2
        assert store.add_trials("s1", [("t1", _spec(1)), ("t2", _spec(2))]) == 0
        store.add_study("s2", "two", "two.toml", {"a": 2})
        assert store.add_trials("s2", [("t2", _spec(2)), ("t3", _spec(3))]) == 1
        assert store.counts("s1")["total"] == 2 and store.counts("s2")["total"] == 2
        assert store.counts()["total"] == 3


def test_claims_are_exclusive_across_connections(path):
    with SQLiteStore(path) as a:
        a.add_study("s", "s", "s.toml", {})
        a.add_trials("s", [(f"t{i}", _spec(i)) for i in range(5)])
    stores = [SQLiteStore(path) for _ in range(3)]
    claimed = []
    for _ in range(5):
        for i, store in enumerate(stores):
            got = store.claim(f"runner{i}", lease_s=60, study_id="s")
            if got:
                claimed.append(got[0])
    assert sorted(claimed) == [f"t{i}" for i in range(5)]  # each exactly once, in study order
    assert stores[0].claim("runner0", 60, "s") is None
    for s in stores:
        s.close()


def test_expired_lease_is_taken_over_and_the_old_runner_cannot_finish(path):
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t1", _spec(1))])
        assert store.claim("dead", lease_s=0.05, study_id="s")[0] == "t1"
        assert store.claim("alive", lease_s=60, study_id="s") is None  # lease still live
        time.sleep(0.1)
        assert store.claim("alive", lease_s=60, study_id="s")[0] == "t1"
        assert not store.renew("t1", "dead", 60)
        assert not store.finish("t1", "dead", _record())
        assert store.finish("t1", "alive", _record(top1=61.0))
        row = store.trials("s")[0]
        assert row["status"] == "done" and row["best_top1"] == 61.0 and row["attempts"] == 2
        assert store.epochs("t1")[0]["test_top1"] == 61.0
        assert store.artifacts("t1") == {"final_weights": "/x/final.safetensors"}
        assert store.record("t1")["final_top1"] == 61.0


def test_finished_trials_are_not_claimed_again_failed_ones_on_request(path):
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t1", _spec(1)), ("t2", _spec(2))])
        for status in ("done", "failed"):
            tid, _ = store.claim("r", 60, "s")
            store.finish(tid, "r", _record(status))
        assert store.claim("r", 60, "s") is None
        assert store.retry_failed("s") == 1
        assert store.claim("r", 60, "s")[0] == "t2"


def test_release_hands_a_trial_back(path):
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t1", _spec(1))])
        store.claim("r", 60, "s")
        store.release("t1", "r")
        assert store.counts("s")["pending"] == 1


def test_skipped_rows_keep_their_reason(path):
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [], skipped=[("x1", _spec(1), "no paper value")])
        row = store.trials("s")[0]
        assert row["status"] == "skipped" and row["skip_reason"] == "no paper value"
        assert store.claim("r", 60, "s") is None


def test_schema_version_mismatch_names_both_versions(path):
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match=f"v99.*v{SCHEMA_VERSION}"):
        SQLiteStore(path)


def test_bad_status_is_refused(path):
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t1", _spec(1))])
        store.claim("r", 60, "s")
        with pytest.raises(ValueError, match="status"):
            store.finish("t1", "r", _record("pending"))
