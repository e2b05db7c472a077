"""Streaming image data: decode and transform in DataLoader workers, memory independent of the
dataset's size.

The in-memory path (:func:`bocb.data.load_dataset`) decodes a whole dataset into one uint8 tensor;
that is right for CIFAR and impossible for ImageNet (1.28M images at 224 px would be ~190 GB).
Here a dataset is an index (:func:`bocb.data.stream_sources.open_stream`) and :func:`epoch_loader`
gives one epoch of one rank as a ``torch.utils.data.DataLoader`` of ``(images, labels)`` batches:
``uint8`` ``(B, 3, S, S)`` crops and ``int64`` labels, ready for :class:`bocb.data.BatchAugment`
(RandAugment, mixup/cutmix, erasing, normalisation) on the device, as the in-memory batches are.

What is guaranteed, and how:

- **Deterministic given (seed, epoch, rank, world size)**. Image folders are map-style
  (:class:`FolderDataset`): :class:`EpochSampler` permutes all indices with a generator seeded from
  ``(seed, epoch)`` (the same permutation on every rank) and gives rank ``r`` positions ``r, r + W,
  ...``. Every image's crop and flip are drawn from its own seed of ``(seed, epoch, index)``
  (:func:`bocb.data.transforms.sample_seed`). So a folder epoch -- the order and every pixel -- is
  the same for any ``num_workers`` (DataLoader returns map-style batches in sampler order).
- **Repeated augmentation** (``repeats=k``, RSB A1/A2's ``RepeatAugSampler`` with k = 3), image
  folders only: :class:`EpochSampler` follows timm's ``RepeatAugSampler`` on bocb's permutation --
  each image written k times in a row, the copies dealt to the ranks round robin (so with several
  ranks an image's copies land on different ones), each rank keeping ``floor(n // 256 * 256 / W)``
  draws, or ``ceil(n / W)`` under 256 images (timm's rule: at least one draw per rank for a
  non-empty folder on up to 256 ranks), so an epoch is about as long as without repeats. Copy ``c``
  of an image draws its crop from ``sample_seed(seed, epoch, index, c)``: every copy another crop,
  copy 0 the crop it gets without repeats, still the same for any ``num_workers``. Shards refuse
  ``repeats > 1`` in one line: they are read front to back, and repeating a sample would mean
  holding it or reading it again.
- Shards (:class:`ShardDataset`, tar or Parquet) are read front to back: each epoch permutes the
  shards (seed, epoch), deals them to the ``world size x num_workers`` reader slots round robin
  (ranks first: each rank gets every W-th shard, so ranks differ by at most one shard), and
  each slot shuffles through a buffer of ``shuffle_buffer`` encoded samples seeded by (seed, epoch,
  rank, worker). Crops are drawn from the sample's seed of (seed, epoch, position in the split), so
  *which crop an image gets* is independent of ``num_workers``; *the order* depends on it too
  (DataLoader interleaves its workers' batches). Ranks may get a few samples more or fewer when
  shard sizes differ; :class:`EpochSampler` splits folders exactly.
- **Memory bounded**: a worker holds its batch, ``prefetch_factor`` batches in flight, and for
  shards one shuffle buffer of encoded samples and one Parquet row group; none of it grows with
  the number of images. The index itself is ~55 bytes per image (folder) or per shard.
- **Evaluation** (:class:`bocb.data.transforms.EvalTransform` with ``crop_ratio=1``) equals the
  in-memory readers' ``image_size`` images bit for bit when decoding on the CPU: same decoder, same
  resize + centre-crop function.
- **GPU decode** (``decode_device="cuda"``): workers only read files; the batch's JPEGs are decoded
  by ``torchvision.io.decode_jpeg`` on the GPU (nvJPEG) and transformed there, with the same per-image
  seeds (so the same crop boxes). It pays when CPU cores are the bottleneck (ImageNet on a GPU host
  with few cores per GPU). nvJPEG's pixels differ from libjpeg-turbo's by rounding, so the exact
  equality above holds for CPU decoding only. Non-JPEG files in a batch are decoded on the CPU.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info
from torchvision import io as tv_io

from bocb.data.readers import quiet_codecs
from bocb.data.stream_sources import FolderSplit, Shard, ShardSplit, Split
from bocb.data.transforms import sample_seed
from bocb.seeding import epoch_seed

__all__ = ["EpochSampler", "FolderDataset", "ShardDataset", "check_repeats", "epoch_loader", "measure",
           "DEFAULT_SHUFFLE_BUFFER", "REPEAT_ROUND"]

Transform = Callable[[torch.Tensor, int], torch.Tensor]  # (uint8 CHW image, its seed) -> uint8 crop
# Encoded samples per shard reader's shuffle buffer: ~110 MB of ImageNet JPEGs (~110 kB each).
DEFAULT_SHUFFLE_BUFFER = 1000
# Repeated augmentation keeps a multiple of this many draws per epoch (timm's ``selected_round``).
REPEAT_ROUND = 256
_JPEG_MAGIC = b"\xff\xd8"


def decode(data: torch.Tensor, name: str) -> torch.Tensor:
    """An encoded image (uint8 tensor of the file's bytes) to uint8 RGB ``(3, H, W)`` on the CPU,
    as :func:`bocb.data.readers.decode_images` decodes it (grey and RGBA become RGB)."""
    try:
        with quiet_codecs():
            return tv_io.decode_image(data, mode=tv_io.ImageReadMode.RGB)
    except RuntimeError as err:
        raise ValueError(f"cannot decode image {name}: {str(err).splitlines()[0]}") from None


def _bytes_tensor(data: bytes) -> torch.Tensor:
    # bytearray: torch warns on (and must not write into) read-only buffers.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# -- sampling ------------------------------------------------------------------------------------


class EpochSampler(Sampler[tuple[int, ...]]):
    """One epoch of one rank over ``n`` images: ``(index, seed, epoch)`` keys, or with ``repeats``
    above 1 ``(index, seed, epoch, copy)`` (the dataset draws the image's crop from them).
    ``shuffle``: a permutation from ``(seed, epoch)`` (the same on every rank), else index order.

    ``repeats=1``: rank ``r`` takes positions ``r, r + W, ...`` of the order. ``drop_last``
    (training): the order is cut to a multiple of ``world_size`` so that every rank gets the same
    count, as ``DistributedSampler(drop_last=True)``; without it (evaluation) every image is visited
    once and ranks differ by at most one.

    ``repeats=k`` (repeated augmentation, RSB A1/A2 with k = 3): timm's ``RepeatAugSampler`` rule on
    bocb's permutation. Each image of the order is written ``k`` times in a row, the sequence padded
    to a multiple of ``W`` by wrapping around, rank ``r`` takes positions ``r, r + W, ...`` (so an
    image's copies go to different ranks) and keeps its first :meth:`count` of them: ``floor(n //
    256 * 256 / W)``, or ``ceil(n / W)`` under 256 images (current timm; openmixup's older copy
    has no such fallback and would keep none), so an epoch draws about as many samples
    as there are images, not ``k`` times as many, and every rank the same count (``drop_last`` has
    nothing left to cut). ``copy`` numbers an image's draws 0, 1, ... (a draw that wrapped around
    gets a number after the first ``k``), so every draw gets its own crop seed."""

    def __init__(self, n: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = False, repeats: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be a whole number >= 1, got {repeats!r}")
        self.n, self.seed, self.epoch, self.repeats = n, seed, epoch, repeats
        self.rank, self.world_size, self.shuffle, self.drop_last = rank, world_size, shuffle, drop_last

    @staticmethod
    def count(n: int, *, rank: int = 0, world_size: int = 1, drop_last: bool = False, repeats: int = 1) -> int:
        """Draws one rank makes in an epoch of ``n`` images (arithmetic: no permutation is built)."""
        if repeats > 1:
            padded = -(-n * repeats // world_size)  # each rank's share of the repeated, padded sequence
            kept = n // REPEAT_ROUND * REPEAT_ROUND // world_size if n >= REPEAT_ROUND else -(-n // world_size)
            return min(kept, padded)
        if drop_last:
            return n // world_size
        return max(0, n - rank + world_size - 1) // world_size

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=generator)

    def _draws(self) -> tuple[list[int], list[int]]:
        """This rank's (indices, copy numbers), in order."""
        count = len(self)
        if count == 0:
            return [], []
        # Positions in the sequence of every image's copies in a row (padded by wrapping around).
        position = torch.arange(count) * self.world_size + self.rank
        span = self.n * self.repeats
        indices = self._order()[position % span // self.repeats]
        copies = position % self.repeats + self.repeats * (position // span)
        return indices.tolist(), copies.tolist()

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        indices, copies = self._draws()
        if self.repeats == 1:
            for index in indices:
                yield index, self.seed, self.epoch
        else:
            for index, copy in zip(indices, copies):
                yield index, self.seed, self.epoch, copy

    def __len__(self) -> int:
        return self.count(self.n, rank=self.rank, world_size=self.world_size, drop_last=self.drop_last,
                          repeats=self.repeats)


def check_repeats(split: Split, repeats: int) -> None:
    """Repeated augmentation is for image folders: shards are refused with one line saying so."""
    if repeats != 1 and not isinstance(split, FolderSplit):
        kind = "tar" if split.kind == "wds" else "Parquet"
        raise ValueError(f"repeated augmentation (repeats={repeats}) needs an image folder (--data stream:folder:"
                         f"PATH): {kind} shards are read front to back, each sample once an epoch")


# -- datasets ------------------------------------------------------------------------------------


class FolderDataset(Dataset):
    """Map-style: key ``(index, seed, epoch)`` or ``(index, seed, epoch, copy)`` (repeated
    augmentation) -> ``(crop, label)``; the file is read and decoded in the worker. With
    ``decode=False`` (GPU decode) the item is ``(file bytes, label, image seed)``."""

    def __init__(self, split: FolderSplit, transform: Transform, decode: bool = True):
        self.split, self.transform, self.decode = split, transform, decode

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[Any, ...]:
        index, seed, epoch, *copy = key
        path = self.split.path(index)
        label = int(self.split.labels[index])
        image_seed = sample_seed(seed, epoch, index, *copy)
        data = tv_io.read_file(path)
        if not self.decode:
            return data, label, image_seed
        return self.transform(decode(data, path), image_seed), label


class ShardDataset(IterableDataset):
    """Iterable: the shards of one epoch of one rank, dealt to the DataLoader's workers (see the
    module doc). Yields ``(crop, label)``, or with ``decode=False`` ``(bytes, label, image seed)``."""

    def __init__(self, split: ShardSplit, transform: Transform, *, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 decode: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.split, self.transform, self.decode = split, transform, decode
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        # Each shard's first sample's position in the split: a sample's seed is its position.
        self.starts = np.cumsum([0] + [s.num_samples for s in split.shards[:-1]]).tolist()

    def _my_shards(self, worker: int, workers: int) -> list[int]:
        order = list(range(len(self.split.shards)))
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(len(order), generator=generator).tolist()
        # Dealt to the ranks first (shard k to rank k mod W), then among each rank's workers: the
        # ranks' shares then differ by at most one shard whatever the worker count.
        slot, slots = worker * self.world_size + self.rank, self.world_size * workers
        return order[slot::slots]

    def _samples(self, shards: list[int]) -> Iterator[tuple[bytes, int, int]]:
        for k in shards:
            shard: Shard = self.split.shards[k]
            for position, (data, label) in enumerate(self.split.records(shard)):
                yield data, label, self.starts[k] + position

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        samples = self._samples(self._my_shards(worker, workers))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
            samples = _shuffled(samples, self.shuffle_buffer, rng)
        for data, label, position in samples:
            image_seed = sample_seed(self.seed, self.epoch, position)
            tensor = _bytes_tensor(data)
            if not self.decode:
                yield tensor, label, image_seed
                continue
            yield self.transform(decode(tensor, f"#{position} of {self.split.where}"), image_seed), label


def _shuffled(samples: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer: hold ``size`` samples, emit a random one as each new one arrives, then
    drain the rest in random order. Memory: ``size`` encoded samples."""
    buffer: list[Any] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = int(rng.integers(size))
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)  # type: ignore[arg-type]
    yield from buffer


# -- the loader ----------------------------------------------------------------------------------


def _collate_encoded(items: list[tuple[torch.Tensor, int, int]]) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
    data, labels, seeds = zip(*items)
    return list(data), torch.tensor(labels, dtype=torch.int64), list(seeds)


@dataclass
class _DecodeOn:
    """Batches of file bytes from the workers -> decoded and transformed on ``device``."""

    loader: DataLoader
    transform: Transform
    device: torch.device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for data, labels, seeds in self.loader:
            jpeg = [i for i, d in enumerate(data) if bytes(d[:2].tolist()) == _JPEG_MAGIC]
            images: list[torch.Tensor | None] = [None] * len(data)
            if jpeg:
                with quiet_codecs():
                    decoded = tv_io.decode_jpeg([data[i] for i in jpeg], mode=tv_io.ImageReadMode.RGB,
                                                device=self.device)
                for i, image in zip(jpeg, decoded):
                    images[i] = image
            for i, image in enumerate(images):
                if image is None:
                    images[i] = decode(data[i], f"#{i} of a batch").to(self.device)
            crops = [self.transform(image, seed) for image, seed in zip(images, seeds)]
            yield torch.stack(crops), labels.to(self.device)


def epoch_loader(split: Split, transform: Transform, *, batch_size: int, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = False,
                 num_workers: int = 0, prefetch_factor: int = 2, pin_memory: bool = False,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, decode_device: str | torch.device = "cpu",
                 repeats: int = 1) -> DataLoader | _DecodeOn:
    """One epoch of one rank of ``split`` as ``(uint8 (B, 3, S, S), int64 (B,))`` batches.

    ``transform``: :class:`bocb.data.transforms.TrainTransform` (training) or ``EvalTransform``.
    ``shuffle``/``drop_last``: True/True to train, False/False to evaluate every image once.
    ``num_workers``: DataLoader worker processes (0 decodes in this process); each worker runs
    torch with one thread (DataLoader's default), so throughput scales with workers up to the cores.
    ``prefetch_factor``: batches in flight per worker. ``decode_device``: ``cpu`` (decode in the
    workers) or a CUDA device (decode with nvJPEG there; see the module doc). ``repeats``: repeated
    augmentation, image folders only (:class:`EpochSampler`); for training, never evaluation. A new
    loader per epoch (workers start in ~0.1 s with fork) keeps the epoch and its seeds explicit.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_repeats(split, repeats)
    device = torch.device(decode_device)
    on_cpu = device.type == "cpu"
    if isinstance(split, FolderSplit):
        dataset: Dataset = FolderDataset(split, transform, decode=on_cpu)
        sampler: Sampler | None = EpochSampler(len(split), seed=seed, epoch=epoch, rank=rank,
                                               world_size=world_size, shuffle=shuffle, drop_last=drop_last,
                                               repeats=repeats)
    else:
        dataset = ShardDataset(split, transform, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                               shuffle=shuffle, shuffle_buffer=shuffle_buffer, decode=on_cpu)
        sampler = None
    workers: dict[str, Any] = {}
    if num_workers:
        workers = {"prefetch_factor": prefetch_factor, "worker_init_fn": functools.partial(_guard_worker, os.getpid())}
        if sys.platform.startswith("linux"):
            # Forked, whatever this process's default: a process started by spawn (a multi-process
            # trial's rank) would otherwise spawn its workers, a fresh interpreter importing torch
            # per worker per epoch; forking a process with CUDA initialised is what DataLoader
            # does by default on Linux (the workers never touch CUDA).
            workers["multiprocessing_context"] = "fork"
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        drop_last=drop_last, pin_memory=pin_memory and on_cpu,
                        collate_fn=None if on_cpu else _collate_encoded, **workers)
    return loader if on_cpu else _DecodeOn(loader, transform, device)


def _guard_worker(parent: int, worker_id: int) -> None:
    """A loader worker dies with the process that made the loader (parent-death signal and
    watchdog, :mod:`bocb.executors.orphans`). DataLoader's own check compares the parent with the
    one the worker saw at its start, so a worker that started after its parent was killed would
    watch pid 1 and live on (measured: spawned workers of a killed rank, alive minutes later)."""
    from bocb.executors.orphans import die_with_parent

    die_with_parent(parent)


def measure(batches: Any, max_batches: int | None = None) -> dict[str, float]:
    """Images per second of iterating ``batches`` (an :func:`epoch_loader`), first batch included:
    ``{"images", "seconds", "images_per_s", "first_batch_s"}``."""
    images = 0
    t0 = time.perf_counter()
    first = None
    for i, (x, _labels) in enumerate(batches):
        images += len(x)
        if first is None:
            first = time.perf_counter() - t0
        if max_batches is not None and i + 1 >= max_batches:
            break
    seconds = time.perf_counter() - t0
    return {"images": images, "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 1) if seconds else 0.0,
            "first_batch_s": round(first or 0.0, 3)}
