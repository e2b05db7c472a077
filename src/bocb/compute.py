"""Compute estimates: forward FLOPs of a backbone, and the FLOPs a trial will spend.

The zoo's own backbones are looked up in the counted table :mod:`bocb.sizes` (no model is
built and torch is not imported); anything else is counted here with PyTorch's own counter
(``torch.utils.flop_counter``) on one image, on the meta device when the model allows it (no
memory, milliseconds) and on CPU otherwise. Counts are cached per process. A training step is
counted as 3x the forward (forward + backward), the usual rule.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from typing import TYPE_CHECKING, Any

from bocb import sizes

if TYPE_CHECKING:
    from bocb.spec import TrialSpec
    from bocb.zoo import BackboneSpec


def _built(spec_json: str, device: str):
    import torch

    from bocb.zoo import BackboneSpec, build_backbone

    spec = BackboneSpec.from_dict(json.loads(spec_json))
    with torch.device(device):
        return spec, build_backbone(spec).eval()


def count_forward_flops(backbone_json: str) -> float:
    """FLOPs of one forward pass, counted on the built model (no table)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    for device in ("meta", "cpu"):
        try:
            spec, model = _built(backbone_json, device)
            with torch.device(device):
                x = torch.zeros(1, 3, spec.input_size, spec.input_size)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
            return float(counter.get_total_flops())
        except (NotImplementedError, RuntimeError):
            continue  # an op without a meta kernel: count on real (CPU) tensors instead
    raise RuntimeError(f"cannot count FLOPs of {json.loads(backbone_json)['short']}")


@cache
def input_error(backbone_json: str, size: int) -> str | None:
    """Why the backbone cannot take ``size`` x ``size`` images (one line), or None when it can
    (or when that cannot be told without building it on real tensors). A forward pass on the
    meta device: shapes only, no memory, milliseconds. A ViT's patch embedding, say, takes its
    ``input_size`` only, so an ImageNet recipe that trains at 160 px cannot train it."""
    import torch

    try:
        _, model = _built(backbone_json, "meta")
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device="meta"))
    except (NotImplementedError, TypeError):
        return None  # an op without a meta kernel: not knowable here; the trial will say
    except (AssertionError, RuntimeError, ValueError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def count_state(backbone_json: str) -> tuple[int, int]:
    """(parameters, parameters + buffers) of the built model (no table)."""
    for device in ("meta", "cpu"):  # shapes only on meta; a model that cannot be built there, on the CPU
        try:
            _, model = _built(backbone_json, device)
            params = sum(p.numel() for p in model.parameters())
            return params, params + sum(b.numel() for b in model.buffers())
        except (NotImplementedError, RuntimeError):
            continue
    raise RuntimeError(f"cannot count the parameters of {json.loads(backbone_json)['short']}")


@cache
def _forward_flops(backbone_json: str) -> float:
    found = sizes.lookup(json.loads(backbone_json), "flops")
    return found if found is not None else count_forward_flops(backbone_json)


@cache
def _state(backbone_json: str) -> int:
    found = sizes.lookup(json.loads(backbone_json), "state")
    return int(found) if found is not None else count_state(backbone_json)[1]


# Effective training throughput used for time estimates, from a measurement: a CIFAR ResNet-18
# (0.56 GFLOPs forward) trains at 18.6k img/s on one H100 with bf16 and data on the GPU, i.e.
# 0.56e9 * 3 * 18.6e3 = 31 TFLOP/s of forward+backward work.
EFFECTIVE_FLOPS = 31e12

# The store's bytes per finished trial and per epoch row, all tables and indexes included, as
# benchmarks/scale.py measured them at store schema v5 (30,000 trials x 200 epochs, every trial
# with a 20-layer weight snapshot: 575 MB, of which the epoch rows 417 MB).
STORE_BYTES_PER_TRIAL = 5_300  # the trial row with its compressed spec and record (2.1 KB), its snapshot's 20 layer rows (2.8 KB)
STORE_BYTES_PER_EPOCH = 70
# A resume checkpoint holds the weights, the optimizer state (one or two tensors per weight for
# the adaptive optimizers) and RNG states: about 3x the weights.
CHECKPOINT_FACTOR = 3


def store_bytes(epochs: int) -> int:
    """The store's bytes for one finished trial of ``epochs`` epochs."""
    return STORE_BYTES_PER_TRIAL + STORE_BYTES_PER_EPOCH * epochs


def weights_bytes(spec: BackboneSpec) -> int:
    """Bytes of one trial's final weights (fp32 safetensors; the header is negligible)."""
    return 4 * _state(spec.to_json())


def forward_flops(spec: BackboneSpec) -> float:
    """FLOPs of one forward pass on one image at the spec's input size."""
    return _forward_flops(spec.to_json())


def epoch_flops(backbone: BackboneSpec, recipe: Any, train_images: int, test_images: int) -> float:
    """One epoch's FLOPs: ``train_images`` forward+backward (3x forward) and ``test_images``
    forward, at the backbone's input size, or an ImageNet recipe's train and test crop sizes
    (RSB A3: 160 and 224)."""
    inet = getattr(recipe, "imagenet", None)
    train_f = test_f = forward_flops(backbone)
    if inet is not None:
        train_f = forward_flops(dataclasses.replace(backbone, input_size=inet.train_size))
        test_f = forward_flops(dataclasses.replace(backbone, input_size=inet.test_size))
    return 3 * train_f * train_images + test_f * test_images


def trial_flops(spec: TrialSpec, train_images: int, test_images: int, num_classes: int) -> float:
    """Training (3x forward) plus per-epoch evaluation FLOPs of a whole trial (:func:`epoch_flops`)."""
    recipe = spec.recipe
    n_train = min(train_images, recipe.train_per_class * num_classes) if recipe.train_per_class else train_images
    n_test = min(test_images, recipe.test_per_class * num_classes) if recipe.test_per_class else test_images
    steps_images = (n_train // recipe.batch_size) * recipe.batch_size
    return recipe.epochs * epoch_flops(spec.backbone, recipe, steps_images, n_test)
