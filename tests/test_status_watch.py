"""`bocb status` lists running trials by name; `bocb status STUDY --watch [SECONDS]` redraws until
no trial is pending or running (exit 0) or Ctrl-C (130), and refuses bad intervals in one line."""

from __future__ import annotations

import signal
import threading
import time

from cli_inproc import bocb
from stores import study_in_store, trial_spec

from bocb.store import SQLiteStore


def _study_with_trials(tmp_path, running: bool):
    """A study of two trials in a real store: one failed, the other running (or failed too)."""
    study_file, study, store_path = study_in_store(tmp_path, "watched", ["R-50"], ["AdamW"])
    specs = [trial_spec("R-50", "AdamW", lr=1e-3, weight_decay=0.05, seed=s) for s in (0, 1)]
    with SQLiteStore(store_path) as store:
        store.add_trials(study.study_id, [(f"t{s}", spec) for s, spec in enumerate(specs)])
        for _ in range(2 if not running else 1):
            trial_id, spec = store.claim("host:1:abc", 60, study.study_id)
            store.finish(trial_id, "host:1:abc", _failed(spec))
        if running:
            store.claim("host:1:abc", 60, study.study_id)
    return study_file, study, store_path


def _failed(spec: dict) -> dict:
    return {"status": "failed", "error": "x", "epochs": [], "spec": spec}


def test_watching_a_finished_study_draws_it_once_and_exits_0(tmp_path):
    study_file, _, store_path = _study_with_trials(tmp_path, running=False)
    began = time.time()
    out = bocb("status", study_file, "--store", store_path, "--watch", "0.05")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("watched in") == 1 and "no trial pending or running" in out.stdout
    assert time.time() - began < 5


def test_watch_names_the_running_trial_and_ends_when_it_finishes(tmp_path):
    study_file, study, store_path = _study_with_trials(tmp_path, running=True)
    plain = bocb("status", study_file, "--store", store_path)
    # Two seeds in the study: the seed is part of the name.
    assert "R-50 x AdamW (lr 1e-3, wd 0.05, seed 1)" in plain.stdout and "host:1:abc" in plain.stdout

    def finish_later() -> None:
        time.sleep(0.6)
        with SQLiteStore(store_path) as store:
            store.finish("t1", "host:1:abc", _failed(trial_spec("R-50", "AdamW", seed=1)))

    worker = threading.Thread(target=finish_later)
    worker.start()
    out = bocb("status", study_file, "--store", store_path, "--watch", "0.1")
    worker.join()
    assert out.returncode == 0, out.stderr
    frames = out.stdout.count("watched in")
    assert frames >= 2 and "seed 1)" in out.stdout and out.stdout.rstrip().endswith("no trial pending or running")


def test_ctrl_c_stops_watching_with_130_and_one_line(tmp_path, monkeypatch):
    study_file, _, store_path = _study_with_trials(tmp_path, running=True)

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", ctrl_c)
    previous = signal.getsignal(signal.SIGINT)
    try:
        out = bocb("status", study_file, "--store", store_path, "--watch")
    finally:
        signal.signal(signal.SIGINT, previous)  # the command ignores further Ctrl-Cs as it exits
    assert out.returncode == 130 and out.stdout.rstrip().endswith("stopped watching; runs go on")
    assert "Traceback" not in out.stderr


def test_bad_watch_intervals_are_one_line_and_exit_2(tmp_path):
    study_file, _, store_path = _study_with_trials(tmp_path, running=False)
    for args, expected in [(("--watch", "0"), "positive number of seconds, got 0"),
                           (("--watch", "nan"), "positive number of seconds, got nan"),
                           (("--watch", "--json"), "give one of them")]:
        out = bocb("status", study_file, "--store", store_path, *args)
        assert out.returncode == 2 and expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out
    # The study after --watch: taken as the interval, so the line says to put the study first.
    out = bocb("status", "--watch", study_file, "--store", store_path)
    assert out.returncode == 2 and f"bocb status {study_file} --watch" in out.stderr


def test_watch_started_before_the_run_waits_for_the_store(tmp_path):
    """Started beside `bocb run`, the store is not there yet: the watch waits for it, then ends
    when nothing is pending or running (here: a store of finished trials appears)."""
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    store = tmp_path / "store.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "bocb", "status", "--store", str(store), "--watch", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Until the watch says it waits (its start-up takes seconds on a loaded machine: a fixed
        # sleep let the store appear before its first look), then the store appears.
        first = []
        deadline = time.time() + 60
        while not any("waiting for the store" in line for line in first) and time.time() < deadline:
            first.append(proc.stdout.readline())
            assert proc.poll() is None  # still waiting, not an error
        shutil.copy(Path(__file__).parent / "fixtures" / "store-v2.sqlite", store)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert any("waiting for the store" in line for line in first) and "no trial pending or running" in out
