"""Callers use only the store protocol: the tuner (against both stores) and a real study through
the runner, the local executor and the analysis into a MemoryStore (no SQLite anywhere)."""

import time

from pathlib import Path

import pytest

from bocb.store import MemoryStore, SQLiteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    made = SQLiteStore(tmp_path / "store.sqlite") if request.param == "sqlite" else MemoryStore()
    yield made
    made.close()


ADAPTIVE_STUDY = """
[study]
name = "adaptive"
data = "sample"
tier = "smoke"
tuning = "adaptive"
seeds = [0]
epochs = 2
train_per_class = 10
test_per_class = 10

[[backbones]]
name = "DeiT-S"
policy = "cifar"

[[optimizers]]
name = "AdamW"
center = { lr = 1e-3, weight_decay = 0.05 }

[tuning]
rungs = 2
max_trials = 9
"""


def test_the_tuner_proposes_and_promotes_through_the_protocol(store, tmp_path):
    """bocb.tuning.adapter against either store: 9 candidates at rung 0 (epoch 1); once all are
    paused there, the best third (3) is promoted to epoch 2 (successive halving, factor 3)."""
    from bocb.study import load_study
    from bocb.tuning.adapter import propose, states

    path = tmp_path / "adaptive.toml"
    path.write_text(ADAPTIVE_STUDY)
    study = load_study(path)
    store.add_study(study.study_id, study.name, study.path, study.settings)
    assert propose(store, study, num_classes=10) == 9
    assert propose(store, study, num_classes=10) == 0  # nothing new until results come in
    scores = {}
    for i in range(9):  # each candidate stops at its rung, scored 10, 20, ... 90 in claim order
        trial_id, spec = store.claim("r", 60, study.study_id)
        assert store.stop_epoch(trial_id, study.study_id) == 1
        scores[trial_id] = 10.0 * (i + 1)
        record = {"status": "paused", "task": "classification", "spec": spec, "final_score": scores[trial_id],
                  "epochs": [{"epoch": 1, "score": scores[trial_id], "test_top1": scores[trial_id]}]}
        assert store.finish(trial_id, "r", record)
    assert store.trained_epochs(study.study_id) == dict.fromkeys(scores, 1)
    assert propose(store, study, num_classes=10) == 3
    promoted = {trial_id: store.stop_epoch(trial_id, study.study_id) for trial_id in scores}
    best = sorted(scores, key=scores.get)[-3:]
    assert {t for t, e in promoted.items() if e == 2} == set(best)
    assert store.counts(study.study_id)["pending"] == 3 and store.counts(study.study_id)["paused"] == 6
    (state,) = states(store, study)
    assert (state.trials, state.epochs, state.rung_epochs) == (9, 9, (1, 2))


TINY_STUDY = """
[study]
name = "in-memory"
data = "sample"
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = 1
train_per_class = 10
test_per_class = 5

[[backbones]]
name = "R-50"
policy = "cifar"

[[optimizers]]
name = "SGD-M"

[[optimizers]]
name = "AdamW"
"""


@pytest.mark.slow
def test_a_study_runs_through_the_runner_into_a_memory_store(tmp_path):
    """The runner, the local executor (one real worker process) and the analysis against a
    MemoryStore: nothing in that path needs SQLite (the worker never opens a store)."""
    from bocb.analysis.from_store import results_frame
    from bocb.study_setup import prepare, register
    from bocb.executors.local import LocalExecutor
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study

    path = tmp_path / "study.toml"
    path.write_text(TINY_STUDY)
    store = MemoryStore()
    prepared = prepare(path, tmp_path / "cache", [], download=False)
    assert register(store, prepared) == 2
    study_id = prepared.study.study_id
    executor = LocalExecutor(WorkerConfig(artifacts_dir=str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"),
                                          device="cpu"), slots=1, devices=["cpu"])
    stats = run_study(store, study_id, executor, lease_s=60)
    assert stats.done == 2 and stats.lost_leases == 0 and stats.stale_results == 0
    assert store.counts(study_id)["done"] + store.counts(study_id)["diverged"] == 2

    frame = results_frame(store, study_id).set_index("trial_id")
    rows = {r["trial_id"]: r for r in store.trials(study_id)}
    assert sorted(frame["optimizer"]) == ["AdamW", "SGD-M"] and set(frame["backbone"]) == {"R-50"}
    for trial_id, row in rows.items():
        (epoch,) = store.epochs(trial_id)  # one epoch, one row
        assert frame.loc[trial_id, "top1"] == row["final_score"] == epoch["score"] == row["final_top1"]
        assert 0.0 <= epoch["score"] <= 100.0 and row["metric"] == "top1" and row["attempts"] == 1
        assert store.record(trial_id)["spec"] == store.specs(study_id)[trial_id]
        weights = store.artifacts(trial_id)["final_weights"]
        assert weights.startswith(str(tmp_path / "artifacts" / trial_id)) and Path(weights).exists()
        # A finished trial never resumes: its resume checkpoint is gone, from disk and the store.
        assert "checkpoint" not in store.artifacts(trial_id) and "checkpoint" not in store.record(trial_id)["artifacts"]
        assert not list((tmp_path / "artifacts" / trial_id).glob("checkpoint*"))

    # Weight diagnostics as `bocb run` ends: the trials' final snapshots came with their records;
    # the random-init one is measured now and linked to the study.
    from bocb.analysis.from_store import weights_frame
    from bocb.commands.diagnose import diagnose_study

    (init,) = diagnose_study(store, study_id, workers=1)
    assert init["source"] == "init" and diagnose_study(store, study_id, workers=1) == []  # nothing missing
    snaps = {s["snapshot_id"]: s["source"] for s in store.snapshots(study_id)}
    assert snaps == {**dict.fromkeys(rows, "final"), init["snapshot_id"]: "init"}
    weights = weights_frame(store, study_id)
    assert set(weights["snapshot_id"]) == set(snaps) and (weights["layer_index"] >= 0).all()


def test_a_ctrl_c_right_after_a_claim_hands_that_trial_back(tmp_path):
    """KeyboardInterrupt between the claim's commit and the runner noting it: the trial must not
    stay `running` (a clean-clone run on a loaded machine left one so)."""
    from bocb.executors.local import LocalExecutor
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study
    from bocb.study_setup import prepare, register

    class InterruptedAfterClaim(MemoryStore):
        def claim(self, *args, **kwargs):
            super().claim(*args, **kwargs)
            raise KeyboardInterrupt  # as if Ctrl-C arrived on the claim's return

    path = tmp_path / "study.toml"
    path.write_text(TINY_STUDY)
    store = InterruptedAfterClaim()
    prepared = prepare(path, tmp_path / "cache", [], download=False)
    register(store, prepared)
    study_id = prepared.study.study_id
    executor = LocalExecutor(WorkerConfig(artifacts_dir=str(tmp_path / "artifacts"), device="cpu"), slots=1)
    with pytest.raises(KeyboardInterrupt):
        run_study(store, study_id, executor, lease_s=60)
    counts = store.counts(study_id)
    assert counts["running"] == 0 and counts["pending"] == 2, counts
    assert sum(r["attempts"] for r in store.trials(study_id)) == 1  # the claim did happen


@pytest.mark.slow
def test_a_deadline_stops_the_run_hands_trials_back_and_the_next_run_resumes_them(tmp_path):
    """The probe's time budget: past ``deadline`` the runner stops its workers and hands its running
    trials back (as a Ctrl-C does) but returns, with ``out_of_time``; the next run resumes them
    from their checkpoints and every epoch is stored once."""
    from bocb.executors.local import LocalExecutor
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study
    from bocb.study_setup import prepare, register

    path = tmp_path / "study.toml"
    path.write_text(TINY_STUDY.replace("epochs = 1", "epochs = 12").replace("R-50", "R-18"))
    store = MemoryStore()
    prepared = prepare(path, tmp_path / "cache", [], download=False)
    register(store, prepared)
    study_id = prepared.study.study_id
    config = WorkerConfig(artifacts_dir=str(tmp_path / "artifacts"), cache_dir=str(tmp_path / "cache"), device="cpu")
    executor = LocalExecutor(config, slots=1, devices=["cpu"])  # its fork server starts here, before the clock
    began = time.time()
    stats = run_study(store, study_id, executor, lease_s=60, deadline=began + 6)
    assert stats.out_of_time and stats.handed_back == 1 and len(stats.progress) == 0
    assert time.time() - began < 6 + 5  # stopping the worker takes a moment, not a trial
    counts = store.counts(study_id)
    assert counts["running"] == 0 and counts["pending"] + counts["done"] == 2 and counts["pending"] >= 1, counts
    stats = run_study(store, study_id, LocalExecutor(config, slots=1, devices=["cpu"]), lease_s=60)
    assert not stats.out_of_time and store.counts(study_id)["done"] == 2
    for row in store.trials(study_id):
        assert [e["epoch"] for e in store.epochs(row["trial_id"])] == list(range(1, 13))
