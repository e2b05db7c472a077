"""Adaptive tuning with real trials: the store's proposal records, rung pauses that resume
exactly, a study through `bocb run` / status / report / recommend, and kill -9 + rerun."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bocb.data import DatasetSpec, load_dataset
from bocb.spec import resolve_trial
from bocb.store import SQLiteStore
from bocb.trial import RunOptions, run_trial
from cli_inproc import bocb as _bocb

SAMPLE = DatasetSpec("sample")
KEYS = ("epoch", "train_loss", "test_top1", "test_top5", "test_loss", "lr")

TINY = """
[study]
name = "{name}"
data = "sample"
tier = "smoke"
tuning = "adaptive"
seeds = [0, 1]
epochs = 2
batch_size = 25
train_per_class = 10
test_per_class = 10

[[backbones]]
name = "DeiT-S"
policy = "cifar"

[[optimizers]]
name = "AdamW"
center = {{ lr = 1e-3, weight_decay = 0.05 }}

[tuning]
rungs = 2
max_trials = 9
"""


def _spec(epochs=3):
    spec = resolve_trial("DeiT-S", "AdamW", data=SAMPLE, num_classes=10, tier="smoke", epochs=epochs,
                         policy="cifar", batch_size=25)
    return dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=10, test_per_class=10))


def test_store_records_each_proposal_once_and_a_promotion_resumes_the_paused_trial(tmp_path):
    spec = _spec().to_dict()
    with SQLiteStore(tmp_path / "s.sqlite") as store:
        store.add_study("s", "s", "s.toml", {})
        assert store.add_proposals("s", "p", [("t1", spec, 0, 1)]) == 1
        assert store.add_proposals("s", "p", [("t1", spec, 0, 1)]) == 0  # a second runner: nothing new
        assert store.stop_epoch("t1") == 1 and store.counts("s")["pending"] == 1
        trial_id, _ = store.claim("r", 60, "s")
        record = {"status": "paused", "epochs": [{"epoch": 1, "test_top1": 20.0}], "final_top1": 20.0}
        assert store.finish(trial_id, "r", record)
        assert store.claim("r", 60, "s") is None  # paused trials are not claimed
        rows, scores = store.tuning_rows("s", [1, 3])
        assert [(r["trial_id"], r["rung"], r["status"]) for r in rows] == [("t1", 0, "paused")]
        assert scores == {("t1", 1): 20.0}
        assert store.add_proposals("s", "p", [("t1", spec, 1, 3)]) == 1  # promotion
        assert store.add_proposals("s", "p", [("t1", spec, 1, 3)]) == 0
        assert store.stop_epoch("t1") == 3 and store.claim("r", 60, "s")[0] == "t1"


@pytest.mark.slow
def test_rung_pauses_and_promotions_equal_an_uninterrupted_run(tmp_path):
    sample = load_dataset(SAMPLE)
    spec = _spec(epochs=3)
    whole = run_trial(spec, sample, RunOptions(device="cpu"))
    work = tmp_path / "rungs"
    first = run_trial(spec, sample, RunOptions(device="cpu", work_dir=work, stop_at_epoch=1))
    assert first["status"] == "interrupted" and len(first["epochs"]) == 1
    again = run_trial(spec, sample, RunOptions(device="cpu", work_dir=work, stop_at_epoch=1))
    assert again["status"] == "interrupted" and again["resumed_from_epoch"] == 1  # nothing trained
    second = run_trial(spec, sample, RunOptions(device="cpu", work_dir=work, stop_at_epoch=2))
    assert second["status"] == "interrupted" and len(second["epochs"]) == 2
    final = run_trial(spec, sample, RunOptions(device="cpu", work_dir=work, stop_at_epoch=3))
    assert final["status"] == "done"
    assert [{k: r[k] for k in KEYS} for r in final["epochs"]] == [{k: r[k] for k in KEYS} for r in whole["epochs"]]


def _env(cache):
    return dict(os.environ, BOCB_CACHE_DIR=str(cache))


def _proposals(store_path, study_id):
    with SQLiteStore(store_path) as s:
        rows, _ = s.tuning_rows(study_id, [])
        return sorted((r["trial_id"], r["rung"], r["epochs"]) for r in rows)


@pytest.mark.slow
def test_adaptive_study_runs_end_to_end_and_reports(tmp_path):
    from bocb.analysis.from_store import results_frame
    from bocb.study import load_study

    path = tmp_path / "a.toml"
    path.write_text(TINY.format(name="adaptive"))
    store, cache = tmp_path / "store.sqlite", tmp_path / "cache"
    run = _bocb("run", path, "--store", store, cache=cache)
    assert run.returncode == 0, run.stderr[-3000:]
    study = load_study(path)
    with SQLiteStore(store) as s:
        counts = s.counts(study.study_id)
        frame = results_frame(s, study.study_id)
        trials = s.trials(study.study_id)
    # 9 candidates at epoch 1, the best 3 resumed to epoch 2, the optimum repeated on seed 1
    assert counts["paused"] == 6 and counts["done"] + counts["diverged"] == 4 and counts["pending"] == 0
    assert set(frame["trial_id"]) == {t["trial_id"] for t in trials if t["status"] in ("done", "diverged")}
    status = _bocb("status", path, "--store", store, "--json", cache=cache)
    pair = json.loads(status.stdout.strip().splitlines()[-1])["tuning"][0]
    assert pair["optimum"] == "budget" and pair["trials"] == 10 and pair["epochs"] == 9 + 3 + 2
    assert _bocb("run", path, "--store", store, cache=cache).returncode == 0  # nothing new to run
    assert _proposals(store, study.study_id) == _proposals(store, study.study_id)
    report = _bocb("report", path, "--store", store, "--out", tmp_path / "rep", "--resamples", "50", cache=cache)
    assert report.returncode == 0, report.stderr[-3000:]
    text = next((tmp_path / "rep").glob("*.md")).read_text()
    assert "Adaptive tuning" in text and "paused" in text
    rec = _bocb("recommend", "--backbone", "DeiT-S", "--evidence", "store", "--store", store, cache=cache)
    assert rec.returncode == 0, rec.stderr[-3000:]


@pytest.mark.slow
def test_kill_9_and_rerun_give_the_same_proposals(tmp_path):
    from bocb.study import load_study

    path = tmp_path / "k.toml"
    path.write_text(TINY.format(name="killed"))
    study_id = load_study(path).study_id
    cache = tmp_path / "cache"
    reference = tmp_path / "reference.sqlite"
    # Each store its own artifacts: a checkpoint left by the reference run (same trial ids) would
    # let the other run resume past its rungs.
    assert _bocb("run", path, "--store", reference, "--artifacts", tmp_path / "ref-art", cache=cache).returncode == 0
    store = tmp_path / "killed.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(path), "--store", str(store), "--lease", "4",
                             "--artifacts", str(tmp_path / "art")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(cache),
                            start_new_session=True)
    deadline = time.time() + 1800
    try:
        while time.time() < deadline:  # kill in the middle of rung 0
            time.sleep(0.5)
            if store.exists():
                with SQLiteStore(store) as s:
                    if s.counts(study_id)["paused"] >= 3:
                        break
        else:
            pytest.fail("the study never paused three candidates")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(4.5)  # the dead runner's leases expire
    rerun = _bocb("run", path, "--store", store, "--lease", "4", "--artifacts", tmp_path / "art", cache=cache)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _proposals(store, study_id) == _proposals(reference, study_id)
    with SQLiteStore(store) as a, SQLiteStore(reference) as b:
        done = lambda s: sorted((t["trial_id"], t["final_top1"]) for t in s.trials(study_id) if t["status"] == "done")  # noqa: E731
        assert done(a) == done(b)
