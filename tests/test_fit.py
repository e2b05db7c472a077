"""Budgets fitted to small data (bocb.fit): the tier's per-class counts and batch size become values
the data can honour, stated; the user's own values are checked, never changed."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_inproc import bocb
from PIL import Image

from bocb.fit import fit_recipe
from bocb.recipes import get_recipe

SMOKE = get_recipe("pytorch", "smoke")  # 200 train / 50 test per class, batch 100


def _labels(classes: int, per_class: int) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(per_class)


def test_the_smoke_tier_on_nine_images_a_class_is_fitted_and_said():
    changes, notes = fit_recipe(SMOKE, _labels(10, 9), _labels(10, 3))
    # 90 training images: 90 // 4 = 22, the largest power of two below is 16 (5 steps an epoch).
    assert changes == {"train_per_class": 9, "test_per_class": 3, "batch_size": 16}
    assert len(notes) == 3 and "smallest class has 9 training images" in notes[0] and "16" in notes[2]


def test_enough_data_changes_nothing():
    assert fit_recipe(SMOKE, _labels(10, 500), _labels(10, 100)) == ({}, [])
    # One full batch of 100 fits in 100 images: the batch stays (a study that ran keeps its ids).
    assert fit_recipe(SMOKE, _labels(10, 10), _labels(10, 50))[0] == {"train_per_class": 10}


def test_the_smallest_class_decides_and_held_out_images_count():
    labels = torch.cat([_labels(4, 60), torch.full((30,), 4)])  # class 4 has 30
    held = SMOKE.with_changes(holdout_per_class=10)
    changes, notes = fit_recipe(held, labels, _labels(5, 50))
    assert changes["train_per_class"] == 20 and "after the 10 held out" in notes[0]


def test_values_the_user_set_are_checked_not_changed():
    with pytest.raises(ValueError, match="train_per_class = 200, but the smallest class has 9 training images: at most 9"):
        fit_recipe(SMOKE, _labels(10, 9), _labels(10, 3), explicit={"train_per_class"})
    with pytest.raises(ValueError, match="batch_size = 100, but there are 90 training images"):
        fit_recipe(SMOKE.with_changes(train_per_class=9, test_per_class=3), _labels(10, 9), _labels(10, 3),
                   explicit={"batch_size"})
    with pytest.raises(ValueError, match="too few"):
        fit_recipe(SMOKE, _labels(2, 3), _labels(2, 3))


def _folder(root: Path, classes: int, train: int, test: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("few") / "pets", classes=3, train=12, test=4)


def test_train_on_a_small_folder_works_out_of_the_box(small_folder, tmp_path):
    done = bocb("train", "--backbone", "R-18", "--recipe", "smoke", "--epochs", "1", "--data", small_folder,
                "--json", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    recipe = record["spec"]["recipe"]
    assert (recipe["train_per_class"], recipe["test_per_class"], recipe["batch_size"]) == (12, 4, 8)
    assert "fitted to the data" in done.stderr and "batch_size 100 -> 8" in done.stderr
    # A flag the user gave is theirs: too many per class is an error naming the most there is.
    bad = bocb("train", "--backbone", "R-18", "--recipe", "smoke", "--epochs", "1", "--data", small_folder,
               "--train-per-class", "50", cache=tmp_path / "cache")
    assert bad.returncode == 2 and "at most 12" in bad.stderr


def test_a_study_on_a_small_folder_runs_with_its_budget_fitted(small_folder, tmp_path):
    study = tmp_path / "few.toml"
    study.write_text(f'[study]\nname = "few"\ndata = "{small_folder}"\ntier = "smoke"\ntuning = "fixed"\n'
                     'seeds = [0]\nepochs = 1\n\n[[backbones]]\nname = "R-18"\n\n[[optimizers]]\nname = "AdamW"\n')
    done = bocb("run", study, "--store", tmp_path / "s.sqlite", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fitted to the data" in done.stdout and "train_per_class 200 (the tier's) -> 12" in done.stdout
    shutil.rmtree(tmp_path / "artifacts", ignore_errors=True)
    # A count the file sets is checked: one line naming the most the data has, nothing stored.
    study.write_text(study.read_text().replace("epochs = 1", "epochs = 1\ntest_per_class = 9"))
    bad = bocb("run", study, "--store", tmp_path / "bad.sqlite", cache=tmp_path / "cache")
    assert bad.returncode == 2 and "test_per_class = 9, but the smallest class has 4 test images" in bad.stderr
    assert not (tmp_path / "bad.sqlite").exists()
