"""The report analyses its results once: one validation and one best-setting choice per results frame.

The report is built by the real code from a real SQLite store; only the two reductions are wrapped
(counting spies that call the real functions), wherever a module holds a reference to them.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bocb.analysis.results as results_module
from bocb.analysis import Results, best_settings, flag, pair_means, wide
from bocb.store import SQLiteStore
from bocb.study import load_study

BACKBONES = ("R-50", "CNX-T", "DeiT-S")
OPTIMIZERS = ("SGD-M", "AdamW", "LAMB")
LRS = (1e-3, 1e-2)
SEEDS = (0, 1)


def grid_store(tmp_path: Path) -> tuple[Path, Path]:
    """A grid-tuned study (3 x 3 pairs, 2 learning rates, 2 seeds) with results written through the
    real store, plus one failed trial; returns (study file, store)."""
    study_file = tmp_path / "grid.toml"
    study_file.write_text(
        "backbones = [" + ", ".join(f'"{b}"' for b in BACKBONES) + ']\n[study]\nname = "grid"\ntuning = "grid"\n'
        + "".join(f'[[optimizers]]\nname = "{o}"\nlr = [{LRS[0]}, {LRS[1]}]\n' for o in OPTIMIZERS))
    study = load_study(study_file)
    rng = np.random.default_rng(0)
    trials, values = [], {}
    for b_i, backbone in enumerate(BACKBONES):
        for o_i, optimizer in enumerate(OPTIMIZERS):
            for lr in LRS:
                for seed in SEEDS:
                    tid = f"{backbone}-{optimizer}-{lr}-{seed}"
                    trials.append((tid, {"backbone": {"short": backbone, "num_classes": 10},
                                         "optimizer": {"short": optimizer, "category": "b",
                                                       "args": {"lr": lr, "weight_decay": 0.05}},
                                         "recipe": {"name": "pytorch", "tier": "smoke"}, "seed": seed}))
                    values[tid] = 60 + 5 * b_i + 2 * o_i + 3 * (lr == LRS[o_i % 2]) + rng.normal(0, 0.5)
    store_path = tmp_path / "store.sqlite"
    with SQLiteStore(store_path) as store:
        store.add_study(study.study_id, "grid", str(study_file), study.settings)
        store.add_trials(study.study_id, trials)
        for i in range(len(trials)):
            tid, _ = store.claim("r", 60, study.study_id)
            failed = i == 0
            store.finish(tid, "r", {"status": "failed" if failed else "done", "final_top1": values[tid],
                                    "best_top1": values[tid] + 0.5, "epochs": [], "error": "boom" if failed else None,
                                    "code_version": "test"})
    return study_file, store_path


@pytest.fixture
def counted(monkeypatch) -> Counter:
    """Wrap the real load_results and best_tuned in every bocb module that holds them."""
    calls: Counter = Counter()
    for name in ("load_results", "best_tuned"):
        real = getattr(results_module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("bocb") and getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.slow  # about 6 s each on 2 loaded cores (a report with figures)
@pytest.mark.parametrize("metric", ["final", "best"])
def test_a_store_report_validates_and_tunes_its_results_once(tmp_path, counted, metric):
    from bocb import api

    study_file, store = grid_store(tmp_path)
    files = api.report(study_file, store, tmp_path / "report", metric=metric, resamples=20)
    assert files.html.is_file() and files.markdown.is_file()
    # Before the analysis was shared, one such report validated the frame 18 times and chose the
    # best settings 16 times; now once per results frame (one metric per report).
    assert counted == Counter(load_results=1, best_tuned=1)
    text = files.markdown.read_text()
    assert f"{metric}-epoch test top-1" in text and "Trials that are not results" in text
    assert "Hyper-parameter robustness" in text and "95 % CI" in text  # grid settings and seeds reached the sections


def test_results_share_their_reductions_and_hand_out_copies():
    rows = [(o, b, lr, s, 50.0 + i + (lr == 0.1) + 0.1 * s)
            for i, (o, b) in enumerate([("A", "x"), ("B", "x"), ("A", "y"), ("B", "y")])
            for lr in (0.1, 0.01) for s in (0, 1)]
    frame = pd.DataFrame(rows, columns=["optimizer", "backbone", "lr", "seed", "top1"]).assign(weight_decay=0.0)
    results = Results(frame)
    assert Results.of(results) is results
    assert results.runs is results.runs  # computed once
    means = pair_means(results)
    means["top1"] = -1.0  # a caller's copy: the shared table is untouched
    assert (results.means["top1"] > 0).all()
    # The same numbers as from the plain frame; held-out seed: seed 0 chooses, seed 1 is reported.
    pd.testing.assert_frame_equal(wide(results), wide(frame))
    assert wide(results).loc["x", "A"] == pytest.approx(51.1)  # lr 0.1 wins, seed 1's 50 + 1 + 0.1
    pd.testing.assert_frame_equal(flag(results, "fitted"), flag(frame, "fitted"))
    assert list(best_settings(results)["lr"]) == [0.1] * 4
    level = results.pair_level()
    assert "lr" not in level.frame.columns and not level.replicates
    pd.testing.assert_frame_equal(wide(level), wide(results))


def test_a_report_analysis_carries_its_rule_and_refuses_a_second_one(tmp_path):
    from bocb.report import ReportAnalysis, build_report

    frame = pd.DataFrame({"optimizer": ["A", "B", "A", "B"], "backbone": ["x", "x", "y", "y"],
                          "top1": [70.0, 60.0, 80.0, 79.0]})
    analysis = ReportAnalysis.of(frame, "paper", 5.0)
    assert analysis.chosen.name == "paper" and analysis.chosen.floor == 5.0
    # Eq. 1, max - min(IQR, gamma): x: 70 - min(5, 5) = 65, B (60) fails; y: 80 - min(0.5, 5) = 79.5, B (79) fails.
    assert list(analysis.flags["flagged"]) == [False, True, False, True]
    assert list(analysis.flags["threshold"]) == [65.0, 65.0, 79.5, 79.5]
    with pytest.raises(ValueError, match="the failure rule is given twice"):
        build_report(analysis, tmp_path / "out", title="t", provenance={}, rule_name="fitted")
    assert not (tmp_path / "out").exists()
