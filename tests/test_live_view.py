"""The live view of `bocb run`: trial names, running trials' progress from the workers, throughput
and ETA, no stale rows, and what a Ctrl-C says.

Most tests drive the view with the events a run emits (no training); one runs a tiny study through
the real worker processes and checks that progress reached the view while the trial ran.
"""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from bocb import run_events as ev
from bocb.commands.run import RunDisplay, _LiveView
from bocb.labels import short_number, trial_label
from bocb.runner import RunStats
from bocb.trial_progress import ProgressBoard
from stores import trial_spec

COUNTS = {"total": 4, "pending": 4, "running": 0, "done": 0, "diverged": 0, "failed": 0, "skipped": 0, "paused": 0}


def _step(epoch: int, step: int, t: float, steps: int = 46, epochs: int = 3, batch: int = 32) -> dict:
    return {"event": "step", "epoch": epoch, "step": step, "steps": steps, "epochs": epochs, "batch": batch, "t": t}


def _text(renderable, width: int = 200) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_rows_are_named_backbone_x_optimizer_with_lr_and_wd_and_the_seed_only_when_there_are_several():
    fields = {"backbone": "R-50", "optimizer": "AdamW", "lr": 1e-3, "weight_decay": 0.05, "seed": 2}
    assert trial_label(fields) == "R-50 x AdamW (lr 1e-3, wd 0.05)"
    assert trial_label(fields, show_seed=True) == "R-50 x AdamW (lr 1e-3, wd 0.05, seed 2)"
    # A fine-tuning trial is named by its pre-trained model, as the results table names it.
    assert trial_label({**fields, "pretrained": "deit-adamw"}).startswith("deit-adamw x AdamW")
    assert [short_number(v) for v in (1e-3, 5e-4, 1.5e-3, 0.05, 0.1, 0, None, 2.0)] == \
        ["1e-3", "5e-4", "1.5e-3", "0.05", "0.1", "0", "0", "2"]


def test_a_running_trials_epoch_step_throughput_and_eta_reach_the_view():
    stats = RunStats()
    stats.progress.start("a" * 16, trial_spec("R-50", "SGD-M", lr=0.1, weight_decay=5e-4))
    view = _LiveView(total=4, seeds=1)
    before = _text(view.render(ev.RunUpdate(stats)))
    assert "R-50 x SGD-M (lr 0.1, wd 5e-4)" in before and "a" * 16 not in before
    assert "ETA —" in before  # nothing measured yet: no number made up
    for step, t in ((1, 100.0), (11, 101.0), (21, 102.0)):  # 10 steps of 32 images a second
        stats.progress.update("a" * 16, _step(0, step, t))
    stats.progress.update("a" * 16, {"event": "epoch", "epoch": 0, "epochs": 3, "t": 102.5,
                                     "row": {"epoch": 1, "score": 17.5, "train_loss": 2.1}})
    text = _text(view.render(ev.RunUpdate(stats)))
    row = next(line for line in text.splitlines() if line.startswith("R-50 x SGD-M"))
    assert row.split()[-6:] == ["1/3", "21/46", "320", "17.50", "2.100", "0:00:12"], row
    # One trial of 138 steps at 10 steps/s, 11.7 s left; 3 more trials of 13.8 s share its slot.
    assert "1 running, 320 img/s; ETA 0:00:53" in text


def test_eta_is_the_formula_of_the_docstring():
    board = ProgressBoard()
    for trial in ("fast", "slow", "new"):
        board.start(trial, trial_spec("R-50", "AdamW"))
    for t, step in ((0.0, 1), (1.0, 11)):  # 10 steps/s: 100 steps in 10 s, 8.9 s left
        board.update("fast", _step(0, step, t, steps=50, epochs=2))
    for t, step in ((0.0, 1), (2.0, 11)):  # 5 steps/s: 20 s in all, 17.8 s left
        board.update("slow", _step(0, step, t, steps=50, epochs=2))
    # D = (10 + 20) / 2 = 15 s for "new" (not measured yet) and each pending trial.
    assert board.eta(pending=0) == pytest.approx(max(17.8, (8.9 + 17.8 + 15) / 3))
    assert board.eta(pending=3) == pytest.approx((8.9 + 17.8 + (1 + 3) * 15) / 3)
    empty = ProgressBoard()
    empty.start("x", trial_spec("R-50", "AdamW"))
    assert empty.eta(pending=5) is None and empty.images_per_s() is None


def test_no_stale_rows_after_a_trial_ends_or_the_run_ends():
    stats = RunStats()
    spec = trial_spec("CNX-T", "LAMB", lr=5e-3)
    stats.progress.start("t1", spec)
    stats.progress.start("t2", trial_spec("R-50", "LAMB", lr=5e-3))
    view = _LiveView(total=2)
    assert "CNX-T x LAMB" in _text(view.render(ev.RunUpdate(stats)))
    stats.progress.end("t1")
    stats.finished["done"] = 1
    stats.progress.update("t1", _step(0, 5, 3.0))  # an event that arrives after the trial's result
    text = _text(view.render(ev.RunUpdate(stats)))
    assert "CNX-T" not in text and "R-50 x LAMB" in text
    # The frame a run ends with, as a pipe gets it: the counts, no running trial.
    console = Console(width=120, record=True, file=open("/dev/null", "w"), color_system=None)
    display = RunDisplay(console)
    display(ev.Started("s", "id", "store", COUNTS, 2, 2))
    display(ev.RunUpdate(stats))
    display(ev.RunEnded(stats))
    out = console.export_text()
    assert "finished: done 1" in out and "running trial" not in out and "R-50" not in out


def test_a_ctrl_c_frame_drops_the_running_rows_and_says_what_was_stopped():
    console = Console(width=120, record=True, file=open("/dev/null", "w"), color_system=None)
    display = RunDisplay(console)
    assert display.interrupted().startswith("stopped before any trial started")
    display(ev.Started("s", "id", "store", COUNTS, 4, 4))
    stats = RunStats()
    stats.progress.start("t1", trial_spec("R-50", "SGD-M"))
    display(ev.RunUpdate(stats))
    stats.progress.clear()  # what the runner does when it hands its trials back
    display.stop()
    assert "R-50" not in console.export_text()
    line = display.interrupted()
    assert line.startswith("stopped: 1 running trial(s) handed back") and "rerun the same command" in line
    assert len(line) <= 100


def test_the_view_stays_within_100_columns_on_a_wide_terminal():
    stats = RunStats()
    for i in range(3):
        tid = f"t{i}"
        stats.progress.start(tid, trial_spec("a-backbone-name-far-too-long-for-any-table", "SophiaH", lr=1.5e-3,
                                             weight_decay=0.05, seed=i))
        stats.progress.update(tid, _step(199, 1561, 0.0, steps=1562, epochs=200, batch=1024))
        stats.progress.update(tid, _step(199, 1562, 0.001, steps=1562, epochs=200, batch=1024))
        stats.progress.update(tid, {"event": "epoch", "epoch": 199, "epochs": 200,
                                    "row": {"epoch": 200, "score": 100.0, "train_loss": 12.345}})
    stats.finished.update(done=12345, diverged=1234, failed=123, paused=12)
    text = _text(_LiveView(total=30000, seeds=3).render(ev.RunUpdate(stats, proposed=30000,
                                                                      tuning="tuning: 12 pairs")), width=300)
    widths = [len(line.rstrip()) for line in text.splitlines()]
    assert max(widths) <= 100, text


def test_the_worker_sends_every_epoch_event_and_thins_step_events_stamped_with_its_clock(monkeypatch):
    from bocb.executors import local

    class Queue(list):
        put = list.append

    clock = iter(range(1000))
    monkeypatch.setattr(local.time, "time", lambda: float(next(clock)) / 10)  # 0.1 s per call
    sent = Queue()
    forward = local._Forward(sent, "tid")
    for step in range(1, 21):
        forward({"event": "step", "epoch": 0, "step": step, "steps": 20})
    forward({"event": "epoch", "epoch": 0, "row": {"epoch": 1}})
    steps = [e["step"] for tid, e in sent if e["event"] == "step"]
    # The epoch's first and last step always; between them one per half second (every 5th call).
    assert steps[0] == 1 and steps[-1] == 20 and 4 <= len(steps) <= 7, steps
    assert sent[-1][1]["event"] == "epoch" and all(tid == "tid" and "t" in e for tid, e in sent)


@pytest.mark.slow
def test_a_tiny_run_reports_a_running_trials_progress_while_it_runs(tmp_path):
    """End to end through the real workers: while the trial runs, the view's board holds its
    epoch k/N and step, from the worker's events (not from its finished record)."""
    from bocb import api

    study = tmp_path / "tiny.toml"
    study.write_text('[study]\nname = "tiny"\ndata = "sample"\ntier = "smoke"\ntuning = "fixed"\nseeds = [0]\n'
                     'epochs = 2\ntrain_per_class = 20\ntest_per_class = 10\n'
                     '[[backbones]]\nname = "R-50"\npolicy = "cifar"\n[[optimizers]]\nname = "AdamW"\n')
    seen = []

    def progress(event) -> None:
        if isinstance(event, ev.RunUpdate) and not isinstance(event, ev.RunEnded):
            seen.extend(event.stats.progress.running())
        elif isinstance(event, ev.RunEnded):
            seen.append(("ended", len(event.stats.progress)))

    summary = api.run_study(study, tmp_path / "store.sqlite", device="cpu", cache_dir=tmp_path / "cache",
                            progress=progress)
    assert summary.counts["done"] == 1
    assert seen[-1] == ("ended", 0)  # nothing left on the board when the run ends
    reported = [p for p in seen[:-1] if p.epoch is not None]
    assert reported, "no progress reached the view while the trial ran"
    assert {p.epochs for p in reported} == {2} and all(1 <= p.step <= p.steps for p in reported)
    assert trial_label(reported[0].settings) == "R-50 x AdamW (lr 5e-4, wd 0.05)"
    assert re.fullmatch(r"[0-9a-f]{16}", reported[0].trial_id)
