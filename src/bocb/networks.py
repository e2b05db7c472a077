"""The network a trial starts from, shared by the trainer and the weight diagnostics (which measure
how far each layer moved from it), so neither imports the other."""

from __future__ import annotations

from pathlib import Path

import torch

from bocb import checkpoint
from bocb.spec import TrialSpec
from bocb.zoo import classifier_name, init_backbone


def starting_model(spec: TrialSpec) -> tuple[torch.nn.Module, str]:
    """The network ``spec`` starts training from, on the CPU, and its classifier's name.

    A pre-training trial starts from :func:`bocb.zoo.init_backbone` under its seed; a fine-tuning
    trial from the same, then every pre-trained weight except the classifier, which stays new.
    """
    model = init_backbone(spec.backbone, spec.seed)
    head = classifier_name(model)
    if spec.pretrained is not None:
        checkpoint.load_weights(model, Path(spec.pretrained.path), skip=head, sha256=spec.pretrained.sha256)
    return model, head
