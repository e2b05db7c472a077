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
