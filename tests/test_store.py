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
