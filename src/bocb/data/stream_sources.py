"""Locating streamed data and reading its encoded samples, without torch.

A streamed dataset (:class:`StreamData`) is an index, not pixels: its train and held-out splits are
either a :class:`FolderSplit` (one file per image: ImageNet's ``train/<wnid>/*.JPEG``; read at any
index, so a sampler can order it) or a :class:`ShardSplit` (many images per file: WebDataset tar
shards, Hugging Face Parquet shards; read front to back, one shard or Parquet row group at a time).
:mod:`bocb.data.stream` turns them into torch datasets that decode and transform in DataLoader
workers.

Choices, stated once:

- **Class index = position in the sorted class-folder names** of ``train/`` (ImageNet's wnids,
  ``n01440764`` -> 0), as the in-memory folder reader and torchvision's ``ImageFolder`` number them.
  Tar shards carry their label in a ``.cls`` member; their class names come from a ``classes.txt``
  next to the shards (one name per line, in label order) or are the label values. Parquet shards
  use the declared ClassLabel names, else the label values (as the in-memory reader).
- **Index memory.** A folder's paths are kept relative to its root in one numpy byte buffer with
  offsets, not a list of str: ~55 bytes per ImageNet image with its offset and label (~70 MB
  for 1.28M), and no Python object per path, whose reference counts would make forked DataLoader
  workers copy the pages they read (the "copy-on-read" growth of a list of paths). Shards are
  indexed by sample count only.
- **Tar shards** are read with the standard library's ``tarfile`` rather than the ``webdataset``
  package: the format needs ~40 lines here (members grouped by key = the path up to the first dot
  of the file name, as WebDataset groups them), the sharding and shuffling must follow bocb's own
  (seed, epoch, rank, world size) rule, and it adds no dependency. Plain (uncompressed) tar only,
  as WebDataset writes image shards. Counting the samples scans each shard's headers once (seeks,
  no image data is read).
- **Fingerprint**: sha256 of the kind, the split layout, each file's relative name and size (for
  shards) or each image's relative path and label (for folders). Contents are not hashed (that
  would read all of ImageNet); a file rewritten in place with the same name and size is not noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bocb.data.readers import (
    IMAGE_EXTENSIONS,
    _one_line,
    folder_images,
    folder_layout,
    parquet_splits,
    pick_columns,
)
from bocb.data.types import DataNotFoundError, DatasetSpec, per_class_rows
from bocb.lazy import lazy_module

pa = lazy_module("pyarrow")
pc = lazy_module("pyarrow.compute")
pq = lazy_module("pyarrow.parquet")
torch = lazy_module("torch")  # only to pick per-class subsets, as the in-memory sets do

__all__ = ["FolderSplit", "Shard", "ShardSplit", "StreamData", "open_stream", "tar_shards"]

# The held-out split's names, by preference (ImageNet's WebDataset shards say val).
HELD_OUT = ("val", "validation", "test")
# A tar sample's label member (WebDataset's convention for class indices).
LABEL_EXTENSION = "cls"
CLASSES_FILE = "classes.txt"


# -- index types ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PackedStrings:
    """Many strings in one uint8 buffer with int64 offsets: no Python object per string."""

    buffer: np.ndarray
    offsets: np.ndarray  # len(self) + 1 entries

    @classmethod
    def pack(cls, strings: Sequence[str]) -> PackedStrings:
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    @classmethod
    def concat(cls, parts: Sequence[PackedStrings]) -> PackedStrings:
        if not parts:
            return cls.pack([])
        starts = np.cumsum([0] + [len(p.buffer) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts)])
        return cls(np.concatenate([p.buffer for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes().decode()


@dataclass(frozen=True, eq=False)
class FolderSplit:
    """One split of an image folder: image ``i`` is ``root / paths[i]`` with label ``labels[i]``."""

    root: str
    where: str  # the split's folder name (train, val or test)
    paths: PackedStrings
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.paths[i])

    def subset(self, per_class: int | None, seed: int) -> FolderSplit:
        """``per_class`` images of each class, the very images :meth:`bocb.data.ImageSet.subset`
        keeps from the in-memory load of the same folder (:func:`bocb.data.types.per_class_rows`);
        None returns this split."""
        if per_class is None:
            return self
        rows = per_class_rows(torch.from_numpy(self.labels), per_class, seed)
        if rows is None:
            return self
        keep = rows.numpy()
        return FolderSplit(self.root, self.where, PackedStrings.pack([self.paths[i] for i in keep]),
                           self.labels[keep])


@dataclass(frozen=True)
class Shard:
    """A unit read front to back by one worker: a whole tar file, or one row group of a Parquet
    file (``part``), with its sample count."""

    path: str
    part: int | None
    num_samples: int

    @property
    def label(self) -> str:
        return self.path if self.part is None else f"{self.path} row group {self.part}"


@dataclass(frozen=True, eq=False)
class ShardSplit:
    """One split of a sharded dataset: its shards, in the order found (sorted file names)."""

    kind: str  # "wds" or "parquet"
    where: str
    shards: tuple[Shard, ...]
    image_column: str | None = None  # parquet only
    label_column: str | None = None

    def __len__(self) -> int:
        return sum(s.num_samples for s in self.shards)

    def records(self, shard: Shard) -> Iterator[tuple[bytes, int]]:
        """The (encoded image, label) samples of ``shard``, in stored order."""
        if self.kind == "wds":
            for _key, image, label in _tar_samples(shard.path, read_images=True):
                yield image, label  # type: ignore[misc]
            return
        table = _read_row_group(shard, [self.image_column, self.label_column])
        column = table.column(self.image_column).combine_chunks()
        if pa.types.is_struct(column.type):  # the hub's Image feature: struct{bytes, path}
            column = pc.struct_field(column, "bytes")
        yield from zip(column.to_pylist(), table.column(self.label_column).to_pylist())


Split = FolderSplit | ShardSplit


@dataclass(frozen=True, eq=False)
class StreamData:
    """A located streamed dataset: the index of its splits, class names, where it is and a
    fingerprint (see the module doc). Nothing is decoded."""

    name: str
    kind: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str
    fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"StreamData({self.name!r}, kind={self.kind}, train={len(self.train)}, test={len(self.test)}, "
                f"classes={self.num_classes}, fingerprint={self.fingerprint[:12]}…, source={self.source!r})")


# -- locating ------------------------------------------------------------------------------------


def open_stream(spec: DatasetSpec) -> StreamData:
    """Index the streamed dataset ``spec`` names (``spec.stream`` must be set). Raises
    :class:`DataNotFoundError` (one line naming what was looked for) when it is not there."""
    if not spec.stream:
        raise ValueError(f"{spec.kind} spec is not streamed: set stream=True (--data stream:...)")
    if spec.root is None:
        raise DataNotFoundError(f"data kind {spec.kind!r} needs a location: write {spec.kind}:PATH")
    root = Path(spec.root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"streamed {spec.kind} data not found: {root} does not exist")
    if spec.kind == "folder":
        data = _open_folder(root)
    elif spec.kind == "wds":
        data = _open_tar(root)
    else:
        data = _open_parquet(root, spec.label_column, spec.image_column)
    if spec.classes is not None:
        if data.kind != "folder":
            # Selecting classes in shards would mean reading and dropping samples one by one.
            raise ValueError(f"classes= subsets of streamed {data.kind} shards are not supported: "
                             "write the subset's shards, or stream an image folder")
        data = _select_classes(data, tuple(spec.classes))
    return data


def _select_classes(data: StreamData, classes: tuple[int, ...]) -> StreamData:
    """A folder's images of ``classes`` only, relabelled in that order (ImageNet-100 from
    ImageNet's folder, say), as :meth:`bocb.data.Dataset.select_classes` does for data in memory."""
    bad = [c for c in classes if c >= data.num_classes]
    if bad:
        raise ValueError(f"dataset {data.name!r} has classes 0..{data.num_classes - 1}; asked for {bad}")
    mapping = np.full(data.num_classes, -1, dtype=np.int64)
    mapping[list(classes)] = np.arange(len(classes))

    def select(split: FolderSplit) -> FolderSplit:  # type: ignore[valid-type]
        keep = np.flatnonzero(mapping[split.labels] >= 0)
        return FolderSplit(split.root, split.where, PackedStrings.pack([split.paths[i] for i in keep]),
                           mapping[split.labels[keep]])

    label = ",".join(map(str, classes)) if len(classes) <= 10 else f"{len(classes)} classes"
    return StreamData(name=f"{data.name}[{label}]", kind=data.kind, train=select(data.train), test=select(data.test),
                      classes=tuple(data.classes[c] for c in classes), source=data.source,
                      fingerprint=hashlib.sha256(f"{data.fingerprint}:classes={list(classes)}".encode()).hexdigest())


def _open_folder(root: Path) -> StreamData:
    test_dir, classes = folder_layout(root)
    splits = []
    for split_dir in (root / "train", test_dir):
        parts, labels = [], []
        for label, files in folder_images(split_dir, classes):
            parts.append(PackedStrings.pack([p.relative_to(root).as_posix() for p in files]))
            labels.append(np.full(len(files), label, dtype=np.int64))
        paths = PackedStrings.concat(parts)
        if len(paths) == 0:
            raise DataNotFoundError(f"{split_dir} holds no {', '.join(IMAGE_EXTENSIONS)} files in its class folders")
        splits.append(FolderSplit(str(root), split_dir.name, paths, np.concatenate(labels)))
    digest = hashlib.sha256(f"folder:{test_dir.name}".encode())
    for split in splits:
        digest.update(split.paths.buffer.tobytes())
        digest.update(split.paths.offsets.tobytes())
        digest.update(split.labels.tobytes())
    return StreamData(name=root.resolve().name, kind="folder", train=splits[0], test=splits[1],
                      classes=tuple(classes), source=f"image folder {root.resolve()} (train/, {test_dir.name}/), streamed",
                      fingerprint=digest.hexdigest())


def _split_token(split: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|[-_.]){split}(?:[-_.]|$)")


def tar_shards(root: Path, splits: Sequence[str]) -> tuple[str, list[Path]]:
    """The tar shards of the first of ``splits`` at ``root``: ``<split>/*.tar``, else ``*.tar``
    whose name holds the split as a word (``imagenet-train-000000.tar``); sorted by name."""
    for split in splits:
        if (root / split).is_dir():
            found = sorted((root / split).glob("*.tar"))
            if found:
                return split, found
        token = _split_token(split)
        found = sorted(p for p in root.glob("*.tar") if token.search(p.stem))
        if found:
            return split, found
    return "", []


def _open_tar(root: Path) -> StreamData:
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder of tar shards")
    train_where, train = tar_shards(root, ("train",))
    test_where, test = tar_shards(root, HELD_OUT)
    if not train or not test:
        raise DataNotFoundError(f"{root} needs train and held-out tar shards: looked for train/*.tar or "
                                f"*train*.tar, and val/, validation/, test/ *.tar or *val*.tar, *validation*.tar, "
                                f"*test*.tar; found {len(train)} train and {len(test)} held-out")
    top = -1
    splits = []
    for where, files in ((train_where, train), (test_where, test)):
        shards = []
        for f in files:
            labels = [label for _, _, label in _tar_samples(str(f), read_images=False)]
            top = max([top, *labels])
            shards.append(Shard(str(f), None, len(labels)))
        if not sum(s.num_samples for s in shards):
            raise DataNotFoundError(f"{root}: the {where} shards hold no image + .{LABEL_EXTENSION} samples")
        splits.append(ShardSplit("wds", where, tuple(shards)))
    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
        if len(classes) <= top:
            raise ValueError(f"{classes_file} names {len(classes)} classes but the shards hold label {top}")
    else:
        classes = tuple(map(str, range(top + 1)))
    return StreamData(name=root.resolve().name, kind="wds", train=splits[0], test=splits[1], classes=classes,
                      source=f"tar shards {root.resolve()} ({len(train)} {train_where}, {len(test)} {test_where}), "
                             f"streamed", fingerprint=_shard_fingerprint("wds", root, train + test, classes))


def _open_parquet(root: Path, label_column: str | None, image_column: str | None) -> StreamData:
    folder, train, test = parquet_splits(root)
    image_column, label_column, declared = pick_columns(
        [(p.name, p) for p in train], [(p.name, p) for p in test], label_column, image_column)
    splits, top = [], -1
    for files in (train, test):
        shards = []
        for f in files:
            meta = pq.ParquetFile(f).metadata
            shards += [Shard(str(f), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
            if not declared:  # the label column alone: columnar, a few bytes per row
                labels = pq.read_table(f, columns=[label_column]).column(label_column)
                top = max(top, int(pc.max(labels).as_py() or 0))
        splits.append(ShardSplit("parquet", files[0].name.split("-")[0].split(".")[0], tuple(shards),
                                 image_column=image_column, label_column=label_column))
    classes = tuple(map(str, declared)) if declared else tuple(map(str, range(top + 1)))
    return StreamData(name=(root if root.is_dir() else root.parent).resolve().name, kind="parquet",
                      train=splits[0], test=splits[1], classes=classes,
                      source=f"Parquet {folder.resolve()} ({', '.join(p.name for p in train + test)}), streamed",
                      fingerprint=_shard_fingerprint("parquet", folder, train + test, classes,
                                                     [image_column, label_column]))


def _shard_fingerprint(kind: str, root: Path, files: list[Path], classes: tuple[str, ...],
                       options: list[str] | None = None) -> str:
    listing = [(f.relative_to(root).as_posix(), f.stat().st_size) for f in files]
    return hashlib.sha256(json.dumps([kind, listing, list(classes), options]).encode()).hexdigest()


# -- reading shards ------------------------------------------------------------------------------


def _tar_samples(path: str, *, read_images: bool) -> Iterator[tuple[str, bytes | None, int]]:
    """``(key, image bytes or None, label)`` per sample of a tar shard, in stored order. A sample is
    the consecutive members sharing a key (WebDataset's grouping); one without an image or a
    ``.cls`` label is skipped."""
    try:
        with tarfile.open(path, "r:") as tar:
            key, image, label = None, None, None
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                if base.startswith(".") or not ext:
                    continue
                this = f"{folder}/{stem}"
                if this != key:
                    if key is not None and label is not None and image is not None:
                        yield key, image if read_images else None, label
                    key, image, label = this, None, None
                ext = ext.lower()
                if ext == LABEL_EXTENSION:
                    label = int(tar.extractfile(member).read())  # type: ignore[union-attr]
                elif f".{ext}" in IMAGE_EXTENSIONS:
                    # Without read_images only its presence counts: tarfile seeks over the data.
                    image = tar.extractfile(member).read() if read_images else b""  # type: ignore[union-attr]
            if key is not None and label is not None and image is not None:
                yield key, image if read_images else None, label
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable tar shard ({_one_line(exc)})") from None


def _read_row_group(shard: Shard, columns: list[str | None]) -> pa.Table:
    try:
        return pq.ParquetFile(shard.path).read_row_group(shard.part, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{shard.label}: damaged Parquet data ({_one_line(exc)})") from None
