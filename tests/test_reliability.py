"""Crash and fault handling of issue 12: unstorable results, dead runners, damaged checkpoints,
weights identity, artifact paths and read-only stores. Real SQLite files, real processes, real
safetensors files; each test runs in about a second."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bocb import checkpoint
from bocb.cli import main
from bocb.data import parse_data_arg
from bocb.runner import RunStats, _store_result, held_trials, runner_alive
from bocb.spec import Pretrained, resolve_trial
from bocb.store import SQLiteStore, StoreError
from bocb.transfer.study import keep_stored_ids, superseded
from bocb.engine import _readable_checkpoint


def _spec(seed: int = 0) -> dict:
    return resolve_trial("R-18", "AdamW", data=parse_data_arg("sample"), num_classes=10, tier="smoke",
                         seed=seed).to_dict()


def _store(tmp_path: Path, n: int = 2) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.add_study("s", "s", "s.toml", {})
    store.add_trials("s", [(f"t{i}", _spec(i)) for i in range(n)])
    return store


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_record_the_store_refuses_becomes_a_failed_trial_with_its_reason(tmp_path):
    with _store(tmp_path, 1) as store:
        trial_id, spec = store.claim("me", 60, "s")
        record = {"trial_id": trial_id, "spec": spec, "status": "done", "final_top1": float("nan"),
                  "best_top1": 10.0, "epochs": [], "seconds": {"wall": 1.0, "train": float("inf")}}
        stats = RunStats()
        _store_result(store, "me", trial_id, record, stats)
        row = store.trials("s")[0]
        assert row["status"] == "failed" and "could not be stored" in row["error"]
        assert "final_top1 = nan, seconds.train = inf" in row["error"]
        assert stats.finished == {"failed": 1}
        assert store.claim("other", 60, "s") is None  # not left running for the next run to trip on
        assert store.retry_failed("s") == 1  # and it can be run again on request


def test_trials_of_a_dead_runner_on_this_host_are_found_and_reclaimed(tmp_path):
    host = socket.gethostname()
    dead, alive, remote = f"{host}:{_dead_pid()}:aa", f"{host}:{os.getpid()}:bb", "elsewhere.example:1:cc"
    assert runner_alive(dead) is False and runner_alive(alive) is True and runner_alive(remote) is None
    with _store(tmp_path, 3) as store:
        for runner in (dead, alive, remote):
            store.claim(runner, 300, "s")
        found, others = held_trials(store, "s")
        assert [r["runner"] for r in found] == [dead]
        assert sorted(r["runner"] for r in others) == sorted([alive, remote])
        assert store.reclaim([(r["trial_id"], r["runner"]) for r in found]) == 1
        assert store.reclaim([(found[0]["trial_id"], dead)]) == 0  # no longer held by it
        trial_id, _ = store.claim("next", 300, "s")
        assert trial_id == found[0]["trial_id"]  # runnable again at once, not after 300 s


def test_a_full_disk_loses_no_result_and_the_next_run_takes_the_trial_back(tmp_path):
    runner = f"{socket.gethostname()}:{_dead_pid()}:dd"  # the runner that will "die" of it
    with _store(tmp_path, 1) as store:
        trial_id, spec = store.claim(runner, 300, "s")
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL, as on a full disk
        record = {"trial_id": trial_id, "spec": spec, "status": "done", "final_top1": 50.0, "best_top1": 50.0,
                  "epochs": [{"epoch": i, "test_top1": 50.0} for i in range(1, 500)],
                  "error": "x" * 100_000}
        with pytest.raises(sqlite3.OperationalError, match="full"):
            _store_result(store, runner, trial_id, record, RunStats())
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        assert store.trials("s")[0]["status"] == "running" and store.epochs(trial_id) == []  # rolled back
        dead, _ = held_trials(store, "s")
        assert [r["trial_id"] for r in dead] == [trial_id]
        store.reclaim([(trial_id, runner)])
        assert store.claim("next", 300, "s")[0] == trial_id


def test_an_unreadable_checkpoint_is_set_aside_and_named(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    record: dict = {}
    assert _readable_checkpoint(path, "t1", torch.device("cpu"), record) is None
    aside = list(tmp_path.glob("checkpoint.safetensors.bad-*"))
    assert not path.exists() and len(aside) == 1 and aside[0].read_bytes().endswith(b"{truncated")
    assert str(aside[0]) in record["checkpoint_set_aside"]
    # Another trial's checkpoint in this trial's folder is set aside the same way.
    checkpoint.save(path, {"trial_id": "t2", "epoch": 1, "model": {}, "stepper": {}, "rng": {}, "rows": [],
                           "seconds": {}})
    record = {}
    assert _readable_checkpoint(path, "t1", torch.device("cpu"), record) is None
    assert "belongs to trial t2" in record["checkpoint_set_aside"]


def test_weights_digest_is_of_the_tensors_not_the_file(tmp_path):
    tensors = {"a.weight": torch.randn(4, 3), "a.bias": torch.zeros(4), "b": torch.ones(2, dtype=torch.bfloat16)}
    save_file(tensors, str(tmp_path / "one.safetensors"), metadata={"x": "1", "y": "2"})
    save_file(dict(reversed(tensors.items())), str(tmp_path / "two.safetensors"), metadata={"y": "2", "x": "1", "z": ""})
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert checkpoint.file_sha256(one) != checkpoint.file_sha256(two)
    assert checkpoint.tensor_sha256(one) == checkpoint.tensor_sha256(two)
    tensors["a.bias"][0] = 1e-7
    save_file(tensors, str(tmp_path / "three.safetensors"))
    assert checkpoint.tensor_sha256(tmp_path / "three.safetensors") != checkpoint.tensor_sha256(one)
    # The digest is sha256 over (name, dtype, shape, bytes) in name order: recomputed here by hand.
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(one), framework="pt") as f:
        for name in sorted(f.keys()):
            x = f.get_tensor(name)
            head = f'["{name}", "{str(x.dtype)[6:]}", {list(x.shape)}]'.encode()
            raw = x.reshape(-1).view(torch.uint8).numpy().tobytes()
            digest.update(len(head).to_bytes(8, "little") + head + len(raw).to_bytes(8, "little") + raw)
    assert checkpoint.tensor_sha256(one) == digest.hexdigest()


def test_fine_tuning_trials_of_an_old_store_keep_their_file_digest_ids(tmp_path):
    model = torch.nn.Linear(3, 2)
    weights = tmp_path / "final.safetensors"
    checkpoint.save_weights(weights, model)
    base = resolve_trial("R-18", "AdamW", data=parse_data_arg("sample"), num_classes=10, tier="smoke")
    new = replace(base, pretrained=Pretrained("R-18 / AdamW", "AdamW", checkpoint.tensor_sha256(weights),
                                              str(weights)), finetune="full")
    old = replace(new, pretrained=replace(new.pretrained, sha256=checkpoint.file_sha256(weights)))
    assert new.trial_id != old.trial_id
    assert keep_stored_ids([new], set()) == [new]
    assert keep_stored_ids([new], {old.trial_id}) == [old]  # same trial as before: nothing re-runs
    # Weights re-saved since (the old file digest no longer matches): the new trial replaces the
    # old one in the study, so the study never holds two trials for one setting.
    assert superseded([new], {old.trial_id: old.to_dict()}) == [old.trial_id]
    assert superseded([old], {old.trial_id: old.to_dict()}) == []
    other_seed = replace(old, seed=1)
    assert superseded([new], {other_seed.trial_id: other_seed.to_dict()}) == []
    with SQLiteStore(tmp_path / "s.sqlite") as store:
        store.add_study("s", "s", "s.toml", {})
        store.add_trials("s", [(old.trial_id, old.to_dict())])
        assert store.unlink("s", [old.trial_id]) == 1
        assert store.trials("s") == [] and store.counts()["total"] == 1  # kept in the store
    # Both digests are accepted when the weights are loaded; anything else is refused.
    for digest in (new.pretrained.sha256, old.pretrained.sha256):
        checkpoint.load_weights(torch.nn.Linear(3, 2), weights, sha256=digest)
    with pytest.raises(ValueError, match="changed since the study was planned"):
        checkpoint.load_weights(torch.nn.Linear(3, 2), weights, sha256="0" * 64)


def test_diagnose_force_keeps_a_good_snapshot_whose_weights_it_cannot_find(tmp_path, monkeypatch):
    from bocb import diagnose

    with _store(tmp_path, 1) as store:
        store.claim("me", 60, "s")
        store.finish("t0", "me", {"status": "done", "final_top1": 50.0, "best_top1": 50.0, "epochs": [],
                                  "artifacts": {"final_weights": "artifacts/t0/final.safetensors"}})
        store.put_snapshot({"snapshot_id": "t0", "trial_id": "t0", "source": "final", "backbone": "R-18",
                            "layers": [{"layer": "fc", "shape": [10, 8], "alpha": 2.0}]})
        monkeypatch.chdir(tmp_path)  # a relative path from an older bocb, read from elsewhere
        assert not any(j.source == "final" for j in diagnose.plan(store, "s", force=True))
        assert store.layer_metrics(["t0"])[0]["alpha"] == 2.0
        # Once the file is there (the run's directory was the store's folder), it resolves to it.
        weights = tmp_path / "artifacts" / "t0" / "final.safetensors"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"")
        monkeypatch.chdir(weights.parent)
        assert store.artifacts("t0")["final_weights"] == str(weights)
        assert [j.path for j in diagnose.plan(store, "s", force=True) if j.source == "final"] == [str(weights)]


def test_reading_commands_open_the_store_read_only(tmp_path, capsys):
    path = tmp_path / "store.sqlite"
    _store(tmp_path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")  # as an old or foreign tool left it
    db.close()
    before = path.read_bytes()
    assert main(["status", "--store", str(path), "--json"]) == 0
    assert main(["export", "--store", str(path)]) == 0
    assert path.read_bytes() == before  # journal mode not switched to WAL, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]
    capsys.readouterr()
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="no bocb tables"):
        SQLiteStore(empty, readonly=True)
    assert empty.read_bytes() == b""  # not initialised by a reading command


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_store_in_a_read_only_folder_can_be_read(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    _store(folder).close()
    folder.chmod(0o555)
    try:
        with SQLiteStore(folder / "store.sqlite", readonly=True) as store:
            assert store.counts("s")["pending"] == 2
    finally:
        folder.chmod(0o755)
