"""bocb probe: sizing from a measured throughput, the verdict, and the whole command within its budget."""

import json
import math
import time

import pytest
from cli_inproc import bocb

from bocb.probe.answer import OptimizerResult, noise_points, spearman, verdict
from bocb.probe.sizing import FILL, MAX_EPOCHS, Throughput, probe_cost, size_probe
from bocb.tuning.cost import expected_run
from bocb.tuning.policy import TuningConfig
from bocb.tuning.space import pair_space

CONFIG = TuningConfig()
SPACES = [pair_space("R-18", o) for o in ("AdamW", "SGD-M")]
SPEED = Throughput(train_s=0.002, eval_s=0.0005, launch_s=0.5)
CIFAR = dict(classes=10, fewest_train=500, total_train=5000, fewest_test=100, total_test=1000)


def test_the_cost_is_the_tuners_epochs_and_launches_at_the_measured_speed():
    cost, launches = probe_cost(SPACES, CONFIG, 6, 1000, 200, SPEED)
    runs = [expected_run(s, CONFIG, 6) for s in SPACES]
    # By hand: every trial-epoch trains 1000 images and tests 200; every launch costs 0.5 s.
    expected = sum(r.epochs * (1000 * 0.002 + 200 * 0.0005) + sum(r.rung_counts) * 0.5 for r in runs)
    assert cost == pytest.approx(expected) and launches == sum(sum(r.rung_counts) for r in runs)
    assert probe_cost(SPACES, CONFIG, 6, 1000, 200, SPEED, slots=2)[0] == pytest.approx(expected / 2)


def test_a_large_budget_takes_every_image_and_the_papers_200_epochs_at_most():
    sized = size_probe(SPACES, CONFIG, 1e9, SPEED, **CIFAR)
    assert (sized.epochs, sized.train_per_class, sized.test_per_class) == (MAX_EPOCHS, None, None)


def test_a_tight_budget_gives_up_images_before_epochs_and_fills_the_stated_share():
    budget = 300.0
    sized = size_probe(SPACES, CONFIG, budget, SPEED, **CIFAR)
    assert sized.epochs >= 10 and sized.train_per_class in (200, 100, 50, 20)
    assert sized.expected_s <= FILL * budget
    # One epoch more would not have fitted at that many images per class.
    test_images = 1000 if sized.test_per_class is None else sized.test_per_class * 10
    more, _ = probe_cost(SPACES, CONFIG, sized.epochs + 1, sized.train_per_class * 10, test_images, SPEED)
    assert more > FILL * budget


def test_a_budget_too_small_says_what_one_pass_needs():
    with pytest.raises(ValueError, match=r"too small for this probe: 2 optimizer\(s\) at 3 epochs on 20 images per "
                                         r"class need about"):
        size_probe(SPACES, CONFIG, 10.0, SPEED, **CIFAR)


def test_small_data_is_probed_whole():
    sized = size_probe(SPACES, CONFIG, 1e9, SPEED, classes=3, fewest_train=12, total_train=36, fewest_test=4,
                       total_test=12)
    assert sized.train_per_class is None and sized.test_per_class is None


def test_spearman_and_the_noise_of_a_score_by_hand():
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2], [1, 2]) is None
    assert noise_points(50.0, 1000) == pytest.approx(100 * math.sqrt(0.25 / 1000))


def _result(name, score, gap, flagged=False, risk=0.0):
    return OptimizerResult(name, 1e-3, 0.05, score, 10, True, "tuned, interior", 5, 30, flagged, (), gap, risk)


def test_the_verdict_names_agreement_departure_noise_and_failures():
    agree = verdict("X", [_result("AdamW", 60.0, 0.0), _result("SGD-M", 40.0, 9.0, flagged=True, risk=1.0)],
                    "modern: transformer backbones (DeiT-S, Swin-T)", noise=1.5)
    assert agree.same_best is True and "couples like the paper's modern: transformer backbones" in agree.text
    assert "Fails here as the paper predicts: SGD-M" in agree.text
    close = verdict("X", [_result("AdamW", 60.0, 2.0), _result("LAMB", 59.0, 0.0)], "F", noise=1.5)
    assert close.same_best is False and "may depart" in close.text and "within the test noise" in close.text
    far = verdict("X", [_result("AdamW", 60.0, 2.0), _result("LAMB", 50.0, 0.0), _result("SGD-M", 20.0, 1.0, True)],
                  "F", noise=1.5)
    assert "departs from" in far.text and "Fails here, unlike in the paper: SGD-M" in far.text
    assert far.spearman == pytest.approx(-0.5)


def test_bad_requests_fail_in_one_line(tmp_path):
    for args, words in ((["--budget", "ten"], "--budget takes a duration such as 90s, 10m or 1h"),
                        (["--budget", "5s"], "--budget must be more than"),
                        (["--epochs", "3", "--optimizers", "AdamW,Nope"], "Nope"),
                        (["--epochs", "3", "--optimizers", "AdamW,adamw"], "names one twice")):
        done = bocb("probe", "--backbone", "user_models:tiny_cnn", "--out", tmp_path / "p", *args,
                    cache=tmp_path / "cache")
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    both = bocb("probe", "--backbone", "R-18", "--budget", "1m", "--epochs", "3")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


BUDGET_S = 30.0
# The stated tolerance: the probe plans to stop ANSWER_S before its budget; stopping the workers and
# writing the answer fit in that on an idle machine. 15 s more absorb a loaded one (CI runs two
# test processes on two cores).
TOLERANCE_S = 15.0


@pytest.mark.slow
def test_a_probe_answers_within_its_budget_and_continues_where_it_stopped(tmp_path, monkeypatch):
    from bocb.probe import sizing

    # Planned to fill three budgets, so that the deadline, not the plan, ends this probe.
    monkeypatch.setattr(sizing, "FILL", 3.0)
    out = tmp_path / "probe"
    began = time.time()
    done = bocb("probe", "--backbone", "user_models:tiny_cnn", "--data", "sample", "--budget", f"{BUDGET_S:g}s",
                "--optimizers", "AdamW,SGD-M,LAMB", "--out", out, "--json", cache=tmp_path / "cache")
    wall = time.time() - began
    print(f"probe wall {wall:.1f} s for a {BUDGET_S:g} s budget")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert wall <= BUDGET_S + TOLERANCE_S, wall
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["use"]["optimizer"] in ("AdamW", "SGD-M", "LAMB") and answer["use"]["lr"] > 0
    assert {o["optimizer"] for o in answer["optimizers"]} == {"AdamW", "SGD-M", "LAMB"}
    assert answer["use"]["curve"] and answer["use"]["curve"][-1][0] == answer["use"]["epoch"]
    assert "classical CNN backbones" in answer["verdict"]["family"]
    assert "A sketch, not the paper's measurement" in answer["caveat"]
    assert not answer["complete"] and "the budget ran out before every search finished" in answer["caveat"]
    assert answer["throughput"]["train_s"] > 0 and answer["wall_s"] <= BUDGET_S + TOLERANCE_S
    page = (out / "probe.html").read_text()
    assert page.index("Use " + answer["use"]["optimizer"]) < page.index('id="learning-curves"')
    assert "data:image/png;base64," in page
    assert json.loads((out / "answer.json").read_text())["use"] == answer["use"]
    (study_file,) = out.glob("study-*.toml")
    study = study_file.read_text()
    assert 'tuning = "adaptive"' in study and 'name = "user_models:tiny_cnn"' in study and 'data = "sample"' in study

    # The same command continues the same study: nothing finished is trained again.
    from bocb.store import SQLiteStore

    monkeypatch.setattr(sizing, "FILL", 0.8)

    with SQLiteStore(out / "probe.sqlite") as store:
        finished = {r["trial_id"]: r["finished"] for r in store.trials() if r["status"] == "done"}
    again = bocb("probe", "--backbone", "user_models:tiny_cnn", "--data", "sample", "--budget", "12s",
                 "--optimizers", "AdamW,SGD-M,LAMB", "--out", out, cache=tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    assert "continuing:" in again.stdout
    with SQLiteStore(out / "probe.sqlite") as store:
        assert len(store.studies()) == 1
        after = {r["trial_id"]: r["finished"] for r in store.trials() if r["status"] == "done"}
    assert all(after[t] == f for t, f in finished.items())


def test_only_tuned_optimizers_beyond_the_noise_are_flagged():
    from bocb.probe.answer import flag_compared

    scores = {"AdamW": (60.0, True), "LAMB": (59.0, True), "Adan": (58.5, True), "SGD-M": (40.0, True)}
    assert flag_compared(scores) == {"SGD-M"}
    # Unfinished searches are not judged; a gap within 2 standard errors of a difference is noise.
    assert flag_compared({**scores, "SGD-M": (40.0, False)}) == set()
    assert flag_compared(scores, noise=8.0) == set()  # 20 points < 2 * sqrt(2) * 8
    assert flag_compared(scores, noise=5.0) == {"SGD-M"}


def test_the_request_names_the_study_file():
    from bocb.probe.run import request_key

    key = request_key("timm:resnet10t", "folder:/data/pets", {}, ["AdamW", "SGD-M"], None)
    assert key == request_key("timm:resnet10t", "folder:/data/pets", {}, ["SGD-M", "AdamW"], None)
    assert key != request_key("timm:resnet10t", "folder:/data/pets", {}, ["AdamW", "SGD-M"], 30)
    assert key != request_key("timm:resnet10t", "folder:/data/cats", {}, ["AdamW", "SGD-M"], None)
    assert key != request_key("timm:resnet10t", "folder:/data/pets", {"label_column": "labels"}, ["AdamW", "SGD-M"],
                              None)


@pytest.mark.slow
def test_a_probe_on_a_relative_folder_with_two_optimizers(tmp_path):
    from test_fit import _folder

    work = tmp_path / "work"
    _folder(work / "pets", classes=3, train=12, test=4)
    args = ["probe", "--backbone", "user_models:tiny_cnn", "--epochs", "1", "--optimizers", "AdamW,SGD-M", "--out",
            tmp_path / "probe"]
    done = bocb(*args, "--data", "pets", cache=tmp_path / "cache", cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Failures not judged: fewer than three optimizers finished their search" in done.stdout
    (study_file,) = (tmp_path / "probe").glob("study-*.toml")
    assert f'data = "folder:{work / "pets"}"' in study_file.read_text()  # absolute: the same from anywhere
    assert "batch_size 100 -> 8" in done.stdout  # 36 images: fitted, and said
    again = bocb(*args, "--data", work / "pets", cache=tmp_path / "cache", cwd=tmp_path)
    assert again.returncode == 0 and "continuing:" in again.stdout, again.stdout[-2000:] + again.stderr
    assert list((tmp_path / "probe").glob("study-*.toml")) == [study_file]
    # A damaged study file is one line, not a traceback, and names the way out.
    study_file.write_text("[study\n")
    broken = bocb(*args, "--data", work / "pets", cache=tmp_path / "cache", cwd=tmp_path)
    assert broken.returncode == 2 and "is damaged" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


def _answer(results, judged=True):
    from pathlib import Path

    from bocb.probe.answer import ProbeAnswer, Verdict

    use = next((r for r in results if not r.flagged and r.score is not None), None)
    return ProbeAnswer("X", "modern CNN", "sample", use, tuple(results), tuple(r.optimizer for r in results if r.flagged),
                       judged, Verdict("v", "F", None, None), "c", True, 10, None, None, 1000, 60.0, 50.0, "s", None,
                       Path("."), Path("s.toml"), Path("p.sqlite"))


def test_the_answer_says_when_nothing_trains_and_names_a_crash_as_an_error():
    from dataclasses import replace

    from bocb.report.probe import answer_lines

    diverged = replace(_result("SGD-M", None, 1.0, flagged=True), state="diverged")
    crashed = replace(_result("LAMB", None, 0.0), state="crashed: RuntimeError: out of memory")
    lines = answer_lines(_answer([diverged, crashed]))
    assert lines[0].startswith("No probed optimizer trains X: every one diverged or was flagged, or crashed")
    assert "LAMB crashed: RuntimeError: out of memory (an error, not a divergence" in " ".join(lines)
    two = answer_lines(_answer([_result("AdamW", 60.0, 0.0), _result("SGD-M", 20.0, 9.0)], judged=False))
    assert two[0].startswith("Use AdamW") and two[1].startswith("Failures not judged")
