"""Compute estimates: forward FLOPs of a backbone, and the FLOPs a trial will spend.

FLOPs come from PyTorch's own counter (``torch.utils.flop_counter``) on one image, on the meta
device when the model allows it (no memory, milliseconds) and on CPU otherwise. A training step is
counted as 3x the forward (forward + backward), the usual rule.
"""

from __future__ import annotations

import json
from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from bocb.spec import TrialSpec
from bocb.zoo import BackboneSpec, build_backbone


@cache
def _forward_flops(backbone_json: str) -> float:
    spec = BackboneSpec.from_dict(json.loads(backbone_json))
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = build_backbone(spec).eval()
                x = torch.zeros(1, 3, spec.input_size, spec.input_size)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
            return float(counter.get_total_flops())
        except (NotImplementedError, RuntimeError):
            continue  # an op without a meta kernel: count on real (CPU) tensors instead
    raise RuntimeError(f"cannot count FLOPs of {spec.short}")


# The store's bytes per finished trial and per epoch row, all tables and indexes included, as
# benchmarks/scale.py measured them (30,000 trials x 200 epochs, every trial with a 20-layer
# weight snapshot).
STORE_BYTES_PER_TRIAL = 9_500  # the trial row and record (6.3 KB), its snapshot's 20 layer rows (2.8 KB)
STORE_BYTES_PER_EPOCH = 95
# A resume checkpoint holds the weights, the optimizer state (one or two tensors per weight for
# the adaptive optimizers) and RNG states: about 3x the weights.
CHECKPOINT_FACTOR = 3


def store_bytes(epochs: int) -> int:
    """The store's bytes for one finished trial of ``epochs`` epochs."""
    return STORE_BYTES_PER_TRIAL + STORE_BYTES_PER_EPOCH * epochs


@cache
def _parameters(backbone_json: str) -> int:
    spec = BackboneSpec.from_dict(json.loads(backbone_json))
    for device in ("meta", "cpu"):  # shapes only on meta; a model that cannot be built there, on the CPU
        try:
            with torch.device(device):
                model = build_backbone(spec)
            return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
        except (NotImplementedError, RuntimeError):
            continue
    raise RuntimeError(f"cannot count the parameters of {spec.short}")


def weights_bytes(spec: BackboneSpec) -> int:
    """Bytes of one trial's final weights (fp32 safetensors; the header is negligible)."""
    return 4 * _parameters(spec.to_json())


def forward_flops(spec: BackboneSpec) -> float:
    """FLOPs of one forward pass on one image at the spec's input size."""
    return _forward_flops(spec.to_json())


def trial_flops(spec: TrialSpec, train_images: int, test_images: int, num_classes: int) -> float:
    """Training (3x forward) plus per-epoch evaluation FLOPs of a whole trial."""
    recipe = spec.recipe
    n_train = min(train_images, recipe.train_per_class * num_classes) if recipe.train_per_class else train_images
    n_test = min(test_images, recipe.test_per_class * num_classes) if recipe.test_per_class else test_images
    steps_images = (n_train // recipe.batch_size) * recipe.batch_size
    return forward_flops(spec.backbone) * recipe.epochs * (3 * steps_images + n_test)
