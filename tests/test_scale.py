"""What keeps a 30,000-trial study cheap: per-process caches, constant-time claims, a finished
trial's disk."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from bocb.store import SQLiteStore
from bocb.study import expand, load_study
from stores import trial_spec


def test_expanding_a_study_looks_each_library_version_up_once(monkeypatch, tmp_path):
    from bocb import provenance

    provenance.distribution_version.cache_clear()
    calls: Counter = Counter()
    real = metadata.version

    def counted(dist: str) -> str:
        calls[dist] += 1
        return real(dist)

    monkeypatch.setattr(metadata, "version", counted)
    study = tmp_path / "grid.toml"
    study.write_text('backbones = ["R-18", "DeiT-S", "CNX-T", "timm:resnet10t"]\n'
                     'optimizers = ["SGD-M", "AdamW", "LAMB", "Adan", "RMSProp"]\n'
                     '[study]\nname = "grid"\ntuning = "grid"\ntier = "smoke"\nseeds = 2\n')
    trials, _ = expand(load_study(study), 10)
    assert len(trials) == 4 * 5 * 25 * 2
    # One look-up per distribution (torch, timm, torchvision, pytorch-optimizer, ...), not per trial.
    assert calls and max(calls.values()) == 1, calls


def _store_with(path, n: int) -> SQLiteStore:
    store = SQLiteStore(path)
    store.add_study("S", "s", "s.toml", {})
    store.add_trials("S", [(f"t{i:06d}", trial_spec("R-18", "SGD-M", 0.1, 5e-4, seed=i)) for i in range(n)])
    return store


def _claim_work(store: SQLiteStore) -> int:
    """SQLite virtual-machine steps (in thousands) one claim takes: a measure of the rows it reads
    that, unlike a time, does not depend on the machine's load."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    store._db.set_progress_handler(tick, 1000)
    try:
        assert store.claim("r", 60, "S") is not None
    finally:
        store._db.set_progress_handler(None, 0)
    return steps[0]


def test_a_claim_reads_a_few_rows_whatever_the_study_size(tmp_path):
    work = {}
    for n in (500, 10_000):
        with _store_with(tmp_path / f"{n}.sqlite", n) as store:
            for _ in range(3):  # the first claim of a process walks from the study's start
                store.claim("r", 60, "S")
            work[n] = max(_claim_work(store) for _ in range(5))
    # Sorting every pending trial (the old claim) took work proportional to n: 20x the trials
    # would be about 20x the steps.
    assert work[10_000] <= 2 * max(work[500], 1), work


def test_claims_keep_study_order_and_never_leave_a_trial_behind(tmp_path):
    with _store_with(tmp_path / "s.sqlite", 6) as store, SQLiteStore(tmp_path / "s.sqlite") as other:
        first = [store.claim("r", 60, "S")[0] for _ in range(3)]
        assert first == ["t000000", "t000001", "t000002"]
        store.release("t000001", "r")  # this store's own release: claimed next, in study order
        assert store.claim("r", 60, "S")[0] == "t000001"
        # Another process hands t000000 back: found once nothing lies ahead of the cursor.
        other.release("t000000", "r")
        rest = [store.claim("r", 60, "S")[0] for _ in range(4)]
        assert rest == ["t000003", "t000004", "t000005", "t000000"]
        assert store.claim("r", 60, "S") is None


def _row(i: int, status: str = "done", error: str | None = None) -> dict:
    return {"trial_id": f"t{i}", "backbone": ("R-18", "DeiT-S")[i % 2], "pretrained": None, "optimizer": "AdamW",
            "lr": 10.0 ** -(i % 4), "weight_decay": 0.05, "seed": i, "status": status,
            "final_score": None if status == "failed" else float(i % 50), "best_score": None, "error": error}


def _render(table) -> str:
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_the_end_of_a_big_run_counts_and_a_small_one_lists_with_errors():
    from bocb.commands.run import MAX_LISTED, _results_table

    small = _render(_results_table([_row(0), _row(1, "failed", "Traceback ...\nRuntimeError: CUDA out of memory")]))
    assert "error" in small and "RuntimeError: CUDA out of memory" in small and "Traceback" not in small
    rows = [_row(i) for i in range(MAX_LISTED * 100)] + [_row(-2, "failed", "boom")]
    big = _render(_results_table(rows)).splitlines()
    assert len(big) < 15  # a line per backbone, not per trial
    header = [c.strip() for c in next(line for line in big if "best final" in line).split("┃")[1:-1]]
    r18 = dict(zip(header, [c.strip() for c in next(line for line in big if "R-18" in line).split("│")[1:-1]]))
    # 3,000 done R-18 trials (even i), one failed, the best final score 48 (i % 50 over even i).
    assert r18 == {"backbone": "R-18", "done": "3000", "failed": "1", "best final": "48.00", "with": "AdamW (lr 1)"}  # i = 48 first: lr 10^-(48 % 4)


def test_a_record_is_stored_without_its_copies_and_read_back_whole(tmp_path):
    with _store_with(tmp_path / "s.sqlite", 2) as store:
        trial_id, spec = store.claim("r", 60, "S")
        rows = [{"epoch": e, "train_loss": 2.0 - e / 10, "test_top1": 10.0 + e, "test_top5": 50.0 + e,
                 "test_loss": 1.5, "score": 10.0 + e, "lr": 0.1 / e, "seconds_train": 3.25, "seconds_eval": 0.5,
                 "images": 5000, "val_top1": 9.5 + e} for e in range(1, 201)]
        record = {"spec": spec, "status": "done", "epochs": rows, "final_top1": 210.0 - 100, "best_top1": 110.0,
                  "seconds": {"train": 650.0}, "code_version": "test"}
        assert store.finish(trial_id, "r", record)
        back = store.record(trial_id)
        assert back["spec"] == spec and back["epochs"] == rows  # every field of every row, exactly
        assert {k: v for k, v in back.items() if k not in ("spec", "epochs")} == \
            {k: v for k, v in record.items() if k not in ("spec", "epochs")} | \
            {k: v for k, v in back.items() if k not in record}  # fields finish adds (task, metric, ...)
        stored = store._db.execute("SELECT record FROM trials WHERE trial_id=?", (trial_id,)).fetchone()[0]
        text = zlib.decompress(stored).decode()
        # The stored text keeps only what no other table holds: per row the epoch, images and val_top1.
        assert text.count('"test_top1"') == 1 and '"spec": {' not in text and '"images": 5000' in text  # 1: the note
        assert len(text) < 0.3 * len(json.dumps(record))
        assert len(stored) < 0.25 * len(text)  # compressed


def test_an_epoch_row_takes_under_75_bytes_of_the_file(tmp_path):
    """Schema v5's packing: 6 million rows were 95 bytes each at v4 (a text trial id, hashed all
    over the b-tree, and a score repeating the top-1); 200 epochs of 40 trials show the rate."""
    import random
    import sqlite3

    rng = random.Random(0)
    with _store_with(tmp_path / "s.sqlite", 40) as store:
        for _ in range(40):
            trial_id, spec = store.claim("r", 60, "S")
            rows = [{"epoch": e, "train_loss": rng.random(), "test_top1": 100 * rng.random(),
                     "test_top5": 100 * rng.random(), "test_loss": rng.random(), "lr": rng.random(),
                     "seconds_train": round(30 + rng.random(), 3), "seconds_eval": round(2 + rng.random(), 3)}
                    for e in range(1, 201)]
            for r in rows:
                r["score"] = r["test_top1"]
            assert store.finish(trial_id, "r", {"spec": spec, "status": "done", "epochs": rows})
        try:
            size = store._db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name='epoch_rows'").fetchone()[0]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite is built without the dbstat table")
    assert size / (40 * 200) <= 75


def test_plan_states_the_disk_a_study_needs(tmp_path):
    from bocb.compute import store_bytes, weights_bytes
    from bocb.zoo import resolve_backbone
    from cli_inproc import bocb

    # CIFAR ResNet-18 with 100 classes has 11,220,132 parameters (the commonly cited count); fp32
    # weights are 4 bytes each, plus BatchNorm's running statistics (under 0.1 %).
    assert 4 * 11_220_132 <= weights_bytes(resolve_backbone("R-18", num_classes=100)) <= 4 * 11_220_132 * 1.001
    study = tmp_path / "s.toml"
    study.write_text('backbones = ["R-18"]\noptimizers = ["SGD-M", "AdamW"]\n'
                     '[study]\nname = "s"\ntuning = "grid"\ndata = "cifar100"\ntier = "fast"\n')
    plan = json.loads(bocb("plan", study, "--store", tmp_path / "none.sqlite", "--json").stdout)
    one = weights_bytes(resolve_backbone("R-18", num_classes=100))
    assert plan["disk_gb"]["final_weights"] * 1e9 == pytest.approx(plan["trials"] * one)
    assert plan["disk_gb"]["checkpoint_per_running_trial"] * 1e9 == pytest.approx(3 * one)
    assert plan["disk_gb"]["store"] * 1e9 == pytest.approx(plan["trials"] * store_bytes(10))  # fast tier: 10 epochs
    text = " ".join(bocb("plan", study, "--store", tmp_path / "none.sqlite").stdout.split())
    assert f"disk: {plan['trials'] * one / 1e9:,.1f} GB of final weights" in text


@pytest.mark.slow  # about 20 s: 300 trials stored, then plan, status, export and a report with diagnostics
def test_the_scale_benchmark_runs_at_a_small_size(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "scale.py"), "--trials", "300", "--epochs", "5",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["trials"] == 300 and figures["epochs"] == 5 and figures["store_mb"] > 0
    assert set(figures["seconds"]) >= {"register", "end of run", "plan", "status", "export", "report (diagnostics)"}
    with SQLiteStore(tmp_path / "store.sqlite") as store:
        assert store.counts()["done"] == 300
    assert (tmp_path / "report").is_dir() and (tmp_path / "export.csv").exists()


KEEP_STUDY = """
[study]
name = "keep-{keep}"
data = "sample"
tier = "smoke"
tuning = "grid"
seeds = [0]
epochs = 1
train_per_class = 10
test_per_class = 5
keep_weights = "{keep}"

[[backbones]]
name = "R-50"
policy = "cifar"

[[optimizers]]
name = "SGD-M"
lr = [0.001, 0.1, 0.3]
weight_decay = [0.0005]
"""


@pytest.mark.slow  # three one-epoch trials and a second run: about 30 s
def test_keep_weights_best_keeps_the_best_setting_and_drops_the_rest(tmp_path):
    from cli_inproc import bocb

    from bocb.analysis.from_store import results_frame

    study = tmp_path / "keep.toml"
    study.write_text(KEEP_STUDY.format(keep="best"))
    store_path = tmp_path / "store.sqlite"
    done = bocb("run", study, "--store", store_path, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "keep_weights = \"best\": deleted 2 final weights file(s)" in " ".join(done.stdout.split())
    with SQLiteStore(store_path) as store:
        study_id = load_study(study).study_id
        results = results_frame(store, study_id)
        best = results.loc[results["top1"].idxmax(), "trial_id"]  # one seed: the best setting is the best run
        measured = {s["trial_id"] for s in store.snapshots(study_id) if s["source"] == "final"}
        for trial_id in results["trial_id"]:
            weights = tmp_path / "artifacts" / trial_id / "final.safetensors"
            assert trial_id in measured  # every model's diagnostics stay, dropped weights or not
            if trial_id == best:
                assert weights.exists() and store.artifacts(trial_id)["final_weights"] == str(weights)
            else:
                assert not weights.exists() and "final_weights" not in store.artifacts(trial_id)
    # A second run with nothing to do keeps what is left; "none" then drops the best one too.
    study.write_text(KEEP_STUDY.format(keep="none"))
    done = bocb("run", study, "--store", store_path, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "artifacts").glob("*/final.safetensors"))


def test_keep_weights_is_checked_in_one_line(tmp_path):
    study = tmp_path / "keep.toml"
    study.write_text(KEEP_STUDY.format(keep="some"))
    with pytest.raises(ValueError, match=r"keep_weights.*valid.*all.*best.*none"):
        load_study(study)
