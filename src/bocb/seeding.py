"""Reproducibility and timing helpers shared by the classification trial and detection fine-tuning.

Every epoch reseeds all RNGs from ``(seed, epoch)`` (:func:`epoch_seed`), so a run resumed from a
checkpoint replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_all(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Seed torch, numpy and random; returns a generator on ``device`` seeded the same way."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch + 1


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a wall-clock reading covers it; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
