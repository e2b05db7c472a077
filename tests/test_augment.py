"""Contract tests of bocb.data.augment: shapes, targets, reproducibility, and exactness of the
deterministic paths. CPU tensors, small batches; the whole file runs in a few seconds."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bocb.data.augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    AugmentConfig,
    BatchAugment,
    random_crop_flip,
)

NUM_CLASSES = 10
CPU = torch.device("cpu")

# The DeiT recipe's augmentations (RandAugment m9, mixup 0.8, cutmix 1.0, erasing 0.25), at a small resize to keep tests fast.
FULL = AugmentConfig(
    randaugment=(2, 9),
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    random_erasing=0.25,
    label_smoothing=0.1,
    resize_to=64,
)


def _batch(size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=g)
    return images, labels


def _train(config: AugmentConfig, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _batch(size)
    augment = BatchAugment(config, NUM_CLASSES, CPU)
    return augment.train(images, labels, torch.Generator().manual_seed(seed))


CASES = {
    "none": (AugmentConfig(crop_padding=None, flip=False), 32, False),
    "crop_flip": (AugmentConfig(), 32, False),
    "randaugment": (AugmentConfig(randaugment=(2, 9)), 32, False),
    "randaugment_per_image": (AugmentConfig(randaugment=(2, 9), randaugment_group=1), 32, False),
    "erasing": (AugmentConfig(random_erasing=1.0), 32, False),
    "smoothing": (AugmentConfig(label_smoothing=0.1), 32, True),
    "mixup": (AugmentConfig(mixup_alpha=0.8), 32, True),
    "cutmix": (AugmentConfig(cutmix_alpha=1.0), 32, True),
    "resize": (AugmentConfig(resize_to=64), 64, False),
    "full": (FULL, 64, True),
}


@pytest.mark.parametrize("size", [16, 7])
@pytest.mark.parametrize("case", list(CASES))
def test_shapes_dtypes_and_targets(case: str, size: int) -> None:
    config, out_size, soft = CASES[case]
    images, labels = _batch(size)
    augment = BatchAugment(config, NUM_CLASSES, CPU)
    assert augment.soft_targets is soft
    x, targets = augment.train(images, labels, torch.Generator().manual_seed(0))
    assert x.shape == (size, 3, out_size, out_size) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    if soft:
        assert targets.shape == (size, NUM_CLASSES) and targets.dtype == torch.float32
        assert torch.allclose(targets.sum(1), torch.ones(size))
        assert (targets >= 0).all()
    else:
        assert targets.dtype == torch.int64 and torch.equal(targets, labels)
    assert augment.eval(images).shape == (size, 3, out_size, out_size)


def test_same_seed_same_output_different_seed_different_output() -> None:
    x1, t1 = _train(FULL, seed=3)
    torch.manual_seed(123)  # the caller's global RNGs must not matter
    np.random.seed(123)
    random.seed(123)
    x2, t2 = _train(FULL, seed=3)
    assert torch.equal(x1, x2) and torch.equal(t1, t2)
    x3, t3 = _train(FULL, seed=4)
    assert not torch.equal(x1, x3)


def test_randaugment_alone_is_reproducible_and_acts() -> None:
    config = AugmentConfig(crop_padding=None, flip=False, randaugment=(2, 9), randaugment_prob=1.0)
    a, _ = _train(config, seed=5)
    b, _ = _train(config, seed=5)
    c, _ = _train(config, seed=6)
    plain, _ = _train(AugmentConfig(crop_padding=None, flip=False), seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, plain)


def test_train_leaves_global_rng_states_untouched() -> None:
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    _train(FULL, seed=0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])
    assert random.getstate() == python_state


def test_no_crop_no_flip_is_identity() -> None:
    images, labels = _batch()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop_flip(images, 0, False, g), images)
    augment = BatchAugment(AugmentConfig(crop_padding=0, flip=False), NUM_CLASSES, CPU)
    x, targets = augment.train(images, labels, g)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    recovered = (x * std + mean).mul(255).round().to(torch.uint8)
    assert torch.equal(recovered, images)
    assert torch.equal(x, augment.eval(images))
    assert torch.equal(targets, labels)


def test_crop_flip_moves_pixels_and_each_output_is_a_window_of_the_padded_input() -> None:
    images, _ = _batch(8)
    g = torch.Generator().manual_seed(1)
    out = random_crop_flip(images, 4, True, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(len(images)):
        windows = [
            view[:, top : top + 32, left : left + 32]
            for view in (padded[i], padded[i].flip(-1))
            for top in range(9)
            for left in range(9)
        ]
        assert any(torch.equal(out[i], w) for w in windows), f"image {i} is no padded window"


def test_flip_only_flips_some_images_exactly() -> None:
    images, _ = _batch(32)
    out = random_crop_flip(images, 0, True, torch.Generator().manual_seed(2))
    flipped = [torch.equal(o, x.flip(-1)) for o, x in zip(out, images)]
    kept = [torch.equal(o, x) for o, x in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_eval_is_deterministic_and_ignores_training_options() -> None:
    images, _ = _batch()
    torch_state = torch.get_rng_state()
    full = BatchAugment(FULL, NUM_CLASSES, CPU)
    resize_only = BatchAugment(AugmentConfig(resize_to=64), NUM_CLASSES, CPU)
    first = full.eval(images)
    torch.manual_seed(99)
    assert torch.equal(first, full.eval(images))
    assert torch.equal(first, resize_only.eval(images))
    torch.manual_seed(0)
    assert torch.equal(torch.get_rng_state(), torch_state)  # eval drew nothing from torch's RNG


def test_resize_clamps_bicubic_overshoot() -> None:
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[:, :, ::2] = 255  # stripes: bicubic overshoots past 0 and 1 on them
    x = BatchAugment(AugmentConfig(resize_to=64), NUM_CLASSES, CPU).eval(images)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    unit = x * std + mean
    assert unit.min() >= -1e-6 and unit.max() <= 1 + 1e-6
    assert (unit < 1e-6).any() and (unit > 1 - 1e-6).any()


def test_label_smoothing_alone_values() -> None:
    smoothing = 0.1
    images, labels = _batch()
    augment = BatchAugment(
        AugmentConfig(crop_padding=None, flip=False, label_smoothing=smoothing), NUM_CLASSES, CPU
    )
    x, targets = augment.train(images, labels, torch.Generator().manual_seed(0))
    off = smoothing / NUM_CLASSES
    assert torch.allclose(targets.max(1).values, torch.full((16,), 1 - smoothing + off))
    assert torch.allclose(targets.min(1).values, torch.full((16,), off))
    assert torch.equal(targets.argmax(1), labels)
    assert torch.equal(x, augment.eval(images))  # smoothing touches targets only


def test_mixup_targets_mix_two_labels() -> None:
    config = AugmentConfig(crop_padding=None, flip=False, mixup_alpha=1.0)
    _, targets = _train(config, seed=0, size=7)
    images, labels = _batch(7)
    nonzero = (targets > 1e-6).sum(1)
    assert (nonzero <= 2).all()
    # Every row keeps weight on its own label (it is mixed with at most one other image).
    assert (targets[torch.arange(7), labels] > 0).all()


def test_config_round_trip_and_validation() -> None:
    as_dict = FULL.to_dict()
    assert AugmentConfig.from_dict(json.loads(json.dumps(as_dict))) == FULL
    with pytest.raises(ValueError, match="valid"):
        AugmentConfig.from_dict({"mixup": 0.8})
    with pytest.raises(ValueError, match="magnitude"):
        AugmentConfig(randaugment=(2, 11))
    with pytest.raises(ValueError, match="random_erasing"):
        AugmentConfig(random_erasing=1.5)
    with pytest.raises(ValueError, match="crop_padding"):
        AugmentConfig(crop_padding=-1)


def test_bad_inputs_are_rejected() -> None:
    images, labels = _batch()
    augment = BatchAugment(AugmentConfig(), NUM_CLASSES, CPU)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="uint8"):
        augment.train(images.float(), labels, g)
    with pytest.raises(ValueError, match="int64"):
        augment.train(images, labels.int(), g)
