"""Per-image transforms of decoded ``uint8`` ``(3, H, W)`` images: the shared resize + centre crop,
the ImageNet-style evaluation transform, and the seeded training crop + flip of the streaming
loader (:mod:`bocb.data.stream`).

Choices, stated once:

- **One resize + centre crop for both paths.** :func:`resize_centre_crop` is what
  :func:`bocb.data.readers.decode_images` does at load time (``image_size``) and what
  :class:`EvalTransform` does in a DataLoader worker, so a streamed evaluation image equals the
  in-memory one bit for bit when both decode on the CPU (``tests/test_stream.py`` checks it).
- **Evaluation** (:class:`EvalTransform`) resizes the shorter side to ``floor(size / crop_ratio)``
  (timm's ``scale_size``; 224 / 0.875 = 256, 224 / 0.95 = 235) and centre-crops ``size``; a
  ``crop_ratio`` of 1.0 is the in-memory readers' ``image_size`` transform.
- **Training** (:class:`TrainTransform`) is torchvision v2's ``RandomResizedCrop`` (scale
  (0.08, 1), ratio (3/4, 4/3): the ImageNet recipes') then ``RandomHorizontalFlip``. Its draws come
  from torch's global RNG, so each image's draws are made under ``torch.random.fork_rng`` seeded
  with that image's own seed (:func:`sample_seed` of seed, epoch and the image's index, and under
  repeated augmentation the copy's number): the crop of an image depends on nothing else, not the
  worker that made it nor the images before it, and the caller's RNG state is untouched (the same
  habit as :mod:`bocb.data.augment`).
- **Interpolation** defaults to bilinear with antialiasing (torchvision's reference recipe and the
  in-memory readers); ``bicubic`` is there for the DeiT-style recipes.

Importing this module imports no torch (:mod:`bocb.lazy`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bocb.lazy import lazy_module

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_module("torch")
TF = lazy_module("torchvision.transforms.v2.functional")
v2 = lazy_module("torchvision.transforms.v2")

INTERPOLATIONS = ("bilinear", "bicubic")


def resize_centre_crop(image: Tensor, size: int, resize_to: int | None = None,
                       interpolation: str = "bilinear") -> Tensor:
    """Resize the shorter side of ``image`` to ``resize_to`` (default ``size``; antialiased) and
    centre-crop ``size x size``. An image already ``size x size`` with ``resize_to == size`` is
    returned as it is (no resampling round trip)."""
    resize_to = size if resize_to is None else resize_to
    if resize_to == size and tuple(image.shape[-2:]) == (size, size):
        return image
    mode = v2.InterpolationMode(interpolation)
    return TF.center_crop(TF.resize(image, [resize_to], interpolation=mode, antialias=True), [size, size])


def sample_seed(seed: int, epoch: int, index: int, copy: int = 0) -> int:
    """A 63-bit seed for one image's random draws, mixed from (seed, epoch, index) by numpy's
    ``SeedSequence`` (neighbouring indices get unrelated seeds; ~10 µs per image).

    ``copy``: which of the image's draws in the epoch under repeated augmentation (0, 1, 2 for
    three copies); each copy gets its own seed, so its own crop. Copy 0 is mixed from (seed, epoch,
    index) alone: it is the image's seed without repeats, and copies from 1 on add ``copy``."""
    entropy = [seed, epoch, index] + ([copy] if copy else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def _check_size(size: int, interpolation: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation {interpolation!r}: valid: {', '.join(INTERPOLATIONS)}")


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``floor(size / crop_ratio)`` and centre-crop ``size``.

    ``crop_ratio``: 1.0 (default) is the in-memory readers' ``image_size`` transform; the
    ImageNet recipes use 0.875 (torchvision, DeiT) and 0.95 (RSB-A2, ConvNeXt)."""

    size: int
    crop_ratio: float = 1.0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _check_size(self.size, self.interpolation)
        if not 0.0 < self.crop_ratio <= 1.0:
            raise ValueError(f"crop_ratio must be in (0, 1], got {self.crop_ratio}")

    @property
    def resize_to(self) -> int:
        # A tiny epsilon: 224 / 0.875 must be 256 even if the division lands a hair below it.
        return math.floor(self.size / self.crop_ratio + 1e-9)

    def __call__(self, image: Tensor, seed: int | None = None) -> Tensor:
        """``seed`` is accepted and ignored: evaluation draws nothing."""
        return resize_centre_crop(image, self.size, self.resize_to, self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "eval", "size": self.size, "crop_ratio": self.crop_ratio,
                "interpolation": self.interpolation}


@dataclass(frozen=True)
class TrainTransform:
    """torchvision v2 ``RandomResizedCrop(size, scale, ratio)`` then, with ``flip``, a horizontal
    flip with probability 0.5; the draws of one image come from its own ``seed`` only."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        _check_size(self.size, self.interpolation)
        if not (len(self.scale) == 2 and 0.0 < self.scale[0] <= self.scale[1] <= 1.0):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale}")
        if not (len(self.ratio) == 2 and 0.0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {self.ratio}")

    @functools.cached_property
    def _compose(self) -> Any:
        steps = [v2.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio,
                                      interpolation=v2.InterpolationMode(self.interpolation), antialias=True)]
        if self.flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        return v2.Compose(steps)

    def __call__(self, image: Tensor, seed: int | None = None) -> Tensor:
        if seed is None:
            raise ValueError("TrainTransform needs the image's seed (bocb.data.transforms.sample_seed)")
        # Only the CPU RNG: the crop's draws are made on the CPU even for an image on a GPU.
        # torch.default_generator, not torch.manual_seed, which would also reseed every GPU.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self._compose(image)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "train", "size": self.size, "scale": list(self.scale), "ratio": list(self.ratio),
                "flip": self.flip, "interpolation": self.interpolation}
