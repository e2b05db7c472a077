"""The trial on real images (the bundled CIFAR-10 sample), on CPU: learns, resumes, records."""

import dataclasses
import json

import pytest
from safetensors.torch import load_file

from bocb.data import DatasetSpec, load_dataset
from bocb.recipes import get_recipe, recipe_for
from bocb.spec import TrialSpec, resolve_trial
from bocb.trial import FINAL_WEIGHTS, RunOptions, run_trial
from bocb.zoo import build_backbone, get_backbone_info
from cli_inproc import bocb

SAMPLE = DatasetSpec("sample")


@pytest.fixture(scope="module")
def sample():
    return load_dataset(SAMPLE)


def _smoke(backbone="resnet18", optimizer="sgd_m", **kw) -> TrialSpec:
    return resolve_trial(backbone, optimizer, data=SAMPLE, num_classes=10, tier="smoke", **kw)


@pytest.mark.slow
def test_smoke_trial_learns_on_real_images(sample):
    spec = _smoke()
    record = run_trial(spec, sample, RunOptions(device="cpu"))
    assert record["status"] == "done", record.get("error")
    assert len(record["epochs"]) == 3
    # 10 classes: chance is 10%; a tiny ResNet on 2000 real images gets well past it.
    assert record["best_top1"] > 25.0, record["epochs"]
    assert record["final_top1"] == record["epochs"][-1]["test_top1"]
    row = record["epochs"][0]
    assert set(row) >= {"epoch", "train_loss", "test_top1", "test_top5", "test_loss", "lr", "seconds_train", "seconds_eval"}
    assert record["dataset"]["train_images"] == 2000 and record["dataset"]["test_images"] == 500
    json.dumps(record, allow_nan=False)  # a store can keep it as strict JSON


@pytest.mark.slow
def test_killed_and_resumed_trial_matches_an_uninterrupted_one(sample, tmp_path):
    spec = _smoke(epochs=3)
    spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=50))
    whole = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path / "whole"))
    first = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path / "cut", stop_after_epochs=1))
    assert first["status"] == "interrupted" and len(first["epochs"]) == 1
    resumed = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path / "cut"))
    assert resumed["status"] == "done" and resumed["resumed_from_epoch"] == 1
    keys = ("epoch", "train_loss", "test_top1", "test_top5", "test_loss", "lr")
    assert [{k: r[k] for k in keys} for r in resumed["epochs"]] == [{k: r[k] for k in keys} for r in whole["epochs"]]


@pytest.mark.slow
def test_final_weights_are_kept_as_safetensors(sample, tmp_path):
    spec = _smoke(epochs=1)
    record = run_trial(spec, sample, RunOptions(device="cpu", work_dir=tmp_path))
    weights = load_file(str(tmp_path / FINAL_WEIGHTS))
    model = build_backbone(spec.backbone)
    model.load_state_dict(weights)
    assert record["artifacts"]["final_weights"].endswith(FINAL_WEIGHTS)


@pytest.mark.slow
def test_huge_learning_rate_ends_diverged_not_raised(sample):
    spec = _smoke(epochs=2, lr=1e6)
    record = run_trial(spec, sample, RunOptions(device="cpu"))
    assert record["status"] == "diverged"
    assert record["diverged_epoch"] == 1
    assert record["error"] is None


def test_exception_is_a_failed_record(sample):
    # Each value is in range (resolution accepts it); torch's SGD rejects the pair when built.
    spec = _smoke(epochs=1, optimizer_args={"momentum": 0.0, "nesterov": True})
    record = run_trial(spec, sample, RunOptions(device="cpu"))
    assert record["status"] == "failed"
    assert "momentum" in record["error"]


def test_trial_id_is_stable_and_changes_with_any_knob():
    a, b = _smoke(), _smoke()
    assert a.trial_id == b.trial_id
    assert TrialSpec.from_dict(json.loads(a.to_json())).trial_id == a.trial_id
    assert _smoke(seed=1).trial_id != a.trial_id
    assert _smoke(lr=0.05).trial_id != a.trial_id
    assert _smoke(optimizer="adamw").trial_id != a.trial_id


def test_swapping_the_optimizer_changes_only_its_own_settings():
    deit = resolve_trial("deit_small", "adamw", data=SAMPLE, num_classes=10)
    lamb = resolve_trial("deit_small", "lamb", data=SAMPLE, num_classes=10)
    assert deit.recipe == lamb.recipe == recipe_for(get_backbone_info("deit_small"))
    assert deit.optimizer.lr == 1e-3 and deit.optimizer.weight_decay == 0.05  # the recipe's own
    assert lamb.optimizer.lr == 5e-3  # LAMB's typical value from the paper's tables
    assert deit.backbone.drop_path_rate == 0.1


@pytest.mark.slow
def test_each_recipe_runs_a_step(sample):
    """Every recipe's augmentations and loss run end to end (one tiny epoch each)."""
    for recipe, backbone in [("deit", "deit_small"), ("convnext", "convnext_tiny"), ("rsb-a2", "caformer_s12")]:
        spec = _smoke(backbone, None, recipe=recipe, epochs=1)
        spec = dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=20, test_per_class=10))
        record = run_trial(spec, sample, RunOptions(device="cpu"))
        assert record["status"] == "done", (recipe, record.get("error"))


@pytest.mark.slow
def test_cli_train_json_contract(tmp_path):
    proc = bocb("train", "--backbone", "R-18", "--optimizer", "SGD-M", "--tier", "smoke", "--epochs", "1",
                "--device", "cpu", "--json", "--cache-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"status", "final_top1", "best_top1", "epochs", "seconds"} <= set(record)
    assert record["status"] == "done"


def test_schedule_warms_up_then_decays():
    recipe = get_recipe("deit").with_changes(epochs=10, warmup_epochs=2)
    factors = [recipe.lr_factor(s, 10) for s in range(100)]
    assert factors[0] == pytest.approx(0.05) and factors[19] == pytest.approx(1.0)
    assert factors[20] == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[20:], factors[21:]))
    assert recipe.lr_factor(99, 10, schedule_free=True) == 1.0


def test_bad_recipe_inputs_name_valid_choices():
    with pytest.raises(ValueError, match="valid: pytorch, deit, convnext, rsb-a2"):
        get_recipe("timm")
    with pytest.raises(ValueError, match="valid: full, fast, smoke"):
        get_recipe("deit", "tiny")
    with pytest.raises(ValueError, match="valid:.*epochs"):
        get_recipe("deit").with_changes(epoch=3)

