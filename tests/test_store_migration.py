"""A store written at schema v2 (tests/fixtures/store-v2.sqlite, see its README) opens with this
bocb and reads the same numbers: read-only (through an upgraded copy in memory, the file untouched)
and by a writing command (upgraded in place)."""

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from bocb.analysis.from_store import results_frame
from bocb.store import SCHEMA_VERSION, SQLiteStore

FIXTURE = Path(__file__).parent / "fixtures" / "store-v2.sqlite"


def _v2_numbers(path: Path) -> tuple[dict, dict]:
    """What v2 stored, read with sqlite3 alone: per trial (final, best, peak memory from the
    record), per (trial, epoch) the headline score (v2 kept it in test_top1 whatever the task)."""
    db = sqlite3.connect(path)
    try:
        trials = {r[0]: (r[1], r[2], r[3]) for r in db.execute(
            "SELECT trial_id, final_top1, best_top1, json_extract(record, '$.peak_memory_mb') FROM trials")}
        epochs = {(r[0], r[1]): r[2] for r in db.execute("SELECT trial_id, epoch, test_top1 FROM epochs")}
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    finally:
        db.close()
    return trials, epochs


@pytest.fixture
def old_store(tmp_path):
    path = tmp_path / "store.sqlite"
    shutil.copy(FIXTURE, path)
    return path


def _check_reads_the_same(store: SQLiteStore, trials: dict, epochs: dict) -> None:
    rows = {r["trial_id"]: r for r in store.trials()}
    assert set(rows) == set(trials) and len(rows) == 5
    for tid, (final, best, memory) in trials.items():
        row = rows[tid]
        assert (row["final_score"], row["best_score"], row["peak_memory_mb"]) == (final, best, memory)
        detection = row["pretrained"] is not None
        assert row["metric"] == ("box_ap" if detection else "top1")
        # top-1 columns hold top-1 only: NULL for the detection trials, whose v2 rows held box AP there
        assert (row["final_top1"], row["best_top1"]) == ((None, None) if detection else (final, best))
        for e in store.epochs(tid):
            assert e["score"] == epochs[(tid, e["epoch"])]
            assert e["test_top1"] == (None if detection else e["score"])
    assert {r["status"] for r in rows.values()} == {"done", "diverged"}


def test_a_v2_store_reads_the_same_numbers_read_only_and_stays_untouched(old_store):
    trials, epochs = _v2_numbers(old_store)
    digest = hashlib.sha256(old_store.read_bytes()).hexdigest()
    with SQLiteStore(old_store, readonly=True) as store:
        _check_reads_the_same(store, trials, epochs)
        study = next(s for s in store.studies() if s["name"] == "fixture-pre")
        frame = results_frame(store, study["study_id"]).set_index("trial_id")
        assert frame["top1"].to_dict() == {t: trials[t][0] for t in frame.index}
        with pytest.raises(sqlite3.OperationalError, match="readonly|query"):  # query-only, as the file
            store.add_study("x", "x", "x.toml", {})
    assert hashlib.sha256(old_store.read_bytes()).hexdigest() == digest


def test_a_writing_open_upgrades_a_v2_store_in_place(old_store):
    trials, epochs = _v2_numbers(old_store)
    with SQLiteStore(old_store) as store:
        _check_reads_the_same(store, trials, epochs)
    db = sqlite3.connect(old_store)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()
    with SQLiteStore(old_store, readonly=True) as store:  # and reads the same again, now at the current version
        _check_reads_the_same(store, trials, epochs)


def test_old_whole_records_and_new_slim_ones_read_back_in_one_upgraded_store(old_store):
    """After the upgrade the store holds v2's whole records and this version's slim ones side by side."""
    old_records = {}
    db = sqlite3.connect(old_store)
    for tid, text in db.execute("SELECT trial_id, record FROM trials WHERE record IS NOT NULL"):
        old_records[tid] = json.loads(text)
    db.close()
    spec = {"backbone": {"short": "R-18", "num_classes": 10}, "recipe": {"name": "pytorch", "tier": "smoke"},
            "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": 1, "weight_decay": 0.0}}, "seed": 0}
    with SQLiteStore(old_store) as store:
        store.add_study("new", "new", "new.toml", {})
        store.add_trials("new", [("fresh", spec)])
        trial_id, claimed = store.claim("r", 60, "new")
        # The record's spec says lr 1.0 where the stored spec says 1: not the same JSON, so it stays.
        record = {"spec": {**claimed, "optimizer": {**claimed["optimizer"], "args": {"lr": 1.0, "weight_decay": 0.0}}},
                  "status": "done", "final_top1": 50.0, "best_top1": 50.0, "code_version": "t",
                  "epochs": [{"epoch": e, "test_top1": 50.0, "score": 50.0, "train_loss": 1.0, "note": {"k": [1, 2]},
                              "images": 10} for e in (1, 2)]}
        assert store.finish(trial_id, "r", record)
        back = store.record(trial_id)
        assert json.dumps(back["spec"], sort_keys=True) == json.dumps(record["spec"], sort_keys=True)
        assert back["epochs"] == record["epochs"] and back["epochs"][0]["note"] is not back["epochs"][1]["note"]
        for tid, whole in old_records.items():
            assert store.record(tid) == whole


# -- schema v4 to v5: packed epoch rows, compressed specs and records --------------------------------

FIXTURE_V4 = Path(__file__).parent / "fixtures" / "store-v4.sqlite"


def _exact(value) -> str:
    """JSON text, which tells 1 from 1.0 and 0.0 from -0.0 where == does not."""
    return json.dumps(value, sort_keys=True)


def _everything(store: SQLiteStore) -> str:
    """All a caller can read of the fixture's study, as exact text."""
    trials = store.trials("fixture-v4")
    return _exact({"trials": trials, "specs": store.specs("fixture-v4"),
                   "records": {t["trial_id"]: store.record(t["trial_id"]) for t in trials},
                   "epochs": {t["trial_id"]: store.epochs(t["trial_id"]) for t in trials},
                   "trained": store.trained_epochs("fixture-v4"),
                   "snapshots": [s for s in store.snapshots("fixture-v4") if s.pop("created")],
                   "layers": store.layer_metrics(["t-cls", "init:R-18"])})


@pytest.fixture
def v4_store(tmp_path):
    path = tmp_path / "store.sqlite"
    shutil.copy(FIXTURE_V4, path)
    return path


def test_a_v4_store_is_read_as_it_is_and_stays_untouched(v4_store):
    db = sqlite3.connect(v4_store)
    raw = {(r[0], r[1]): r[2:] for r in db.execute(
        "SELECT trial_id, epoch, train_loss, test_top1, test_top5, test_loss, lr, seconds_train, seconds_eval, score "
        "FROM epochs")}
    db.close()
    digest = hashlib.sha256(v4_store.read_bytes()).hexdigest()
    with SQLiteStore(v4_store, readonly=True) as store:
        assert store._db.execute("SELECT name FROM sqlite_master WHERE name='epoch_rows'").fetchone() is None  # no copy
        read = {(r["trial_id"], r["epoch"]): tuple(r.values())[2:] for t in ("t-cls", "t-odd", "t-det", "t-div")
                for r in store.epochs(t)}
        assert _exact(sorted(read.items())) == _exact(sorted(raw.items())) and len(raw) == 9
        assert store.record("t-cls")["epochs"][0]["seconds_train"] == 13.345
    assert hashlib.sha256(v4_store.read_bytes()).hexdigest() == digest


def test_a_writing_open_packs_a_v4_store_and_reads_exactly_the_same(v4_store):
    with SQLiteStore(v4_store, readonly=True) as store:
        before = _everything(store)
    with SQLiteStore(v4_store) as store:  # upgraded in place
        assert _everything(store) == before
    db = sqlite3.connect(v4_store)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert db.execute("SELECT name FROM sqlite_master WHERE name='epochs'").fetchone() is None  # moved, not kept twice
    cells = {(r[0], r[1]): r[2:] for r in db.execute(
        "SELECT k.trial_id, e.epoch, typeof(e.seconds_train), typeof(e.seconds_eval), typeof(e.score) "
        "FROM epoch_rows e JOIN trial_keys k USING (key)")}
    db.close()
    assert cells[("t-cls", 1)] == ("integer", "integer", "null")  # milliseconds, score = top-1
    assert cells[("t-odd", 1)] == ("real", "integer", "null")  # 1/3 + 1 s is no whole millisecond
    assert cells[("t-det", 1)] == ("integer", "integer", "real")  # box AP, no top-1
    assert cells[("t-div", 2)] == ("integer", "integer", "blob")  # no score beside a top-1
    with SQLiteStore(v4_store, readonly=True) as store:  # and again, now at v5
        assert _everything(store) == before


def test_specs_and_records_written_at_v4_and_v5_read_back_side_by_side(v4_store):
    with SQLiteStore(v4_store) as store:
        old = _everything(store)
        spec = {"backbone": {"short": "R-18", "num_classes": 10}, "recipe": {"name": "pytorch", "tier": "smoke"},
                "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": 0.5, "weight_decay": 0.0}}, "seed": 3}
        store.add_trials("fixture-v4", [("t-new", spec)])
        store.retry_failed("fixture-v4")
        while (claimed := store.claim("r", 60, "fixture-v4")) is not None:
            trial_id, got = claimed
            rows = [{"epoch": e, "test_top1": 50.0 + e, "score": 50.0 + e, "seconds_train": 2.5} for e in (1, 2)]
            assert store.finish(trial_id, "r", {"spec": got, "status": "done", "epochs": rows, "final_top1": 52.0})
            assert store.record(trial_id)["epochs"] == rows and store.specs()[trial_id] == got
        kinds = dict(store._db.execute("SELECT trial_id, typeof(record) FROM trials WHERE record IS NOT NULL"))
        assert kinds == {"t-cls": "text", "t-odd": "text", "t-det": "text", "t-div": "text", "t-fail": "blob",
                         "t-pending": "blob", "t-new": "blob"}
        again = json.loads(_everything(store))
    old = json.loads(old)
    for part in ("records", "epochs"):
        for tid in ("t-cls", "t-odd", "t-det", "t-div"):
            assert _exact(again[part][tid]) == _exact(old[part][tid])
