"""SQLiteStore only: several connections (= several runners) on one real file, schema versions.
What every store must do is in test_store_contract.py (run against SQLite and MemoryStore)."""

import sqlite3

import pytest

from bocb.store import SCHEMA_VERSION, SQLiteStore, StoreVersionError


def _spec(i: int) -> dict:
    return {
        "backbone": {"short": "R-50"},
        "optimizer": {"short": "SGD-M", "category": "a", "args": {"lr": i / 10, "weight_decay": 1e-4}},
        "recipe": {"name": "pytorch", "tier": "smoke"},
        "seed": i,
    }


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store.sqlite"


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
    assert claimed == [f"t{i}" for i in range(5)]  # each exactly once, in study order
    assert stores[0].claim("runner0", 60, "s") is None
    for s in stores:
        s.close()


def test_schema_version_mismatch_names_both_versions(path):
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match=f"v99.*v{SCHEMA_VERSION}"):
        SQLiteStore(path)


def test_a_relative_artifact_path_is_resolved_against_the_store_folder(path):
    (path.parent / "artifacts").mkdir()
    (path.parent / "artifacts" / "w.safetensors").write_bytes(b"")
    with SQLiteStore(path) as store:
        store.set_artifact("t1", "final_weights", "artifacts/w.safetensors")
        store.set_artifact("t1", "checkpoint", "artifacts/missing.safetensors")
        assert store.artifacts("t1") == {"checkpoint": "artifacts/missing.safetensors",
                                         "final_weights": str(path.parent / "artifacts" / "w.safetensors")}


def test_packed_epoch_cells_read_back_exactly(path):
    """Schema v5 keeps seconds as milliseconds and a score equal to the top-1 as NULL: every value
    comes back as it went in (a REAL column's float), whatever it is."""
    import json

    seconds = [12.345, 1 / 3, 2, 0.0, -0.0, 1e300, 30.0, 123456.789, None]
    scores = [(50.5, 50.5), (None, 40.0), (None, None), (7.25, None), (60.0, 61.0), (-0.0, 0.0), (3, 3.0)]
    rows = [{"epoch": i + 1, "seconds_train": s, "seconds_eval": seconds[-1 - i], "score": sc, "test_top1": top1,
             "lr": 0.1} for i, (s, (sc, top1)) in enumerate(zip(seconds, scores * 2, strict=False))]
    with SQLiteStore(path) as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [("t0", _spec(0))])
        store.claim("r", 60, "s")
        assert store.finish("t0", "r", {"status": "done", "epochs": rows})
        back = store.epochs("t0")
        record = store.record("t0")
    as_real = lambda v: None if v is None else float(v) + 0.0  # noqa: E731 - a REAL column's value (-0.0 is 0)
    for row, got in zip(rows, back, strict=True):
        want = {k: as_real(row[k]) for k in ("seconds_train", "seconds_eval", "score", "test_top1")}
        assert json.dumps({k: got[k] for k in want}) == json.dumps(want), row  # 1 and 1.0 told apart
    assert json.dumps(record["epochs"], sort_keys=True) == json.dumps(rows, sort_keys=True)  # as given, ints too
