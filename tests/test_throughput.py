"""bocb plan's wall time on this machine (bocb.throughput)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bocb import throughput
from bocb.zoo import resolve_backbone


def _trial(backbone, epochs=3, train_per_class=150, test_per_class=50):
    return SimpleNamespace(backbone=backbone, recipe=SimpleNamespace(
        epochs=epochs, train_per_class=train_per_class, test_per_class=test_per_class, batch_size=16,
        precision="fp32"))


def test_estimate_by_hand():
    r18 = resolve_backbone("resnet18", num_classes=10, policy="cifar", scale="tiny")
    deit = resolve_backbone("deit_small", num_classes=10, policy="cifar", scale="tiny")
    speeds = {throughput.spec_key(r18.to_dict()): throughput.Speed(100.0, "store", 2, "cpu")}
    est = throughput.estimate([_trial(r18), _trial(r18), _trial(deit)], train_images=5000, test_images=1000,
                              num_classes=10, speeds=speeds)
    # Each R-18 trial: 3 epochs x (1,500 train + 500 test / 3) images / 100 img/s = 50 s; DeiT-S has no speed.
    assert est.hours == pytest.approx(2 * 50 / 3600)
    assert (est.trials, est.missing) == (2, ("DeiT-S",))
    assert "about 100 s" not in est.sentence() and "about 2 min" in est.sentence()
    assert "not counted (no speed): DeiT-S" in est.sentence()


def test_nothing_left_and_nothing_measured_say_so():
    assert throughput.estimate([], 10, 10, 10, {}).sentence() == "this machine: nothing left to run"
    r18 = resolve_backbone("resnet18", num_classes=10, policy="cifar", scale="tiny")
    assert "--measure" in throughput.estimate([_trial(r18)], 10, 10, 10, {}).sentence()


def test_measure_times_real_training_steps():
    r18 = resolve_backbone("resnet18", num_classes=10, policy="cifar", scale="tiny")
    speeds = throughput.measure([_trial(r18), _trial(r18)], seconds=0.3, device="cpu")
    assert list(speeds) == [throughput.spec_key(r18.to_dict())]  # one measurement per distinct spec
    speed = speeds[throughput.spec_key(r18.to_dict())]
    assert speed.source == "measured" and speed.device.startswith("cpu")
    assert 10 < speed.images_per_second < 1e6  # a tiny ResNet on CPU: thousands of images per second


def test_duration_words():
    assert [throughput.duration(s) for s in (5, 600, 36_000)] == ["5 s", "10 min", "10.0 hours"]
