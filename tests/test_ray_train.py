"""Multi-process trials under ``--executor ray``: one Ray Train TorchTrainer per trial
(bocb.executors.ray_executor, bocb.executors.ray_train).

The slow test runs the executor in this process on a private Ray instance with 2 CPUs: the tiny
DeiT-S trial of tests/test_distributed.py on two gloo workers must match the same trial in one
process (the trial is built so that the two agree to float rounding), a trial whose global batch
does not split over two workers fails fast with one line, and every socket the instance listens
on while they run is loopback.
"""

from __future__ import annotations

import dataclasses
import os
import time
from types import SimpleNamespace

import pytest

from bocb.executors import sockets


def test_bocb_run_hands_the_processes_per_trial_to_the_ray_executor(monkeypatch, tmp_path):
    pytest.importorskip("ray")
    from bocb import study_run
    from bocb.executors import ray_executor

    seen = {}
    monkeypatch.setattr(ray_executor, "RayExecutor", lambda config, **kwargs: seen.update(kwargs))
    options = study_run.make_options(tmp_path / "s.sqlite", "ray", 1, "cpu", None, None, False, None, False, False,
                                     30.0, None, (), False, processes_per_trial=4)
    study = SimpleNamespace(time_limit_s=None, processes_for=lambda spec: 2)
    study_run._executor(options, None, study)
    assert seen["processes"]({}) == 4  # the command line's, over the study's
    study_run._executor(dataclasses.replace(options, processes_per_trial=None), None, study)
    assert seen["processes"]({}) == 2


def test_a_failed_ray_train_run_is_one_line_per_rank():
    pytest.importorskip("ray.train.torch")
    from ray.train import ControllerError, WorkerGroupError

    from bocb.executors.ray_train import one_line

    snippet = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in loop\n"
               "bocb.executors.ray_train.RankFailed: rank 1: ValueError: bad batch\n")
    error = WorkerGroupError("Training failed", {1: RuntimeError(snippet), 0: RuntimeError("killed\nby OOM")})
    assert one_line(error) == "rank 0: by OOM; rank 1: ValueError: bad batch"
    assert one_line(ControllerError(TimeoutError("no\nplacement group"))) == "TimeoutError: placement group"


def _named(part: str) -> list[int]:
    """This process's descendants whose name holds ``part``."""
    return [pid for pid in sockets.descendants(os.getpid()) if part in sockets.process_name(pid)]


def _ray_processes(pids: set[int]) -> list[str]:
    names = {pid: sockets.process_name(pid) for pid in pids}
    return [n for n in names.values() if "ray" in n.lower() or n in ("gcs_server", "raylet")]


@pytest.mark.slow
def test_a_two_process_trial_runs_as_a_torch_trainer_on_loopback(tmp_path):
    pytest.importorskip("ray.train.torch")
    import torch

    from bocb.data import DatasetSpec, load_dataset
    from bocb.executors.ray_executor import RayExecutor
    from bocb.executors.worker import WorkerConfig
    from bocb.trial import RunOptions, run_trial
    from test_distributed import _close, _spec

    good = _spec()
    bad = dataclasses.replace(good, recipe=good.recipe.with_changes(batch_size=21))  # 21 does not split over 2
    big = dataclasses.replace(good, seed=good.seed + 1)
    processes = {good.seed: 2, big.seed: 3}
    home_results = os.path.expanduser("~/ray_results")  # Ray Train's default storage: left alone
    before = set(os.listdir(home_results)) if os.path.isdir(home_results) else None

    artifacts = tmp_path / "artifacts"
    executor = RayExecutor(WorkerConfig(artifacts_dir=str(artifacts), cache_dir=str(tmp_path / "cache"), device="cpu"),
                           slots=2, num_cpus=2, processes=lambda spec: processes[spec["seed"]])
    records, took, listening = {}, {}, {}
    try:
        executor.submit(big.trial_id, big.to_dict(), "claim-big")  # 3 processes on 2 slots: never fits
        [(trial_id, refused)] = executor.poll(0)
        assert (trial_id, refused["status"]) == (big.trial_id, "failed")
        assert "runs on 3 processes but this run has 2 slots (--slots)" in refused["error"]

        start = time.time()
        executor.submit(bad.trial_id, bad.to_dict(), "claim-bad")
        assert executor.free_slots == 0  # both slots are the trial's
        executor.submit(good.trial_id, good.to_dict(), "claim-good")  # waits for them
        while executor.running:
            for trial_id, record in executor.poll(1.0):
                records[trial_id], took[trial_id] = record, time.time() - start
            for s in sockets.listening(sockets.descendants(os.getpid())):
                listening.setdefault((s.protocol, s.address, s.port), (s, sockets.process_name(s.pid)))

        # A trainer past the time limit stops, and its CPUs come back (a killed one would keep its
        # placement group: see the module doc).
        long = dataclasses.replace(good, recipe=good.recipe.with_changes(epochs=1000))
        executor.submit(long.trial_id, long.to_dict(), "claim-long")
        deadline = time.time() + 120
        while not _named("RayTrainWorker") and time.time() < deadline:
            assert executor.poll(1.0) == []
        executor.time_limit_s = 1e-3
        [(trial_id, stopped)] = executor.poll(0)
        assert (trial_id, stopped["status"]) == (long.trial_id, "failed") and "time limit" in stopped["error"]
        def cpus() -> float | None:
            return executor._ray.available_resources().get("CPU")

        deadline = time.time() + 30
        while (executor.free_slots < 2 or _named("RayTrainWorker") or cpus() != 2) and time.time() < deadline:
            executor.poll(0.5)
        assert executor.free_slots == 2 and _named("RayTrainWorker") == [] and cpus() == 2
    finally:
        executor.shutdown()

    # Every socket the instance listened on while the trainers ran (their workers' process group
    # included) was loopback.
    assert [f"{s.address}:{s.port} ({name})" for s, name in listening.values() if not s.loopback] == []
    assert any("RayTrainWorker" in name for _, name in listening.values()), listening

    failed = records[bad.trial_id]
    assert failed["status"] == "failed" and "\n" not in failed["error"], failed["error"]
    # Each rank that raised before Ray Train stopped the group: both, or (seen in a clean-clone run)
    # only the first, the other stopped before its own error reached the controller.
    rank_error = "ValueError: a global batch of 21 does not split evenly over 2 processes"
    assert failed["error"] in (f"2-process trial failed under Ray Train: rank 0: {rank_error}; rank 1: {rank_error}",
                               f"2-process trial failed under Ray Train: rank 0: {rank_error}",
                               f"2-process trial failed under Ray Train: rank 1: {rank_error}")
    assert took[bad.trial_id] < 120  # Ray Train's start-up, then both ranks fail at their first batch

    record = records[good.trial_id]
    assert record["status"] == "done", record.get("error")
    assert (record["processes"], record["batch_per_process"], record["claim"]) == (2, 10, "claim-good")
    assert (artifacts / good.trial_id / "final.safetensors").exists()
    assert (artifacts / good.trial_id / "ray_train").is_dir()  # Ray Train's run state, not ~/ray_results
    assert (set(os.listdir(home_results)) if os.path.isdir(home_results) else None) == before

    torch.set_num_threads(1)
    single = run_trial(_spec(), load_dataset(DatasetSpec("sample")), RunOptions(device="cpu"))
    _close(record["epochs"], single["epochs"])  # train_loss, test_loss to rel 1e-4, top-1 equal

    deadline = time.time() + 30  # the private instance stopped with the executor
    while _ray_processes(sockets.descendants(os.getpid())) and time.time() < deadline:
        time.sleep(0.5)
    assert _ray_processes(sockets.descendants(os.getpid())) == []
