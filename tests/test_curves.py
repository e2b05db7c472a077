"""Learning curves and time to accuracy in study reports, and per-epoch exports."""

from __future__ import annotations

import csv
import io
import json
import math

import pandas as pd
import pytest

from cli_inproc import bocb
from bocb.report.curves import time_to_accuracy
from bocb.store import SQLiteStore
from stores import study_in_store, trial_spec

# Per (backbone, optimizer): test top-1 at epochs 1..4 (10 s of training each).
CURVES = {
    ("R-50", "SGD-M"): [20.0, 50.0, 70.0, 80.0],
    ("R-50", "AdamW"): [40.0, 60.0, 66.0, 68.0],
    ("DeiT-S", "SGD-M"): [5.0, 8.0, 10.0, 12.0],
    ("DeiT-S", "AdamW"): [30.0, 55.0, 65.0, 70.0],
}


def test_time_to_accuracy_by_hand():
    rows = [{"backbone": b, "optimizer": o, "flagged": False, "epoch": e + 1, "score": s, "train_loss": 1.0,
             "seconds": 10.0 * (e + 1)} for (b, o), scores in CURVES.items() for e, s in enumerate(scores)]
    tta = time_to_accuracy(pd.DataFrame(rows), share=0.9).set_index(["backbone", "optimizer"])
    # R-50's best final is 80 (SGD-M): target 72. SGD-M first reaches it at epoch 4 (80 >= 72, 70 < 72);
    # AdamW never does (68). DeiT-S: best final 70 (AdamW), target 63: AdamW at epoch 3 (65).
    assert tta.loc[("R-50", "SGD-M"), "target"] == pytest.approx(72.0)
    assert tta.loc[("R-50", "SGD-M"), "epoch"] == 4 and tta.loc[("R-50", "SGD-M"), "seconds"] == 40.0
    assert math.isnan(tta.loc[("R-50", "AdamW"), "epoch"])
    assert tta.loc[("DeiT-S", "AdamW"), "epoch"] == 3 and tta.loc[("DeiT-S", "AdamW"), "seconds"] == 30.0
    assert math.isnan(tta.loc[("DeiT-S", "SGD-M"), "epoch"])


def _store(tmp_path):
    study_file, study, store_path = study_in_store(tmp_path, "curves", ["R-50", "DeiT-S"], ["SGD-M", "AdamW"])
    with SQLiteStore(store_path) as store:
        ids = {f"{b}-{o}": (b, o) for b, o in CURVES}
        store.add_trials(study.study_id, [(f"{b}-{o}", trial_spec(b, o, lr=0.1, weight_decay=0.0)) for b, o in CURVES])
        for _ in CURVES:
            tid, _spec = store.claim("r", 60, study.study_id)
            scores = CURVES[ids[tid]]
            store.finish(tid, "r", {"status": "done", "final_top1": scores[-1], "best_top1": max(scores),
                                    "code_version": "test", "epochs": [
                                        {"epoch": e + 1, "test_top1": s, "score": s, "train_loss": 2.0 - e / 4,
                                         "seconds_train": 10.0} for e, s in enumerate(scores)]})
    return study_file, store_path


@pytest.mark.slow  # a report with figures: about 8 s
def test_a_study_report_has_learning_curves_and_time_to_accuracy(tmp_path):
    study_file, store_path = _store(tmp_path)
    done = bocb("report", study_file, "--store", store_path, "--out", tmp_path / "report", "--json")
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    markdown = open(files["markdown"]).read()
    assert "Learning curves and time to accuracy" in markdown
    assert {"curves_test", "curves_loss"} <= set(files["figures"])
    row = next(line for line in markdown.splitlines() if line.startswith("| R-50 x SGD-M"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == ["72.0", "4", "40"]


def test_export_epochs_gives_a_row_per_epoch(tmp_path):
    study_file, store_path = _store(tmp_path)
    done = bocb("export", study_file, "--store", store_path, "--epochs")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 4 * 4
    first = next(r for r in rows if r["trial_id"] == "R-50-SGD-M" and r["epoch"] == "2")
    assert first["backbone"] == "R-50" and first["optimizer"] == "SGD-M" and float(first["test_top1"]) == 50.0
