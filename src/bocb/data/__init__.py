"""Datasets: where images come from, in one in-memory form.

- :func:`load_dataset` — a :class:`DatasetSpec` to a :class:`Dataset` (train/test
  :class:`ImageSet` s of uint8 ``(N, 3, H, W)`` images, class names, source, fingerprint), from the
  bundled CIFAR-10 sample, torchvision's CIFAR-10/100, Hugging Face-layout Parquet or an image
  folder (:data:`DATA_KINDS`); decoded datasets are cached when given a ``cache_dir``.
- :func:`parse_data_arg` — the CLI's ``--data`` text to a spec, detecting the kind from a path.
- Streamed data (``stream:PATH``, kind ``wds``): :func:`open_stream` indexes it (a
  :class:`StreamData`), :mod:`bocb.data.stream` reads it batch by batch in DataLoader workers;
  :func:`open_data` returns whichever of the two a spec asks for.
- :class:`BatchAugment` — batched augmentation of uint8 batches on the data's device
  (:mod:`bocb.data.augment`).
"""

from bocb.data.readers import decode_images
from bocb.data.sources import load_dataset, open_data, parse_data_arg
from bocb.data.stream_sources import StreamData, open_stream
from bocb.data.types import (
    DATA_KINDS,
    STREAM_KINDS,
    DataNotFoundError,
    Dataset,
    DatasetSpec,
    ImageSet,
    UnknownDataKindError,
)


def __getattr__(name: str):
    # The augmentation module imports timm and torchvision (seconds): only a process that trains
    # pays for it, not the runner or a reading command that only loads or describes data.
    if name in ("AugmentConfig", "BatchAugment"):
        from bocb.data import augment

        return getattr(augment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "DATA_KINDS",
    "STREAM_KINDS",
    "DataNotFoundError",
    "Dataset",
    "DatasetSpec",
    "ImageSet",
    "StreamData",
    "UnknownDataKindError",
    "decode_images",
    "load_dataset",
    "open_data",
    "open_stream",
    "parse_data_arg",
]
