"""Transfer studies: pre-train on CIFAR-10 classes 0-4, fine-tune on 5-9 (the shipped real sample)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bocb.data import DatasetSpec, load_dataset
from bocb.spec import Pretrained, TrialSpec, resolve_trial
from bocb.store import SQLiteStore
from bocb.study import StudyError
from bocb.transfer.study import load_transfer, sources
from bocb.trial import FINAL_WEIGHTS, RunOptions, run_trial
from bocb.zoo import classifier_name
from cli_inproc import bocb as _bocb

PRE = """
[study]
name = "pre"
data = "sample"
classes = [0, 1, 2, 3, 4]
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = 1
train_per_class = 40
test_per_class = 20

[[backbones]]
name = "R-50"
[[optimizers]]
name = "SGD-M"
[[optimizers]]
name = "LAMB"
"""

FT = """
[study]
name = "ft"
data = "sample"
classes = [5, 6, 7, 8, 9]
tier = "smoke"
seeds = [0]
epochs = 1
train_per_class = 40
test_per_class = 20

[[pretrained]]
study = "pre.toml"

[[optimizers]]
name = "SGD-M"
[[optimizers]]
name = "AdamW"
[[optimizers]]
name = "LAMB"
"""


@pytest.mark.slow
def test_tiny_transfer_study_runs_into_the_store_and_the_report(tmp_path):
    (tmp_path / "pre.toml").write_text(PRE)
    (tmp_path / "ft.toml").write_text(FT)
    store, cache = tmp_path / "store.sqlite", tmp_path / "cache"
    with SQLiteStore(store) as s:
        with pytest.raises(StudyError, match="run it first"):
            sources(load_transfer(tmp_path / "ft.toml"), s)
    pre = _bocb("run", tmp_path / "pre.toml", "--store", store, "--slots", "2", cache=cache)
    assert pre.returncode == 0, pre.stderr[-3000:]
    # The pre-training study's report shows the weight diagnostics of its trained models (issue 6).
    out = tmp_path / "pre-report"
    made = _bocb("report", tmp_path / "pre.toml", "--store", store, "--out", out, "--resamples", "200", cache=cache)
    assert made.returncode == 0, made.stderr[-3000:]
    html = (out / "report.html").read_text()
    assert "Weight diagnostics" in html and "Weight metrics, accuracy and failures" in html
    for name in ("weights_alpha_bars", "weights_ridge_R-50"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "random initialisation measured for 1 of 1 backbones" in html
    assert "2 of 2 pairs have a trained model" in html
    ft = _bocb("transfer", tmp_path / "ft.toml", "--store", store, "--slots", "2", cache=cache)
    assert ft.returncode == 0, ft.stderr[-3000:]
    counts = json.loads(ft.stdout.strip().splitlines()[-1])
    assert counts["done"] + counts["diverged"] == 6 and counts["total"] == 6
    study = load_transfer(tmp_path / "ft.toml")
    with SQLiteStore(store) as s:
        rows = s.trials(study.study_id)
        assert sorted({r["pretrained"] for r in rows}) == ["R-50 / LAMB", "R-50 / SGD-M"]
        record = s.record(rows[0]["trial_id"])
        pre_ids = {r["trial_id"] for r in s.trials() if r["pretrained"] is None}
        assert record["spec"]["pretrained"]["trial_id"] in pre_ids  # the identity names its source
        assert record["dataset"]["num_classes"] == 5 and record["spec"]["finetune"] == "full"
        moved = s._db.execute("SELECT COUNT(*) FROM layer_metrics WHERE moved IS NOT NULL AND snapshot_id IN "
                              "(SELECT trial_id FROM study_trials WHERE study_id=?)", (study.study_id,)).fetchone()[0]
        assert moved > 6 * 5  # every fine-tuned model measured its distance from the pre-trained weights
    report = _bocb("report", tmp_path / "ft.toml", "--store", store, "--out", tmp_path / "rep", cache=cache)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Transfer: pre-training optimizer x fine-tuning optimizer" in html
    assert "R-50 / LAMB" in html and "R-50 / SGD-M" in html
    assert "How far fine-tuning moved the backbone" in html
    assert (tmp_path / "rep" / "figures" / "weights_ridge_R-50_LAMB.png").exists()


@pytest.fixture(scope="module")
def halves():
    return load_dataset(DatasetSpec("sample", classes=(0, 1, 2, 3, 4))), load_dataset(
        DatasetSpec("sample", classes=(5, 6, 7, 8, 9)))


def _smoke(data: DatasetSpec, optimizer="sgd_m", **kw) -> TrialSpec:
    spec = resolve_trial("R-50", optimizer, data=data, num_classes=5, tier="smoke", epochs=1, **kw)
    return dataclasses.replace(spec, recipe=spec.recipe.with_changes(train_per_class=20, test_per_class=10))


def test_class_subsets_relabel_in_the_given_order(halves):
    low, high = halves
    assert low.classes == ("airplane", "automobile", "bird", "cat", "deer")
    assert high.classes == ("dog", "frog", "horse", "ship", "truck")
    assert sorted(high.train.labels.unique().tolist()) == [0, 1, 2, 3, 4] and len(high.train) == 2500
    assert low.fingerprint != high.fingerprint
    assert "classes" not in DatasetSpec("sample").to_dict()  # old trial ids stay the same
    with pytest.raises(ValueError, match="classes 0..9"):
        load_dataset(DatasetSpec("sample", classes=(3, 12)))
    with pytest.raises(ValueError, match="distinct"):
        DatasetSpec("sample", classes=(1, 1))


@pytest.mark.slow
def test_linear_probe_trains_only_the_new_classifier(halves, tmp_path):
    low, high = halves
    pre_spec = _smoke(DatasetSpec("sample", classes=(0, 1, 2, 3, 4)))
    pre = run_trial(pre_spec, low, RunOptions(device="cpu", work_dir=tmp_path / "pre"))
    assert pre["status"] == "done", pre.get("error")
    path = tmp_path / "pre" / FINAL_WEIGHTS
    from bocb.checkpoint import file_sha256
    from bocb.diagnostics.snapshot import load_model

    source = Pretrained(label="R-50 / SGD-M", optimizer="SGD-M", sha256=file_sha256(path), path=str(path),
                        trial_id=pre_spec.trial_id)
    ft_data = DatasetSpec("sample", classes=(5, 6, 7, 8, 9))
    probe = dataclasses.replace(_smoke(ft_data, "adamw"), pretrained=source, finetune="linear")
    record = run_trial(probe, high, RunOptions(device="cpu", work_dir=tmp_path / "probe"))
    assert record["status"] == "done", record.get("error")
    before = load_model(path, pre_spec.backbone).state_dict()
    after = load_model(tmp_path / "probe" / FINAL_WEIGHTS, probe.backbone).state_dict()
    head = classifier_name(load_model(path, pre_spec.backbone))
    for name, value in after.items():
        if name.startswith(head + "."):
            continue
        assert torch.equal(value, before[name]), name  # weights and BatchNorm statistics alike
    assert not torch.equal(after[f"{head}.weight"], before[f"{head}.weight"])
    # The id names the source by digest, not by where the file lies.
    moved = dataclasses.replace(probe, pretrained=dataclasses.replace(source, path="/elsewhere/w.safetensors"))
    assert moved.trial_id == probe.trial_id
    other = dataclasses.replace(probe, pretrained=dataclasses.replace(source, sha256="0" * 64))
    assert other.trial_id != probe.trial_id
    full = dataclasses.replace(probe, finetune="full")
    assert full.trial_id != probe.trial_id and TrialSpec.from_dict(full.to_dict()) == full
    bad = run_trial(other, high, RunOptions(device="cpu"))
    assert bad["status"] == "failed" and "changed since" in bad["error"]


BAD = [
    ('[study]\nname="x"\n[[optimizers]]\nname="SGD-M"\n', "missing required key 'pretrained'"),
    ('[study]\nname="x"\n[[pretrained]]\nstudy="a.toml"\ncheckpoint="b"\n[[optimizers]]\nname="SGD-M"\n',
     "exactly one of"),
    ('[study]\nname="x"\nfinetune="half"\n[[pretrained]]\nstudy="a.toml"\n[[optimizers]]\nname="SGD-M"\n',
     "valid: full, linear"),
    ('[study]\nname="x"\ntask="detection"\n[[pretrained]]\nstudy="a.toml"\n[[optimizers]]\nname="SGD-M"\n',
     "needs a [detection] table"),
    ('[study]\nname="x"\n[[pretrained]]\ncheckpoint="w.safetensors"\nbackbone="R-5O"\n[[optimizers]]\nname="SGD-M"\n',
     "pretrained[1].backbone: unknown backbone 'R-5O': did you mean 'resnet50'?"),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_malformed_transfer_files_fail_in_one_line(tmp_path, text, expected):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(StudyError) as err:
        load_transfer(path)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_foreign_checkpoint_needs_its_backbone_named(tmp_path):
    spec = _smoke(DatasetSpec("sample"))
    from bocb.zoo import init_backbone

    save_file({k: v.contiguous() for k, v in init_backbone(spec.backbone, 0).state_dict().items()},
              str(tmp_path / "w.safetensors"))
    body = '[study]\nname="x"\n[[pretrained]]\ncheckpoint="w.safetensors"\n{}\n[[optimizers]]\nname="SGD-M"\n'
    (tmp_path / "a.toml").write_text(body.format(""))
    with SQLiteStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(StudyError, match="name its network with 'backbone'"):
            sources(load_transfer(tmp_path / "a.toml"), store)
        (tmp_path / "b.toml").write_text(body.format('backbone="R-50"\nscale="tiny"\nnum_classes=5'))
        found, _ = sources(load_transfer(tmp_path / "b.toml"), store)
    assert found[0].pretrained.label == "R-50 / unknown" and found[0].pretrained.trial_id is None


@pytest.mark.parametrize("name", ["transfer-demo"])
def test_shipped_transfer_study_is_valid(name):
    study = load_transfer(Path(__file__).resolve().parents[1] / "studies" / f"{name}.toml")
    assert study.task == "classification" and study.data.classes == (5, 6, 7, 8, 9)
    assert study.resolve(study.pretrained[0]["study"]).exists()


def test_transfer_section_names_the_failing_fine_tuning_optimizers():
    import pandas as pd

    from bocb.analysis import flag, rule
    from bocb.report.document import Table, Text
    from bocb.report.transfer import transfer_section

    rows = []
    for label, pre, scores in [("R-50 / SGD-M", "SGD-M", (60, 59, 58, 57)),
                               ("R-50 / LAMB", "LAMB", (60, 59, 58, 20))]:
        for optimizer, top1 in zip(("SGD-M", "AdamW", "LAMB", "LARS"), scores, strict=True):
            rows.append({"optimizer": optimizer, "backbone": label, "top1": float(top1), "pretrain_optimizer": pre,
                         "trial_id": f"{label}{optimizer}"})
    results = pd.DataFrame(rows)
    chosen = rule("fitted", 3)
    flags = flag(results, chosen)
    empty = pd.DataFrame(columns=["source", "snapshot_id", "layer_index", "moved", "pretrained", "optimizer"])
    section = transfer_section(results, flags, chosen, empty, empty, {})
    text = " ".join(b.text for b in section.blocks if isinstance(b, Text))
    assert "R-50 / LAMB: LARS fails (of 4)" in text and "R-50 / SGD-M: no fine-tuning optimizer fails" in text
    rates = [b for b in section.blocks if isinstance(b, Table)][1].cells
    assert rates.loc["LAMB", "failure_rate"] == "25.0 %" and rates.loc["SGD-M", "failure_rate"] == "0.0 %"


@pytest.mark.slow
def test_detection_transfer_study_runs_from_a_study_file(tmp_path):
    # Two "pre-trained" tiny R-50s (one epoch on classes 0-4 with SGD-M and with AdamW), fine-tuned
    # for detection with two optimizers on synthetic shapes over real CIFAR backgrounds.
    from bocb.transfer.synthetic import make_synthetic_coco

    low = load_dataset(DatasetSpec("sample", classes=(0, 1, 2, 3, 4)))
    for optimizer in ("sgd_m", "adamw"):
        spec = _smoke(DatasetSpec("sample", classes=(0, 1, 2, 3, 4)), optimizer)
        assert run_trial(spec, low, RunOptions(device="cpu", work_dir=tmp_path / optimizer))["status"] == "done"
    backgrounds = load_dataset(DatasetSpec("sample")).test.images
    make_synthetic_coco(tmp_path / "coco" / "train", backgrounds[:200], 64, image_size=32, seed=1)
    make_synthetic_coco(tmp_path / "coco" / "val", backgrounds[200:], 24, image_size=32, seed=2)
    (tmp_path / "det.toml").write_text("""
[study]
name = "det"
task = "detection"
tier = "smoke"
seeds = [0]
epochs = 1

[detection]
train_annotations = "coco/train/annotations.json"
train_images = "coco/train/images"
val_annotations = "coco/val/annotations.json"
val_images = "coco/val/images"
image_size = 32

[[pretrained]]
checkpoint = "sgd_m/final.safetensors"
[[pretrained]]
checkpoint = "adamw/final.safetensors"

[[optimizers]]
name = "SGD-M"
lr = 0.01
[[optimizers]]
name = "AdamW"
lr = 0.001
""")
    store, cache = tmp_path / "store.sqlite", tmp_path / "cache"
    ran = _bocb("transfer", tmp_path / "det.toml", "--store", store, cache=cache)
    assert ran.returncode == 0, ran.stderr[-3000:]
    study = load_transfer(tmp_path / "det.toml")
    with SQLiteStore(store) as s:
        rows = s.trials(study.study_id)
        assert len(rows) == 4 and {r["status"] for r in rows} <= {"done", "diverged"}, rows
        assert sorted({r["pretrained"] for r in rows}) == ["R-50 / AdamW", "R-50 / SGD-M"]
        record = s.record(rows[0]["trial_id"])
        assert record["task"] == "detection" and len(record["epochs"]) == 1
        assert record["final_score"] == record["final_map"] and record["final_ap50"] is not None
        assert rows[0]["metric"] == "box_ap" and rows[0]["final_top1"] is None and rows[0]["final_score"] == record["final_map"]
        snaps = [x for x in s.snapshots(study.study_id) if x["error"] is None]
        assert len(snaps) == 4  # the backbone inside each detector, measured against its pre-trained weights
        moved = s.layer_metrics([snaps[0]["snapshot_id"]])
        assert moved and all(m["moved"] is not None and m["moved"] > 0 for m in moved)
    report = _bocb("report", tmp_path / "det.toml", "--store", store, "--out", tmp_path / "rep", cache=cache)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "box AP" in (tmp_path / "rep" / "report.html").read_text()
