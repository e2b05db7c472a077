"""Weight diagnostics of real trials: measured by the worker, stored, filled in by `bocb diagnose`."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from bocb import diagnose
from bocb.analysis.from_store import weights_frame
from bocb.cli import main
from bocb.data import DatasetSpec, load_dataset
from bocb.diagnostics import layer_metrics
from bocb.diagnostics.snapshot import init_snapshot_id, load_model
from bocb.executors.worker import WorkerConfig, execute
from bocb.spec import resolve_trial
from bocb.store import SCHEMA_VERSION, SQLiteStore
from bocb.trial import FINAL_WEIGHTS, RunOptions, run_trial
from bocb.zoo import init_backbone

SAMPLE = DatasetSpec("sample")


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE)


def _spec(optimizer="sgd_m", backbone="resnet18", **kw):
    spec = resolve_trial(backbone, optimizer, data=SAMPLE, num_classes=10, tier="smoke", epochs=1, **kw)
    return dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=20, test_per_class=10))


def _finish(store: SQLiteStore, study: str, record: dict) -> None:
    tid = record["trial_id"]
    store.add_study(study, study, f"{study}.toml", {})
    store.add_trials(study, [(tid, record["spec"])])
    assert store.claim("r", 60, study)[0] == tid
    assert store.finish(tid, "r", record)


@pytest.mark.slow
def test_worker_measures_final_weights_and_the_store_keeps_them(tmp_path):
    spec = _spec()
    record = execute(spec.to_dict(), WorkerConfig(artifacts_dir=str(tmp_path / "art")), device="cpu")
    assert record["status"] == "done", record.get("error")
    snap = record["diagnostics"]
    assert snap["error"] is None and snap["source"] == "final" and snap["snapshot_id"] == spec.trial_id
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        _finish(store, "s", record)
        stored = store.record(spec.trial_id)["diagnostics"]
        assert "layers" not in stored and stored["seconds"] == snap["seconds"]  # rows live in their table
        frame = weights_frame(store, "s")
    # Recomputed from the file the trial kept: the same layers and numbers as the store's.
    model = load_model(tmp_path / "art" / spec.trial_id / FINAL_WEIGHTS, spec.backbone)
    fresh = layer_metrics(model)
    assert len(frame) == len(fresh) > 5
    assert list(frame["layer"]) == list(fresh["layer"])
    np.testing.assert_allclose(frame["l2"], fresh["l2"], rtol=1e-12)
    np.testing.assert_allclose(frame["alpha"], fresh["alpha"], rtol=1e-12, equal_nan=True)
    assert set(frame["optimizer"]) == {"SGD-M"} and set(frame["source"]) == {"final"}


@pytest.mark.slow
def test_init_snapshot_is_the_network_the_trial_started_from(sample, tmp_path):
    # With lr = 0 and no weight decay SGD never moves a weight, so the kept final weights are the
    # initial ones (BatchNorm buffers aside): they must equal init_backbone(spec, seed).
    spec = _spec(lr=0.0, weight_decay=0.0, seed=3)
    record = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path))
    assert record["status"] == "done", record.get("error")
    final = load_model(tmp_path / FINAL_WEIGHTS, spec.backbone)
    init = init_backbone(spec.backbone, 3)
    for (name, a), (_, b) in zip(final.named_parameters(), init.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    other = init_backbone(spec.backbone, 4)
    assert not torch.equal(next(other.parameters()), next(init.parameters()))
    assert init_snapshot_id(spec.backbone, 3) != init_snapshot_id(spec.backbone, 4)


@pytest.mark.slow
def test_diagnose_fills_missing_snapshots_in_a_process_pool(sample, tmp_path):
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        for i, optimizer in enumerate(("sgd_m", "adamw")):
            spec = _spec(optimizer, seed=i)
            record = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path / spec.trial_id))
            _finish(store, "s", record)  # as a store written before diagnostics existed: none kept
        assert store.snapshots("s") == []
        jobs = diagnose.plan(store, "s")
        # Two finals and one init: the backbone's, under the study's lowest seed (0).
        assert sorted(j.source for j in jobs) == ["final", "final", "init"]
        done = diagnose.run(store, "s", jobs, workers=2)
        assert all(s["error"] is None for s in done) and len(done) == 3
        assert diagnose.plan(store, "s") == []
        assert len(diagnose.plan(store, "s", force=True)) == 3
        frame = weights_frame(store, "s")
    assert sorted(frame["optimizer"].unique()) == ["AdamW", "SGD-M", "init"]
    per_model = frame.groupby("snapshot_id")["layer"].count()
    assert per_model.nunique() == 1 and per_model.iloc[0] > 5
    assert frame.loc[frame["source"] == "init", "trial_id"].isna().all()


def test_store_upgrades_a_v1_file_and_keeps_nan_as_null(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE layer_metrics")
    db.execute("ALTER TABLE trials DROP COLUMN pretrained")
    for column in ("metric", "final_score", "best_score", "peak_memory_mb", "selection", "final_val", "best_val"):
        db.execute(f"ALTER TABLE trials DROP COLUMN {column}")  # added at v3
    # v1's epoch table (before schema v5 packed the rows into epoch_rows), without v3's score
    db.execute("DROP TABLE epoch_rows")
    db.execute("DROP TABLE trial_keys")
    db.execute("CREATE TABLE epochs (trial_id TEXT NOT NULL, epoch INTEGER NOT NULL, train_loss REAL, test_top1 REAL, "
               "test_top5 REAL, test_loss REAL, lr REAL, seconds_train REAL, seconds_eval REAL, "
               "PRIMARY KEY (trial_id, epoch))")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    layer = {"layer": "fc", "kind": "linear", "shape": (10, 4), "n_eig": 4, "alpha": float("nan"),
             "alpha_status": "too few eigenvalues", "n_tail": 4, "xmin": np.nan, "entropy": 3.0, "l2": 1.5,
             "pca_energy": 1.0, "log_norm": 0.1, "log_spectral_norm": 0.05, "stable_rank": 2.0,
             "alpha_weighted": np.nan}
    with SQLiteStore(path) as store:
        version = store._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        assert version == str(SCHEMA_VERSION)
        assert store.trials() == []  # the upgraded trials table reads (with its new column)
        snap = {"snapshot_id": "init:x", "source": "init", "backbone": "R-18", "layers": [layer]}
        store.put_snapshot(snap, "study")
        store.put_snapshot({**snap, "layers": [layer, {**layer, "layer": "fc2"}]}, "study")  # replaces
        rows = store.layer_metrics(["init:x"])
        assert [r["layer"] for r in rows] == ["fc", "fc2"] and rows[0]["alpha"] is None
        assert rows[0]["rows"] == 10 and rows[0]["cols"] == 4
        assert [s["snapshot_id"] for s in store.snapshots("study")] == ["init:x"]
        assert store.snapshots("other") == []


def _bocb(capsys, *args) -> tuple[int, str, str]:
    # In process: the command's code path without paying a second torch import per call.
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_diagnoses_a_checkpoint_and_refuses_unknown_files(tmp_path, capsys):
    spec = _spec(backbone="R-50")
    model = init_backbone(spec.backbone, 0)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    code, _, err = _bocb(capsys, "diagnose", "--checkpoint", bare, "--backbone", "R-50", "--scale", "tiny",
                         "--out", tmp_path / "m.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "m.csv")
    expected = layer_metrics(model)
    assert list(table["layer"]) == list(expected["layer"])
    np.testing.assert_allclose(table["entropy"], expected["entropy"], rtol=1e-9)
    code, _, err = _bocb(capsys, "diagnose", "--checkpoint", bare)
    assert code == 2 and "--backbone" in err and len(err.strip().splitlines()) == 1
    code, _, err = _bocb(capsys, "diagnose", "--checkpoint", tmp_path / "nope.safetensors")
    assert code == 2 and "no checkpoint" in err
    code, _, err = _bocb(capsys, "diagnose", "--checkpoint", bare, "--backbone", "DeiT-S", "--scale", "tiny")
    assert code == 2 and "do not fit DeiT-S" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = _bocb(capsys, "diagnose")
    assert code == 2 and "--checkpoint" in err
