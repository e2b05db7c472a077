"""The values of bocb's data layer: what to load, what is loaded, and the errors.

- :data:`DATA_KINDS`: the kinds of source, each with a one-line description.
- :class:`DatasetSpec`: what to load (a kind, where, and loader options); JSON-serialisable.
- :class:`ImageSet`: ``uint8`` ``(N, 3, H, W)`` images with ``int64`` labels, in memory.
- :class:`Dataset`: a loaded dataset: train and test :class:`ImageSet` s, the class names, where
  the data came from and a content fingerprint.
- :class:`DataNotFoundError`, :class:`UnknownDataKindError`.
- :data:`STREAM_KINDS`: the kinds that :mod:`bocb.data.stream` can read batch by batch from disk.

This module knows only tensors and plain values; :mod:`bocb.data.sources` locates and loads
datasets into these types, with the readers of :mod:`bocb.data.readers`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass, fields
from typing import Any

from bocb.lazy import lazy_module
from bocb.plain import plain_dict

torch = lazy_module("torch")  # imported when images are first checked (bocb.lazy)

DATA_KINDS: dict[str, str] = {
    "sample": "the real CIFAR-10 subset bundled with bocb (5,000 train / 1,000 test images)",
    "cifar10": "CIFAR-10 as torchvision's python batches (a folder holding cifar-10-batches-py/)",
    "cifar100": "CIFAR-100, fine labels, as torchvision's python batches (cifar-100-python/)",
    "parquet": "Hugging Face-layout Parquet files train-*.parquet and test-*.parquet",
    "arrow": "a Hugging Face datasets.save_to_disk folder (dataset_dict.json; train/ and test/ Arrow files)",
    "folder": "an image folder train/<class>/*.jpg with test/<class>/ or val/<class>/",
    "wds": "WebDataset-style tar shards (train*.tar and val*.tar or test*.tar, each sample an image "
           "and a .cls label), always streamed",
}

# Kinds whose images are encoded files, so decoding (and resizing to image_size) applies.
_DECODED_KINDS = ("sample", "parquet", "arrow", "folder", "wds")
# Kinds that can be streamed from disk by bocb.data.stream instead of loaded into memory.
STREAM_KINDS = ("folder", "parquet", "wds")


class DataNotFoundError(ValueError):
    """No data where it was looked for. ``str(err)`` says what was tried and how to fix it."""


class UnknownDataKindError(ValueError):
    """A data kind that is not one of :data:`DATA_KINDS`; the message lists the valid ones."""

    def __init__(self, kind: str):
        close = difflib.get_close_matches(kind, DATA_KINDS, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        valid = "; ".join(f"{k} ({v})" for k, v in DATA_KINDS.items())
        super().__init__(f"unknown data kind {kind!r}: {hint}valid: {valid}")


# -- value types ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)  # eq=False: tensors do not compare to one bool
class ImageSet:
    """Images and their labels, in memory.

    ``images``: ``uint8`` ``(N, 3, H, W)``, channels first, contiguous, on the CPU;
    ``labels``: ``int64`` ``(N,)``. Checked on construction.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        im, lab = self.images, self.labels
        if not (isinstance(im, torch.Tensor) and im.dtype == torch.uint8 and im.dim() == 4
                and im.shape[1] == 3):
            raise ValueError(f"ImageSet.images must be a uint8 tensor (N, 3, H, W), got {_describe(im)}")
        if im.device.type != "cpu" or not im.is_contiguous():
            raise ValueError(f"ImageSet.images must be contiguous on the CPU, got device {im.device}, "
                             f"contiguous={im.is_contiguous()}")
        if not (isinstance(lab, torch.Tensor) and lab.dtype == torch.int64 and lab.dim() == 1
                and len(lab) == len(im) and lab.device.type == "cpu"):
            raise ValueError(f"ImageSet.labels must be an int64 CPU tensor ({len(im)},), "
                             f"got {_describe(lab)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageSet(n={len(self)}, image_shape={tuple(self.images.shape[1:])}, " \
               f"classes_present={len(self.classes_present())})"

    def classes_present(self) -> tuple[int, ...]:
        """The labels that occur at least once, ascending."""
        return tuple(torch.unique(self.labels).tolist())

    def class_counts(self, num_classes: int | None = None) -> torch.Tensor:
        """Images per label, ``int64`` of length ``num_classes`` (default: max label + 1)."""
        return torch.bincount(self.labels, minlength=num_classes or 0)

    def subset(self, per_class: int | None, seed: int) -> ImageSet:
        """``per_class`` images of every class present, picked by a ``seed``-ed permutation
        (``torch.randperm`` on the CPU generator: the same subset on every machine), kept in
        their original order. ``None`` returns this set. Raises if a class has too few images."""
        if per_class is None:
            return self
        index = per_class_rows(self.labels, per_class, seed)
        if index is None:
            return self
        return ImageSet(self.images[index].contiguous(), self.labels[index])

    def split(self, per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
        """``(rest, held)``: ``held`` is :meth:`subset` ``(per_class, seed)``, ``rest`` every other
        image; both keep their original order and together hold every image exactly once."""
        held_set = self.subset(per_class, seed)
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        held = torch.zeros(len(self), dtype=torch.bool)
        for cls in self.classes_present():
            held[order[self.labels[order] == cls][:per_class]] = True
        rest = (~held).nonzero().flatten()
        return ImageSet(self.images[rest].contiguous(), self.labels[rest]), held_set

    def select(self, classes: tuple[int, ...]) -> ImageSet:
        """The images of ``classes`` only, relabelled ``0..len(classes)-1`` in the order given."""
        mapping = torch.full((int(self.labels.max()) + 1 if len(self) else 1,), -1, dtype=torch.int64)
        for new, old in enumerate(classes):
            if old < len(mapping):
                mapping[old] = new
        keep = mapping[self.labels] >= 0
        return ImageSet(self.images[keep].contiguous(), mapping[self.labels[keep]])


def per_class_rows(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor | None:
    """The rows :meth:`ImageSet.subset` keeps, ascending (None for no rows): ``per_class`` of each
    label present, by a ``seed``-ed ``torch.randperm`` on the CPU generator. Shared with streamed
    folders (:meth:`bocb.data.stream_sources.FolderSplit.subset`), so both pick the same images."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int or None, got {per_class!r}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    present = torch.unique(labels).tolist()
    picked = []
    for cls in present:
        rows = order[labels[order] == cls][:per_class]
        if len(rows) < per_class:
            fewest = int(torch.bincount(labels)[present].min())
            raise ValueError(f"class {cls} has {len(rows)} images, fewer than per_class={per_class}; "
                             f"per_class can be at most {fewest} here")
        picked.append(rows)
    return torch.cat(picked).sort().values if picked else None


@dataclass(frozen=True)
class DatasetSpec:
    """What to load; JSON-serialisable (:meth:`to_dict`), so it can sit in a run record.

    ``kind``: one of :data:`DATA_KINDS`. ``root``: where the data is; None means "look in the
    usual places" for cifar10/cifar100 (see :func:`load_dataset`), and is an error for parquet and
    folder; the bundled sample takes none. ``label_column`` (parquet and arrow only): default ``label``,
    else ``fine_label``, a column the metadata declares a ClassLabel, ``labels``. ``image_size`` (sample, parquet, folder): resize the shorter side to it
    and centre-crop to square at load time, so images of different sizes stack. ``classes``: keep
    only these class indices, relabelled ``0..k-1`` in the order given (the transfer demo
    pre-trains on CIFAR-10 classes 0-4 and fine-tunes on 5-9); None keeps all. A spec without
    ``classes`` serialises without the key, so trial ids from before it existed stay the same.

    ``stream`` (kinds in :data:`STREAM_KINDS`): read the images from disk batch by batch in
    DataLoader workers (:mod:`bocb.data.stream`) instead of decoding the whole set into memory:
    for data that does not fit, such as ImageNet. Kind ``wds`` is always streamed (its specs say
    ``stream=True``). A streamed spec's ``image_size`` is the side of the crops it yields (None:
    the model's input size). Like ``classes``, it serialises only when set.
    """

    kind: str
    root: str | None = None
    label_column: str | None = None
    image_size: int | None = None
    classes: tuple[int, ...] | None = None
    image_column: str | None = None
    stream: bool = False

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise UnknownDataKindError(self.kind)
        if not isinstance(self.stream, bool):
            raise ValueError(f"stream must be true or false, got {self.stream!r}")
        if self.kind == "wds":
            object.__setattr__(self, "stream", True)
        if self.stream and self.kind not in STREAM_KINDS:
            raise ValueError(f"data kind {self.kind!r} is loaded into memory and cannot be streamed; "
                             f"streamed kinds: {', '.join(STREAM_KINDS)}")
        if isinstance(self.root, os.PathLike):
            object.__setattr__(self, "root", os.fspath(self.root))
        if self.kind == "sample" and self.root is not None:
            raise ValueError("data kind 'sample' is bundled with bocb and takes no root; "
                             "use kind 'parquet' for Parquet files elsewhere")
        for name in ("label_column", "image_column"):
            if getattr(self, name) is not None and self.kind not in ("parquet", "arrow"):
                raise ValueError(f"{name} applies to data kinds 'parquet' and 'arrow' only, not {self.kind!r}")
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"image_size must be a positive int or None, got {self.image_size!r}")
            if self.kind not in _DECODED_KINDS:
                raise ValueError(f"image_size applies to the kinds that decode image files "
                                 f"({', '.join(_DECODED_KINDS)}), not {self.kind!r}")
        if self.classes is not None:
            classes = tuple(self.classes)
            if (len(classes) < 2 or len(set(classes)) != len(classes)
                    or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)):
                raise ValueError(f"classes must be at least two distinct class indices >= 0, got {self.classes!r}")
            object.__setattr__(self, "classes", classes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict; :meth:`from_dict` inverts it."""
        out = plain_dict(self)
        if self.classes is None:
            del out["classes"]
        else:
            out["classes"] = list(self.classes)
        for key in ("image_column", "stream"):  # keys added later serialise only when set: trial ids stay
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown DatasetSpec keys {unknown}: valid: {', '.join(valid)}")
        return cls(**data)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A loaded dataset. ``source`` says where it came from (resolved path); ``fingerprint`` is
    the sha256 of its source files and the loader options (:func:`bocb.data.cache.fingerprint`),
    the same across runs and machines for the same files."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...]
    source: str
    fingerprint: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        n = len(self.classes)
        if n == 0:
            raise ValueError(f"dataset {self.name!r} has no classes")
        for split, images in (("train", self.train), ("test", self.test)):
            if len(images) and not (0 <= int(images.labels.min()) and int(images.labels.max()) < n):
                raise ValueError(f"dataset {self.name!r}: {split} labels must lie in [0, {n}) for {n} "
                                 f"classes, found {int(images.labels.min())}..{int(images.labels.max())}")
        if len(self.train) and len(self.test) and self.train.images.shape[2:] != self.test.images.shape[2:]:
            raise ValueError(f"dataset {self.name!r}: train images are {_hw(self.train.images)} but test "
                             f"images are {_hw(self.test.images)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def select_classes(self, classes: tuple[int, ...]) -> Dataset:
        """This dataset restricted to ``classes`` (relabelled in that order); the fingerprint says so."""
        bad = [c for c in classes if c >= self.num_classes]
        if bad:
            raise ValueError(f"dataset {self.name!r} has classes 0..{self.num_classes - 1}; asked for {bad}")
        return Dataset(
            name=f"{self.name}[{','.join(map(str, classes))}]", train=self.train.select(classes),
            test=self.test.select(classes), classes=tuple(self.classes[c] for c in classes), source=self.source,
            fingerprint=hashlib.sha256(f"{self.fingerprint}:classes={list(classes)}".encode()).hexdigest(),
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(3, H, W)``."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"classes={self.num_classes}, image_shape={self.image_shape}, "
                f"fingerprint={self.fingerprint[:12]}…, source={self.source!r})")


def _hw(image: torch.Tensor) -> str:
    return f"{image.shape[-2]}x{image.shape[-1]}"


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__
