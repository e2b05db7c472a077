"""The GPU check's driver (scripts/gpu_check.py): step isolation, time limits, budget, judgements.

The steps themselves run in CI through the dry run (`make gpu-check DRY_RUN=1` in .ci/run), not
here: running them in the suite too would cost the same minutes twice. These tests drive the
driver with small real child processes.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check", ROOT / "scripts" / "gpu_check.py")


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_one_failing_or_hanging_step_does_not_stop_the_others(tmp_path):
    out = tmp_path / "a.jsonl"
    Step = gpu_check.Step
    steps = [
        Step("ok", "writes a result", _py(f"open({str(out)!r}, 'w').write('{{\"x\": 1}}\\n')"), 30, json_out=out),
        Step("boom", "fails", _py("import sys; print('ValueError: bad thing'); sys.exit(3)"), 30),
        Step("hang", "sleeps past its limit", _py("import time; time.sleep(60)"), 1),
        Step("absent", "needs a module that is missing", _py("pass"), 30, needs=("nosuchmodule",)),
        Step("known", "skipped up front", _py("pass"), 30, skip="needs CUDA"),
        Step("after", "still runs", _py("pass"), 30),
    ]
    with (tmp_path / "steps.log").open("w") as log:
        results = gpu_check.run_steps(steps, {}, 600, log, missing={"nosuchmodule"})
    got = {r.name: (r.status, r.reason) for r in results}
    assert got["ok"] == ("passed", "")
    assert results[0].results == [{"x": 1}]
    assert got["boom"] == ("failed", "exit code 3: ValueError: bad thing")
    assert got["hang"] == ("timeout", "stopped after 1 s")
    assert got["absent"] == ("skipped", "nosuchmodule not installed")
    assert got["known"] == ("skipped", "needs CUDA")
    assert got["after"] == ("passed", "")
    assert "===== hang: timeout" in (tmp_path / "steps.log").read_text()


def test_steps_that_the_budget_cannot_fit_are_skipped_and_say_so(tmp_path):
    steps = [gpu_check.Step("first", "", _py("pass"), 60), gpu_check.Step("big", "", _py("pass"), 60, reserve_s=500)]
    with (tmp_path / "steps.log").open("w") as log:
        results = gpu_check.run_steps(steps, {}, 100, log, missing=set())
    # "first" must leave "big" its 500 s reserve out of a 100 s budget, so it cannot run.
    assert [(r.status, r.reason) for r in results] == [
        ("skipped", "out of the check's 100 s budget"), ("passed", "")]


def test_the_mini_study_gets_the_checks_data():
    text = (ROOT / "studies" / "gpu-check-cifar10.toml").read_text()
    new = gpu_check.with_data(text, "/data/cifar 10")
    assert 'data = "/data/cifar 10"' in new and 'data = "sample"' not in new
    with pytest.raises(ValueError, match="exactly one"):
        gpu_check.with_data("[study]\nname = 'x'\n", "/d")


def _result(name, rows, status="passed"):
    return gpu_check.StepResult(name, name, status, results=rows)


def test_cuda_paths_are_judged_from_the_records():
    trial = {"bocb_precision": "bf16", "bocb_device": "cuda", "compile": False}
    two = {"slots": 2, "status": ["done"], "devices": ["cuda"], "most_at_once": 2}
    results = {r.name: r for r in [
        _result("throughput", [trial, {**trial, "bocb_precision": "fp32"}]),
        _result("throughput-compile", [{**trial, "compile": True}], status="timeout"),
        _result("packing", [{**two, "slots": 1, "most_at_once": 1}, two]),
        _result("ray", [{**two, "most_at_once": 1}]),
    ]}
    paths = gpu_check.cuda_paths(results, on_cpu=False)
    assert paths["bf16_channels_last"] == {"status": "fail", "reason": "trial ran fp32 on cuda"}
    assert paths["compile"]["status"] == "fail" and "throughput-compile: timeout" in paths["compile"]["reason"]
    assert paths["two_slots_one_gpu"] == {"status": "pass"}
    assert paths["ray_fractional_gpus"] == {"status": "fail", "reason": "the two trials never ran at the same time"}
    cpu = gpu_check.cuda_paths(results, on_cpu=True)
    assert all(p["status"] == "skipped" and p["reason"].startswith("needs CUDA") for p in cpu.values())


def test_throughput_rows_set_each_model_against_its_eager_plain_loop():
    eager = [{"model": "resnet18", "plain_images_per_s": 1000.0, "bocb_images_per_s": 1500.0},
             {"model": "deit_small", "plain_images_per_s": 400.0, "bocb_images_per_s": 800.0}]
    compiled = [{"model": "resnet18", "plain_images_per_s": None, "bocb_images_per_s": 2500.0}]
    results = {"throughput": _result("throughput", eager),
               "throughput-compile": _result("throughput-compile", compiled, status="timeout")}
    rows = {(r["model"], r["compile"]): r for r in gpu_check.throughput_table(results)}
    assert (rows[("CIFAR ResNet-18", False)]["ratio"], rows[("CIFAR ResNet-18", False)]["meets_target"]) == (1.5, True)
    assert (rows[("CIFAR ResNet-18", True)]["ratio"], rows[("CIFAR ResNet-18", True)]["status"]) == (2.5, "measured")
    assert (rows[("DeiT-S/4", False)]["ratio"], rows[("DeiT-S/4", False)]["meets_target"]) == (2.0, False)
    assert rows[("DeiT-S/4", True)]["status"] == "timeout" and rows[("DeiT-S/4", True)]["ratio"] is None


def test_requirements_come_from_pyproject_with_their_pins():
    reqs = dict(gpu_check.requirements())
    assert reqs["pytorch-optimizer"] and reqs["ray"]
    assert set(gpu_check.CARRIED) <= set(reqs)


def test_mini_study_files_expand_to_the_same_grid_shape(tmp_path):
    from bocb.study import expand, load_study

    shapes = {}
    for name, size in [("gpu-check-cifar10", 12), ("gpu-check-dry", 8)]:
        path = tmp_path / f"{name}.toml"
        path.write_text(gpu_check.with_data((ROOT / "studies" / f"{name}.toml").read_text(), "sample"))
        trials, skipped = expand(load_study(path), num_classes=10)
        assert len(trials) == size and not skipped
        shapes[name] = {(t.backbone.name, t.optimizer.name) for t in trials}
        if name == "gpu-check-cifar10":  # the sizing the driver's docstring computes with
            assert {(t.recipe.epochs, t.recipe.train_per_class, t.recipe.test_per_class) for t in trials} == {(8, 1000, None)}
    assert shapes["gpu-check-cifar10"] == shapes["gpu-check-dry"]


def test_augment_benchmark_adds_the_deit_recipes_stages_one_at_a_time(tmp_path):
    augment = _load("augment_bench", ROOT / "benchmarks" / "augment.py")
    names = [name for name, _ in augment.stages("deit")]
    assert names == ["crop+flip", "+randaugment", "+random erasing", "+mixup/cutmix"]
    assert [name for name, _ in augment.stages("pytorch")] == ["crop+flip"]
    last = augment.stages("deit")[-1][1]
    from bocb.recipes import RECIPES
    assert last == RECIPES["deit"].augment  # the last stage is the recipe's whole augmentation
    out = tmp_path / "rows.jsonl"
    assert augment.main(["--device", "cpu", "--batches", "1", "--batch-size", "4", "--model", "R-18",
                         "--scale", "tiny", "--json-out", str(out)]) == 0
    rows = gpu_check.read_json_lines(out)
    assert len(rows) == 6 and all(r["ms_per_batch"] > 0 for r in rows)
