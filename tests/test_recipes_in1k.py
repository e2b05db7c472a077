"""The ImageNet-1K recipes against the authors' released configs (Westlake-AI/openmixup,
configs/classification/imagenet/; each expected value below is the config's, file named)."""

from __future__ import annotations

import json

import pytest

from bocb.recipes import RECIPES, Recipe, get_recipe

# name: (epochs, global batch = 8 GPUs x per-GPU or 4 x 64, lr, wd, warm-up, min_lr, loss,
#        RandAugment (ops, m), mixup, cutmix, label smoothing, erasing, drop path,
#        train size, test resize -> 224, repeated augmentation)
RELEASED = {
    # resnet/resnet50_4xb64_cos_ep100.py, data basic_sz224_4xbs64.py: SGD 0.1, wd 1e-4, cosine to 0
    "in1k-pytorch": (100, 256, 0.1, 1e-4, 0, 0.0, "ce", None, 0.0, 0.0, 0.0, 0.0, 0.0, 224, 256, False),
    # deit/deit_small_8xb128_ep300.py, data swin_sz224_8xbs128.py, model deit_small_p16_sz224.py
    "in1k-deit": (300, 1024, 1e-3, 0.05, 5, 1e-6, "ce", (2, 9), 0.8, 1.0, 0.1, 0.25, 0.1, 224, 256, False),
    # resnet/resnet50_rsb_a1_sz224_8xb256_ep600.py (label smoothing 0.1 CE, mixup 0.2)
    "in1k-rsb-a1": (600, 2048, 5e-3, 0.01, 5, 1e-6, "ce", (2, 7), 0.2, 1.0, 0.1, 0.0, 0.05, 224, 236, True),
    # resnet/resnet50_rsb_a2_sz224_8xb256_ep300.py, data rsb_a2_sz224_8xbs256.py, model resnet50_rsb_a3.py (BCE)
    "in1k-rsb-a2": (300, 2048, 5e-3, 0.02, 5, 1e-6, "bce", (2, 7), 0.1, 1.0, 0.0, 0.0, 0.05, 224, 236, True),
    # resnet/resnet50_rsb_a3_sz160_8xb256_ep100.py, data rsb_a3_sz160_8xbs256.py
    "in1k-rsb-a3": (100, 2048, 8e-3, 0.02, 5, 0.0, "bce", (2, 6), 0.1, 1.0, 0.0, 0.0, 0.0, 160, 236, False),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_values_are_the_released_configs(name):
    r = RECIPES[name]
    (epochs, batch, lr, wd, warmup, min_lr, loss, ra, mixup, cutmix, smoothing, erasing, drop_path,
     train_size, test_resize, repeated) = RELEASED[name]
    assert (r.epochs, r.batch_size, r.lr, r.weight_decay, r.warmup_epochs, r.min_lr, r.loss) == (
        epochs, batch, lr, wd, warmup, min_lr, loss)
    a = r.augment
    assert (a.randaugment, a.mixup_alpha, a.cutmix_alpha, a.label_smoothing, a.random_erasing) == (
        ra, mixup, cutmix, smoothing, erasing)
    assert r.drop_path_rate == drop_path
    i = r.imagenet
    assert (i.train_size, i.test_size, i.test_resize, i.repeated_augment, i.reference_batch) == (
        train_size, 224, test_resize, repeated, batch)
    # RepeatAugSampler's default num_repeats (openmixup datasets/loader/sampler.py), kept by the configs.
    assert i.repeats == (3 if repeated else 1)
    assert a.mean == (0.485, 0.456, 0.406) and a.std == (0.229, 0.224, 0.225)
    assert r.source.startswith("released: Westlake-AI/openmixup configs/classification/imagenet/")


def test_crop_ratios_and_the_lr_rule():
    assert RECIPES["in1k-deit"].imagenet.crop_pct == 0.875  # resize 256, crop 224
    assert RECIPES["in1k-rsb-a2"].imagenet.crop_pct == pytest.approx(0.95, abs=0.001)  # 224 / 236
    # DeiT's rule, lr = 5e-4 x batch / 512: 1e-3 at 1024, 5e-4 at 512.
    deit = RECIPES["in1k-deit"]
    assert deit.imagenet.scaled_lr(deit.lr, 512) == pytest.approx(5e-4)


def test_round_trip_and_cifar_recipes_keep_their_serialisation():
    for name in RELEASED:
        r = get_recipe(name, "smoke")
        assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert "imagenet" not in RECIPES["pytorch"].to_dict()  # CIFAR trial ids unchanged


def test_a_study_with_an_imagenet_recipe_is_planned_but_not_run(tmp_path):
    from cli_inproc import bocb

    study = tmp_path / "in1k.toml"
    study.write_text('optimizers = ["SGD-M"]\n[[backbones]]\nname = "R-50"\nrecipe = "in1k-rsb-a3"\n'
                     '[study]\nname = "in1k-try"\ntuning = "fixed"\ndata = "sample"\n')
    assert bocb("plan", study, "--store", tmp_path / "s.sqlite").returncode == 0
    done = bocb("run", study, "--store", tmp_path / "s.sqlite", cache=tmp_path / "cache")
    assert done.returncode == 2
    assert "in1k-rsb-a3 train on full-size images" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_every_way_in_refuses_an_imagenet_recipe(tmp_path):
    """bocb train, an adaptive study (which expands no trial up front) and the trainer itself."""
    from cli_inproc import bocb

    from bocb.data import DatasetSpec, load_dataset
    from bocb.spec import resolve_trial
    from bocb.trial import RunOptions, run_trial

    done = bocb("train", "--backbone", "R-18", "--optimizer", "SGD-M", "--data", "sample", "--recipe", "in1k-deit",
                "--device", "cpu", cache=tmp_path / "cache")
    assert done.returncode == 2 and "in1k-deit train on full-size images" in done.stderr
    assert "streamed from disk" in done.stderr  # says what would work
    study = tmp_path / "adaptive.toml"
    study.write_text('optimizers = ["SGD-M"]\n[[backbones]]\nname = "R-50"\nrecipe = "in1k-rsb-a2"\n'
                     '[study]\nname = "in1k-adaptive"\ntuning = "adaptive"\ndata = "sample"\n')
    done = bocb("run", study, "--store", tmp_path / "s.sqlite", cache=tmp_path / "cache")
    assert done.returncode == 2 and "in1k-rsb-a2 train on full-size images" in done.stderr
    spec = resolve_trial("R-18", "SGD-M", data=DatasetSpec("sample"), num_classes=10, recipe="in1k-rsb-a3",
                         tier="smoke")
    record = run_trial(spec, load_dataset(DatasetSpec("sample")), RunOptions(device="cpu"))
    assert record["status"] == "failed" and "in1k-rsb-a3 train on full-size images" in record["error"]


def test_an_imagenet_recipe_trains_on_streamed_full_size_images(tmp_path):
    """RSB A3 on a folder of full-size JPEGs (ImageNet's layout): crops of 160 for training, a
    resize to 236 and a centre crop of 224 for testing, and the departure recorded."""
    from imagenet_like import train_tiny_r18, write_folder

    folder = write_folder(tmp_path / "in", {"train": 4, "val": 2}, sides=(180, 260))
    record = train_tiny_r18(folder, "in1k-rsb-a3", tmp_path / "cache")
    streamed = record["dataset"]["streamed"]
    assert record["status"] == "done" and record["spec"]["recipe"]["name"] == "in1k-rsb-a3"
    assert streamed["train"]["size"] == 160 and streamed["train"]["interpolation"] == "bicubic"
    assert streamed["eval"]["size"] == 224 and streamed["eval"]["crop_ratio"] == pytest.approx(224 / 236)
    assert "magnitude noise" in streamed["departures"][0]
    assert streamed["repeats"] == 1  # RSB A1/A2 repeat (tests/test_stream.py trains A2)


def test_the_in1k_studies_are_planned_with_their_stated_sizes(tmp_path):
    """Table 2 (studies/paper-in1k.toml) and its reduced tier, planned without ImageNet on this
    machine from their data_sizes; R-50's reduced cost checked by hand from the counted FLOPs."""
    import dataclasses
    import json
    from pathlib import Path

    from cli_inproc import bocb

    from bocb.compute import forward_flops
    from bocb.zoo import resolve_backbone

    studies = Path(__file__).resolve().parents[1] / "studies"
    plans = {}
    for name in ("paper-in1k", "paper-in1k-reduced"):
        done = bocb("plan", studies / f"{name}.toml", "--store", tmp_path / "none.sqlite", "--json")
        assert done.returncode == 0, done.stderr
        plans[name] = json.loads(done.stdout)
    full, reduced = plans["paper-in1k"], plans["paper-in1k-reduced"]
    assert full["trials"] == reduced["trials"] == 40
    assert reduced["gpu_hours"] < full["gpu_hours"] / 20
    # R-50 with RSB A3 on ImageNet-100: 100 epochs of (128,116 // 2,048) x 2,048 crops of 160 px
    # trained (3 forward passes each) and 5,000 test images at 224, for each of 20 optimizers.
    r50 = resolve_backbone("R-50", num_classes=100, policy="upsample", scale="paper")
    per_trial = 100 * (3 * forward_flops(dataclasses.replace(r50, input_size=160)) * 62 * 2048
                       + forward_flops(r50) * 5000)
    assert reduced["per_backbone"]["R-50"]["pflop"] == pytest.approx(20 * per_trial / 1e15, rel=1e-9)


def test_data_sizes_are_checked(tmp_path):
    from cli_inproc import bocb

    study = tmp_path / "bad.toml"
    study.write_text('backbones = ["R-18"]\noptimizers = ["SGD-M"]\n[study]\nname = "bad"\n'
                     'data_sizes = {classes = 1000, train = 10}\n')
    done = bocb("plan", study, "--store", tmp_path / "s.sqlite")
    assert done.returncode == 2 and "data_sizes: expected exactly the keys classes, train, test" in done.stderr


def test_a_backbone_that_takes_one_input_size_is_refused_an_imagenet_recipe_at_another(tmp_path):
    """DeiT-S's patch embedding takes 224 px only; RSB A3 trains at 160: refused in one line at
    plan (and run) time, naming the entry, instead of a failed trial per optimizer. A ResNet takes it."""
    from cli_inproc import bocb

    study = tmp_path / "deit-a3.toml"
    study.write_text('optimizers = ["SGD-M", "LAMB"]\n[[backbones]]\nname = "R-50"\nrecipe = "in1k-rsb-a3"\n'
                     '[[backbones]]\nname = "DeiT-S"\nrecipe = "in1k-rsb-a3"\n'
                     '[study]\nname = "deit-a3"\ntuning = "fixed"\ndata = "stream:folder:/nowhere"\n'
                     'data_sizes = {classes = 1000, train = 1281167, test = 50000}\n')
    done = bocb("plan", study, "--store", tmp_path / "s.sqlite")
    assert done.returncode == 2, done.stderr
    line, = done.stderr.strip().splitlines()
    assert "backbones[2]: DeiT-S cannot take 160 px images, at which in1k-rsb-a3 trains" in line
    assert "in1k-deit" in line  # what would work
    study.write_text(study.read_text().replace('[[backbones]]\nname = "DeiT-S"\nrecipe = "in1k-rsb-a3"\n', ""))
    assert bocb("plan", study, "--store", tmp_path / "s.sqlite").returncode == 0
