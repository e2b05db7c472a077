"""Batched training augmentation on uint8 image tensors, on whatever device holds the data.

The training set lives as one uint8 tensor (N, 3, H, W) on the training device and batches are
slices of it (the airbench habit: no PIL, no DataLoader, no host round trip). :class:`BatchAugment`
turns such a slice into the float, normalised input of the model plus its targets, covering the
augmentations of the paper's four recipes (PyTorch, DeiT, ConvNeXt, RSB-A2; :mod:`bocb.recipes`).
The work is done by maintained libraries: torchvision's v2 ``RandAugment`` and timm's ``Mixup``
and ``RandomErasing``; only the crop-and-flip, which must be vectorised over the batch, is written
here.

Order of a training batch (each stage is skipped when its option is off)::

    uint8 crop + flip -> RandAugment (uint8) -> float in [0, 1] + bicubic resize + clamp
      -> normalise (mean/std) -> random erasing -> mixup/cutmix + label smoothing (soft targets)

This is timm's order: its per-sample transform ends with normalisation and random erasing, and
mixup runs on the collated (already normalised) batch.

Choices, stated once here and recorded through :meth:`AugmentConfig.to_dict`:

- **Crop padding** is ``crop_pad_mode``: ``zeros`` (torchvision ``RandomCrop(32, padding=4)``'s
  default) or ``reflect`` (``padding_mode="reflect"``, what the authors' released CIFAR pipelines
  use and bocb's recipes default to). Crop offsets and flips are drawn per image from the passed
  ``torch.Generator`` and applied with two ``gather`` calls, no per-image loop; reflection is an
  index map inside those gathers, so it costs nothing extra and works for any dtype and device.
- **RandAugment is torchvision's, applied per group of images.** ``v2.RandAugment`` draws one op
  sequence per call, so calling it on the whole batch would give every image the same ops. It is
  called on consecutive chunks of ``randaugment_group`` images (default 8); batches are slices of
  a shuffled dataset, so a chunk is a random set of images. With a group of 1 it is exactly
  per-image, as timm's PIL RandAugment is. Measured on a 2-core CPU container (torch 2.14.1, 1
  thread, batch 128 of 32x32, the DeiT set of augmentations): 30 ms per batch with a group of 1
  against 8 ms with a group of 8; on a GPU each call is a handful of kernel launches, so 128 calls
  per batch would rival a small model's step time.
- **Magnitude mapping.** timm's magnitude m on its 0-10 scale means m/10 of each op's range;
  torchvision indexes ``linspace(0, max, num_magnitude_bins)``. With 31 bins, bin ``3 * m`` is
  exactly m/10 of the range, so ``rand-m9-n2`` is ``RandAugment(num_ops=1, magnitude=27,
  num_magnitude_bins=31)`` per op. Op ranges agree with timm's (shear 0.3, rotate 30 deg,
  translate 0.45 of the size, enhance factors 1 +- 0.9, solarize threshold) except posterize
  (torchvision keeps 8 down to 4 bits, timm's increasing variant 4 down to 0).
- **Each op is applied with probability** ``randaugment_prob`` **(default 0.5)**, as timm's
  RandAugment does (its ``AugmentOp`` default ``prob=0.5``, the ``-p`` option of the string);
  torchvision applies its ops always. Each of the ``num_ops`` slots is a
  ``RandomApply([RandAugment(num_ops=1)], p=randaugment_prob)``.
- Remaining differences from timm's PIL RandAugment: torchvision's op set is timm's "increasing"
  set (``inc1``: stronger with magnitude) plus Identity, without Invert and SolarizeAdd; there is no
  magnitude noise (timm's ``mstd0.5`` of DeiT); interpolation is bilinear (timm picks bilinear or
  bicubic at random); the fill is the dataset mean in uint8, as timm's ``img_mean``. Under the
  upsample policy RandAugment runs at the stored size (32) before the resize, not at 224 as timm's
  pipeline does: 50x fewer pixels, and torchvision's translate is relative to the image size.
- **Global RNGs made reproducible.** torchvision's transforms draw from torch's global RNG, timm's
  Mixup from numpy's, timm's RandomErasing from Python's ``random`` and torch's RNG on the device.
  When any of them is on, one 62-bit seed is drawn from the passed generator per batch, all these
  RNGs are seeded from it inside ``torch.random.fork_rng``, and their previous states are
  restored afterwards, so a batch depends only on the generator and the caller's global RNG state
  is untouched. (On a GPU this draw is one host synchronisation per batch.)
- **Odd batches and mixup.** timm's Mixup asserts an even batch (its pair and element modes pair
  image i with B-1-i). An odd batch is padded by repeating its last image, mixed, and the padding
  row dropped: every returned image is still a mix of two batch images with the matching target.
  Mixup runs in timm's default ``mode='batch'`` (one lambda and one mixup-or-cutmix choice per
  batch; DeiT's and timm's train scripts' default), with ``correct_lam=True``.
- **Label smoothing without mixing** uses timm's ``mixup_target`` with lambda 1: targets are
  ``smoothing / K`` off the class and ``1 - smoothing + smoothing / K`` on it.
- **Resize** (the ``upsample`` input policy) is ``torch.nn.functional.interpolate(mode='bicubic',
  align_corners=False)`` on float images in [0, 1], clamped back to [0, 1] because bicubic
  overshoots, before normalising; train and eval share it. It is meant for upsampling (no
  antialiasing).
- **Normalisation** defaults to CIFAR-100's per-channel train-set statistics on the [0, 1] scale,
  the paper's main setting; CIFAR-10's are given as :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bocb.lazy import lazy_module
from bocb.plain import plain_dict

if TYPE_CHECKING:
    from torch import Tensor

# Imported when a batch is first augmented (bocb.lazy): a recipe's AugmentConfig needs none of them.
torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
timm_mixup = lazy_module("timm.data.mixup")
timm_erasing = lazy_module("timm.data.random_erasing")
v2 = lazy_module("torchvision.transforms.v2")

# Per-channel mean and std of the training images on a [0, 1] scale (population std over all
# pixels). CIFAR-10: the values of the original binary release (the JPEG copy in shared/data
# measures mean 0.4913/0.4821/0.4465, std 0.2452/0.2428/0.2606). CIFAR-100: the values used by the
# paper authors' OpenMixup configs. The often-quoted CIFAR-10 std (0.2023, 0.1994, 0.2010) is the
# mean of per-image stds and is not used here.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)

# timm's magnitude scale is 0..10 (its _LEVEL_DENOM); 31 torchvision bins put timm's m at bin 3m.
TIMM_MAX_MAGNITUDE = 10
RANDAUGMENT_BINS = 31
_BINS_PER_TIMM_STEP = (RANDAUGMENT_BINS - 1) // TIMM_MAX_MAGNITUDE
PAD_MODES = ("zeros", "reflect")


def _no_grad(method: Any) -> Any:
    """``torch.no_grad()`` as a decorator that does not need torch when the class is defined."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return method(*args, **kwargs)
    return wrapper


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of one run, and the input policy shared with evaluation.

    Every field is recorded with a trial (:meth:`to_dict`); defaults are the "PyTorch" CIFAR
    recipe (random crop with zero padding 4, horizontal flip, nothing else).

    Attributes:
        crop_padding: random crop of the input size after padding by this many pixels on each
            side; ``None`` turns cropping off (0 also crops nothing).
        crop_pad_mode: ``zeros`` or ``reflect`` (mirror without repeating the edge pixel, as
            ``torch.nn.functional.pad(mode="reflect")``).
        flip: random horizontal flip with probability 0.5.
        randaugment: ``(num_ops, magnitude)`` with magnitude on timm's 0-10 scale, e.g. ``(2, 9)``
            for timm's ``rand-m9-n2``; ``None`` turns it off.
        randaugment_group: images sharing one RandAugment op draw (1 = per image, like timm).
        randaugment_prob: probability that each drawn op is applied (timm's default 0.5).
        mixup_alpha: Beta(alpha, alpha) parameter of mixup; 0 turns mixup off.
        cutmix_alpha: Beta(alpha, alpha) parameter of cutmix; 0 turns cutmix off.
        mix_prob: probability that a batch is mixed at all (when mixup or cutmix is on).
        mix_switch_prob: probability of cutmix rather than mixup when both are on.
        label_smoothing: smoothing of the targets (uniform over classes), in [0, 1).
        random_erasing: per-image probability of timm's RandomErasing, mode 'pixel', on the
            normalised images.
        resize_to: bicubic resize of the square input to this size for train and eval (the
            ``upsample`` input policy, e.g. 32 -> 224); ``None`` keeps the stored size.
        mean: per-channel mean on a [0, 1] scale (default CIFAR-100's).
        std: per-channel std on a [0, 1] scale (default CIFAR-100's).
    """

    crop_padding: int | None = 4
    crop_pad_mode: str = "zeros"
    flip: bool = True
    randaugment: tuple[int, int] | None = None
    randaugment_group: int = 8
    randaugment_prob: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    label_smoothing: float = 0.0
    random_erasing: float = 0.0
    resize_to: int | None = None
    mean: tuple[float, float, float] = CIFAR100_MEAN
    std: tuple[float, float, float] = CIFAR100_STD

    def __post_init__(self) -> None:
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"crop_padding must be None or >= 0, got {self.crop_padding}")
        if self.crop_pad_mode not in PAD_MODES:
            raise ValueError(f"crop_pad_mode {self.crop_pad_mode!r}: valid: {', '.join(PAD_MODES)}")
        if self.randaugment is not None:
            if len(self.randaugment) != 2:
                raise ValueError(f"randaugment must be (num_ops, magnitude), got {self.randaugment}")
            num_ops, magnitude = self.randaugment
            if not isinstance(num_ops, int) or num_ops < 0:
                raise ValueError(f"randaugment num_ops must be an int >= 0, got {num_ops!r}")
            if not isinstance(magnitude, int) or not 0 <= magnitude <= TIMM_MAX_MAGNITUDE:
                raise ValueError(
                    f"randaugment magnitude must be an int in [0, {TIMM_MAX_MAGNITUDE}] "
                    f"(timm's scale), got {magnitude!r}"
                )
        if self.randaugment_group < 1:
            raise ValueError(f"randaugment_group must be >= 1, got {self.randaugment_group}")
        for name in ("randaugment_prob", "mix_prob", "mix_switch_prob", "random_erasing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.resize_to is not None and self.resize_to < 1:
            raise ValueError(f"resize_to must be None or a positive size, got {self.resize_to}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 channels, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def mixing(self) -> bool:
        """Whether mixup or cutmix is on."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-serialisable values (tuples become lists).

        ``crop_pad_mode`` is left out when it is ``zeros``, so configs from before it existed keep
        their serialisation (and trial ids)."""
        out = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in plain_dict(self).items()
        }
        if out["crop_pad_mode"] == "zeros":
            del out["crop_pad_mode"]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown augment option(s) {unknown}; valid: {valid}")
        converted = {
            key: tuple(value) if isinstance(value, list) else value for key, value in values.items()
        }
        return cls(**converted)


def random_crop_flip(
    images: Tensor, padding: int, flip: bool, generator: torch.Generator, mode: str = "zeros"
) -> Tensor:
    """Random crop of each image's own size after padding, and random horizontal flip.

    ``mode`` is ``zeros`` or ``reflect`` (see :class:`AugmentConfig`); both draw the same random
    numbers, so they crop the same windows.

    ``images`` is (B, C, H, W) of any dtype; the result has the same shape, dtype and device.
    Per image, the vertical and horizontal offsets are uniform in ``[0, 2 * padding]`` and the flip
    has probability 0.5, drawn from ``generator`` (on the images' device) in that order: offsets y,
    offsets x, flips. With ``padding == 0`` and ``flip`` false the input is returned as is.
    """
    if padding == 0 and not flip:
        return images
    batch, channels, height, width = images.shape
    device = images.device
    reflect = mode == "reflect" and padding > 0
    if reflect and padding >= min(height, width):
        raise ValueError(f"reflect padding {padding} needs images larger than it, got {height}x{width}")
    if padding > 0:
        if not reflect:
            images = F.pad(images, (padding, padding, padding, padding))  # zeros
        size = 2 * padding + 1
        top = torch.randint(0, size, (batch,), generator=generator, device=device)
        left = torch.randint(0, size, (batch,), generator=generator, device=device)
    else:
        top = left = torch.zeros(batch, dtype=torch.long, device=device)
    rows = top[:, None] + torch.arange(height, device=device)  # (B, H)
    cols = left[:, None] + torch.arange(width, device=device)  # (B, W)
    if reflect:  # index into the unpadded image: -1 -> 1, n -> n - 2 (edge pixel not repeated)
        rows = _reflect(rows - padding, height)
        cols = _reflect(cols - padding, width)
    if flip:
        flipped = torch.rand(batch, generator=generator, device=device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    # Two gathers (rows, then columns) pick each image's window and flip it in one pass.
    padded_width = images.shape[3]
    images = images.gather(2, rows[:, None, :, None].expand(batch, channels, height, padded_width))
    return images.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def _reflect(index: Tensor, size: int) -> Tensor:
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


@contextmanager
def _seeded_global_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (CPU and ``device``), numpy and Python's RNGs; restore their states on exit."""
    accelerators = [] if device.type == "cpu" else [device]
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    # device_type matters only for accelerators; for CPU, fork_rng always forks the CPU RNG.
    device_type = "cuda" if device.type == "cpu" else device.type
    with torch.random.fork_rng(devices=accelerators, device_type=device_type):
        try:
            torch.random.default_generator.manual_seed(seed)
            if accelerators:
                module = torch.get_device_module(device.type)
                with module.device(device):  # manual_seed seeds the current device only
                    module.manual_seed(seed)
            np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
            random.seed(seed)
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


class BatchAugment:
    """Applies an :class:`AugmentConfig` to uint8 batches on ``device``.

    ``train(images, labels, generator)`` returns normalised float32 images (B, 3, S, S), with S the
    stored size or ``config.resize_to``, and targets: int64 class indices (B,) when
    :attr:`soft_targets` is false, else float32 (B, num_classes) rows summing to 1 (mixup/cutmix
    and/or label smoothing). Its randomness comes only from ``generator``; the caller's global RNG
    states are left as they were. ``eval(images)`` does only the deterministic part (resize and
    normalisation). The order of stages and every choice are in the module docstring.
    """

    def __init__(self, config: AugmentConfig, num_classes: int, device: torch.device | str) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = config
        self.num_classes = num_classes
        self._mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
        self.device = self._mean.device  # with its index filled in, e.g. cuda:0
        self._randaugment = self._build_randaugment(config)
        self._erasing = (
            timm_erasing.RandomErasing(config.random_erasing, mode="pixel", device=self.device)
            if config.random_erasing > 0
            else None
        )
        self._mixup = (
            timm_mixup.Mixup(
                mixup_alpha=config.mixup_alpha,
                cutmix_alpha=config.cutmix_alpha,
                prob=config.mix_prob,
                switch_prob=config.mix_switch_prob,
                mode="batch",
                label_smoothing=config.label_smoothing,
                num_classes=num_classes,
            )
            if config.mixing
            else None
        )

    @staticmethod
    def _build_randaugment(config: AugmentConfig) -> v2.Transform | None:
        if config.randaugment is None or config.randaugment[0] == 0:
            return None
        num_ops, magnitude = config.randaugment
        fill = [round(255 * m) for m in config.mean]  # timm's img_mean
        one_op = v2.RandAugment(
            num_ops=1,
            magnitude=magnitude * _BINS_PER_TIMM_STEP,
            num_magnitude_bins=RANDAUGMENT_BINS,
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=fill,
        )
        return v2.Compose([v2.RandomApply([one_op], p=config.randaugment_prob)] * num_ops)

    @property
    def soft_targets(self) -> bool:
        """Whether :meth:`train` returns (B, num_classes) float targets instead of class indices."""
        return self.config.mixing or self.config.label_smoothing > 0

    @property
    def uses_global_rngs(self) -> bool:
        """Whether a training batch draws a seed for the library RNGs (one host sync on a GPU)."""
        return (
            self._randaugment is not None
            or self._erasing is not None
            or self._mixup is not None
        )

    def _check_images(self, images: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if images.device != self.device:
            raise ValueError(f"images are on {images.device}, this BatchAugment on {self.device}")

    def _to_input(self, images: Tensor) -> Tensor:
        """uint8 -> float in [0, 1] -> bicubic resize + clamp (if set) -> normalised float32."""
        x = images.float().div_(255.0)
        size = self.config.resize_to
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            x = x.clamp_(0.0, 1.0)  # bicubic overshoots past the valid range at edges
        return x.sub_(self._mean).div_(self._std)

    @_no_grad
    def eval(self, images: Tensor) -> Tensor:
        """Normalised float32 images (resized under the upsample policy); no random operation."""
        self._check_images(images)
        return self._to_input(images)

    @_no_grad
    def train(
        self, images: Tensor, labels: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Augmented, normalised float32 images and their targets (see the class docstring).

        ``images`` is uint8 (B, 3, H, W) and ``labels`` int64 (B,) on this object's device;
        ``generator`` lives on the same device. Same generator state and inputs give the same
        outputs.
        """
        self._check_images(images)
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be int64 of shape ({images.shape[0]},), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if generator.device.type != images.device.type:
            raise ValueError(f"generator is on {generator.device}, images on {images.device}")
        config = self.config
        images = random_crop_flip(images, config.crop_padding or 0, config.flip, generator, config.crop_pad_mode)
        if not self.uses_global_rngs:
            x = self._to_input(images)
            if self.soft_targets:
                return x, timm_mixup.mixup_target(labels, self.num_classes, 1.0, config.label_smoothing)
            return x, labels
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        with _seeded_global_rngs(seed, self.device):
            if self._randaugment is not None:
                chunks = images.split(config.randaugment_group)
                images = torch.cat([self._randaugment(chunk) for chunk in chunks])
            x = self._to_input(images)
            if self._erasing is not None:
                x = self._erasing(x)
            if self._mixup is not None:
                return self._mix(x, labels)
        if self.soft_targets:
            return x, timm_mixup.mixup_target(labels, self.num_classes, 1.0, config.label_smoothing)
        return x, labels

    def _mix(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """timm's Mixup; an odd batch gets its last image repeated, mixed, and the copy dropped."""
        assert self._mixup is not None
        batch = x.shape[0]
        if batch % 2 == 1:
            x = torch.cat([x, x[-1:]])
            labels = torch.cat([labels, labels[-1:]])
        x, targets = self._mixup(x, labels)
        return x[:batch], targets[:batch]
