"""bocb from Python (bocb.api): a tiny study, its report and a recommendation, with no CLI involved.

Real trials (tiny models, one epoch on 20 bundled sample images per class) in real worker processes
on a real SQLite store.
"""

from __future__ import annotations


import pytest

from bocb import api, run_events
from bocb.store import SQLiteStore

STUDY = """
[study]
name = "from-python"
data = "sample"
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = 1
train_per_class = 20
test_per_class = 10

[[backbones]]
name = "R-50"
policy = "cifar"

[[optimizers]]
name = "SGD-M"

[[optimizers]]
name = "AdamW"
"""


@pytest.mark.slow  # about 40 s on 2 loaded cores: two real trials, their snapshots and a report
def test_a_study_its_report_and_a_recommendation_from_python(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    store = tmp_path / "store.sqlite"
    events: list = []
    summary = api.run_study(study, store, cache_dir=tmp_path / "cache", device="cpu", progress=events.append)

    assert isinstance(summary, api.RunSummary)
    assert summary.study == "from-python" and summary.new == 2
    assert summary.counts["done"] + summary.counts["diverged"] == 2 and summary.unfinished == 0
    assert {t["optimizer"] for t in summary.trials} == {"SGD-M", "AdamW"}
    kinds = [type(e) for e in events]
    assert kinds[0] is run_events.Started and events[0].runnable == 2
    assert kinds.count(run_events.RunEnded) == 1 and run_events.Measuring in kinds  # init snapshot measured
    assert kinds.index(run_events.RunEnded) < kinds.index(run_events.Measuring)
    with SQLiteStore(store, readonly=True) as opened:
        assert opened.counts()["total"] == 2  # the store holds what the summary says

    again = api.run_study(study, store, cache_dir=tmp_path / "cache", device="cpu")
    assert again.new == 0 and again.counts == summary.counts  # resumable: nothing runs twice

    files = api.report(study, store, tmp_path / "report", resamples=10)
    assert isinstance(files, api.ReportFiles) and files.html.is_file()
    assert "table1_heatmap" in files.figures and files.figures["table1_heatmap"].suffix == ".png"
    assert "final-epoch test top-1" in files.markdown.read_text()

    found = api.recommend("R-50", evidence="store", store=store)
    assert isinstance(found, api.Recommendation)
    assert {o.optimizer for o in found.optimizers} == {"SGD-M", "AdamW"}
    best = found.optimizers[0]
    assert best.expected_gap == 0.0 and best.backbones == 1  # one backbone: the best has no gap
    assert list(found.frame.columns)[:2] == ["optimizer", "expected_gap"]


def test_bad_input_raises_the_cli_line_before_anything_is_written(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    store = tmp_path / "store.sqlite"
    with pytest.raises(ValueError, match=r"^--slots must be >= 1, got 0$"):
        api.run_study(study, store, slots=0)
    with pytest.raises(ValueError, match=r"unknown executor 'dask': valid: local, ray"):
        api.run_study(study, store, executor="dask")
    with pytest.raises(ValueError, match=r"^no store at .*: run a study first"):
        api.report(study, store, tmp_path / "out")
    with pytest.raises(ValueError, match=r"unknown evidence 'mine': valid: paper, store, both"):
        api.recommend("R-50", evidence="mine")
    assert not store.exists() and not (tmp_path / "out").exists()


def test_plan_sizes_a_study_without_running_it(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text(STUDY)
    found = api.plan(study, tmp_path / "absent.sqlite", cache_dir=tmp_path / "cache")
    assert found.trials == 2 and found.finished == 0 and list(found.per_backbone) == ["R-50"]
    assert found.flops == pytest.approx(sum(found.per_backbone["R-50"])) and found.flops > 0
    assert found.gpu_hours == pytest.approx(found.flops / api.EFFECTIVE_FLOPS / 3600)
    assert not (tmp_path / "absent.sqlite").exists()


def test_recommend_from_the_paper_flags_what_the_paper_marks():
    found = api.recommend("DeiT-S")
    assert found.evidence.startswith("results for DeiT-S itself")
    risk = {o.optimizer: o.failure_risk for o in found.optimizers}
    # The paper's Table 1 greys out SGD-M on DeiT-S (63.20, marked severe) and not AdamW (72.15).
    assert risk["SGD-M"] == 1.0 and risk["AdamW"] == 0.0
    assert [o.optimizer for o in found.optimizers].index("SGD-M") > [o.optimizer for o in found.optimizers].index("AdamW")


@pytest.mark.slow
def test_the_runner_runs_from_a_thread_other_than_the_main_one(tmp_path):
    # A notebook's background job or a server calls the API off the main thread, where signal
    # handlers cannot be set: the runner must still run (and stop its workers), not raise.
    import threading

    from bocb.executors.local import LocalExecutor
    from bocb.executors.worker import WorkerConfig
    from bocb.runner import run_study as run_trials
    from bocb.store import MemoryStore

    store = MemoryStore()
    store.add_study("s", "s", "s.toml", {})
    executor = LocalExecutor(WorkerConfig(artifacts_dir=str(tmp_path), device="cpu"), slots=1)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["stats"] = run_trials(store, "s", executor, lease_s=30)
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert all(slot.process is None or not slot.process.is_alive() for slot in executor._slots)
