"""Reading each kind of source: torchvision's CIFAR batches, Hugging Face-layout Parquet, Hugging
Face ``save_to_disk`` folders (Arrow IPC stream files, read with the Parquet path's columns and
checks), image folders, and the decoding of encoded images.

Each reader takes a located source and returns a plan (:class:`_Plan`): the files and options
that identify the data (hashed into the dataset's fingerprint) and a ``read`` that decodes it to
:class:`bocb.data.cache.DecodedSplits`. :func:`bocb.data.sources.load_dataset` locates the
source, picks the reader, and runs ``read`` or reads the cache instead.

Encoded images (JPEG, PNG) are decoded by ``torchvision.io``, whose bundled libjpeg-turbo and
libpng give the same pixels on every machine (:func:`decode_images`).
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from bocb.data.cache import DecodedSplits
from bocb.data.safe_pickle import load_batch
from bocb.data.transforms import resize_centre_crop
from bocb.data.types import DataNotFoundError, _hw
from bocb.lazy import lazy_module

# Imported when data is first read (bocb.lazy): naming or detecting a dataset needs none of them.
pa = lazy_module("pyarrow")
pc = lazy_module("pyarrow.compute")
pq = lazy_module("pyarrow.parquet")
torch = lazy_module("torch")
tv_datasets = lazy_module("torchvision.datasets")
tv_utils = lazy_module("torchvision.datasets.utils")
tv_io = lazy_module("torchvision.io")

# torchvision's CIFAR class per kind, and the folder each unpacks to (the classes' base_folder,
# written out so that finding CIFAR on disk imports nothing; tests/test_light_commands.py checks).
_CIFAR = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def cifar_class(kind: str) -> type:
    """torchvision's dataset class for ``kind`` (cifar10 or cifar100)."""
    return getattr(tv_datasets, _CIFAR[kind])
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The held-out split of a Parquet dataset, by preference (the hub's ImageNet calls it validation).
_TEST_SPLITS = ("test", "validation", "valid", "val")


# -- plans ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Plan:
    """A located source, before anything is decoded: what identifies it and how to read it."""

    name: str
    source: str
    files: tuple[tuple[str, Traversable], ...]  # (name relative to the source root, file)
    options: dict[str, object]  # the loader options that change what is decoded
    read: Callable[[], DecodedSplits]
    # torchvision's CIFAR batches are already decoded arrays: a cached copy would cost ~180 MB of
    # disk and save no time, so they are not cached.
    cacheable: bool = True


# -- CIFAR: torchvision's python batches ---------------------------------------------------------


def _cifar_files(kind: str) -> list[tuple[str, str]]:
    """(file name, official md5) of every file torchvision's reader opens."""
    cls = cifar_class(kind)
    return [(n, md5) for n, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]


def _cifar_plan(kind: str, root: Path) -> _Plan:
    batches = root / CIFAR_FOLDERS[kind]
    official = all(tv_utils.check_integrity(str(batches / name), md5) for name, md5 in _cifar_files(kind))
    source = (f"torchvision {_CIFAR_TITLES[kind]} python batches at {batches.resolve()} "
              f"({'the official release files' if official else 'not the official release: md5 differs'})")

    def read() -> DecodedSplits:
        cls = cifar_class(kind)
        train_images, train_labels = _read_cifar_split(batches, [n for n, _ in cls.train_list])
        test_images, test_labels = _read_cifar_split(batches, [n for n, _ in cls.test_list])
        meta = load_batch(batches / cls.meta["filename"])
        classes = meta.get(cls.meta["key"])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"{batches / cls.meta['filename']}: {cls.meta['key']!r} is not a list of class names")
        return DecodedSplits(train_images, train_labels, test_images, test_labels, tuple(classes))

    files = tuple((f"{batches.name}/{name}", batches / name) for name, _ in _cifar_files(kind))
    return _Plan(name=kind, source=source, files=files, options={"reader": f"{kind}-python"},
                 read=read, cacheable=False)


def _read_cifar_split(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batches' images as uint8 ``(N, 3, 32, 32)`` (they are stored as CHW rows of 3072) and
    their labels (``labels``, or CIFAR-100's ``fine_labels``), read as torchvision reads them
    but through :func:`bocb.data.safe_pickle.load_batch`, which never runs code from a file."""
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = load_batch(path)
        data = batch.get("data")
        rows = batch.get("labels", batch.get("fine_labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                             f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        integers = isinstance(rows, list) and all(isinstance(r, int | np.integer) for r in rows)
        if not integers or len(rows) != len(data):
            raise ValueError(f"{path}: 'labels' (or 'fine_labels') must be {len(data)} integers")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(int(r) for r in rows)
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


# -- Parquet (Hugging Face layout) ---------------------------------------------------------------


def _split_files(folder: Path, splits: Sequence[str]) -> list[Path]:
    """The Parquet files of the first of ``splits`` present in ``folder``: ``train.parquet`` or
    shards ``train-00000-of-00002.parquet`` ..., in shard order."""
    for split in splits:
        pattern = re.compile(rf"{split}(?:[-_.].*)?\.parquet")
        files = sorted(p for p in folder.glob("*.parquet") if pattern.fullmatch(p.name))
        if files:
            return files
    return []


def _parquet_dirs(root: Path) -> list[Path]:
    """Folders holding train Parquet files: ``root`` itself, else its subfolders (the hub puts
    each configuration in one, e.g. ``plain_text/``)."""
    if _split_files(root, ("train",)):
        return [root]
    return [d for d in sorted(root.iterdir()) if d.is_dir() and _split_files(d, ("train",))]


def parquet_splits(root: Path) -> tuple[Path, list[Path], list[Path]]:
    """``(folder, train files, held-out files)`` of a Parquet dataset at ``root`` (a folder, a
    configuration subfolder, or one of its files); one-line errors name what was looked for."""
    if root.is_file():
        if root.suffix != ".parquet":
            raise ValueError(f"{root} is not a .parquet file or a folder of them")
        folder = root.parent  # a file names its folder; its sibling splits are loaded with it
    else:
        found = _parquet_dirs(root)
        if not found:
            raise DataNotFoundError(f"no train*.parquet in {root} or its subfolders")
        if len(found) > 1:
            raise ValueError(f"{root} holds several Parquet configurations "
                             f"({', '.join(d.name for d in found)}): pass one of those folders")
        folder = found[0]
    train, test = _split_files(folder, ("train",)), _split_files(folder, _TEST_SPLITS)
    if not train or not test:
        raise DataNotFoundError(f"{folder} needs train*.parquet and test*.parquet (or validation*, val*), "
                                f"found: {', '.join(p.name for p in folder.glob('*.parquet')) or 'none'}")
    return folder, train, test


def _parquet_plan_at(root: Path, label_column: str | None, image_size: int | None,
                     image_column: str | None = None) -> _Plan:
    folder, train, test = parquet_splits(root)
    name = (root if root.is_dir() else root.parent).resolve().name
    names = ", ".join(p.name for p in train + test)
    return _parquet_plan(name=name, source=f"Parquet {folder.resolve()} ({names})",
                         train=[(p.name, p) for p in train], test=[(p.name, p) for p in test],
                         label_column=label_column, image_size=image_size, image_column=image_column)


def _arrow_plan_at(root: Path, label_column: str | None, image_size: int | None,
                   image_column: str | None = None) -> _Plan:
    """A ``datasets.save_to_disk`` folder: ``dataset_dict.json`` naming the splits, each split a
    folder of Arrow stream files listed in its ``state.json`` (in that order; else sorted)."""
    try:
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{root}: not a save_to_disk folder (dataset_dict.json: {_one_line(exc)})") from None
    test_split = next((s for s in _TEST_SPLITS if s in splits), None)
    if "train" not in splits or test_split is None:
        raise DataNotFoundError(f"{root} needs a train split and a test split (or validation, valid, val); "
                                f"its splits: {', '.join(map(str, splits)) or 'none'}")

    def files(split: str) -> list[tuple[str, Path]]:
        folder = root / split
        try:
            names = [d["filename"] for d in json.loads((folder / "state.json").read_text())["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError):
            names = sorted(p.name for p in folder.glob("*.arrow"))
        if not names:
            raise DataNotFoundError(f"{folder}: no Arrow files")
        return [(f"{split}/{n}", folder / n) for n in names]

    train, test = files("train"), files(test_split)
    return _parquet_plan(name=root.resolve().name, source=f"save_to_disk folder {root.resolve()} "
                         f"({', '.join(n for n, _ in train + test)})", train=train, test=test,
                         label_column=label_column, image_size=image_size, image_column=image_column)


def _hf_features(schema: pa.Schema) -> dict:
    """The ``features`` of the Hugging Face ``datasets`` schema metadata, or {}."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        info = json.loads(raw) if raw else {}
        features = info.get("info", info).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _is_arrow(file: Traversable) -> bool:
    return file.name.endswith(".arrow")


def _read_schema(file: Traversable) -> pa.Schema:
    try:
        with file.open("rb") as f:
            return pa.ipc.open_stream(f).schema if _is_arrow(file) else pq.read_schema(f)
    except (pa.ArrowException, OSError) as exc:
        kind = "Arrow stream" if _is_arrow(file) else "Parquet"
        raise ValueError(f"{file}: not a readable {kind} file ({_one_line(exc)})") from None


def _read_table(file: Traversable, columns: list[str]) -> pa.Table:
    """The columns of a Parquet file or an Arrow IPC stream file (what ``save_to_disk`` writes)."""
    with file.open("rb") as f:
        if _is_arrow(file):
            return pa.ipc.open_stream(f).read_all().select(columns)
        return pq.read_table(f, columns=columns)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def pick_columns(train: list[tuple[str, Traversable]], test: list[tuple[str, Traversable]],
                 label_column: str | None, image_column: str | None
                 ) -> tuple[str, str, list[str] | None]:
    """``(image_column, label_column, class names the metadata declares or None)`` of a Parquet or
    Arrow dataset, every file checked to hold both columns."""
    schema = _read_schema(train[0][1])
    features = _hf_features(schema)
    where = train[0][0]
    if label_column is None:
        # The usual names first (CIFAR-100's fine labels before its coarse ones), then a column the
        # Hugging Face metadata declares a ClassLabel, then the plural some sets use.
        classlabels = [c for c, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"]
        label_column = next((c for c in ("label", "fine_label", *classlabels, "labels") if c in schema.names), None)
        if label_column is None:
            raise ValueError(f"{where} has no 'label', 'fine_label' or 'labels' column: name it with "
                             f"--label-column (label_column in a study) from {', '.join(schema.names)}")

    declared = [c for c, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]
    if image_column is not None and image_column not in schema.names:
        raise ValueError(f"{where} has no column {image_column!r} (--image-column, image_column in a study); "
                         f"columns: {', '.join(schema.names)}")
    image_column = image_column or next((c for c in [*declared, "img", "image"] if c in schema.names), None)
    if image_column is None:
        raise ValueError(f"{where} has no image column (declared Image in its 'huggingface' metadata, or "
                         f"named img or image): name it with --image-column (image_column in a study) from "
                         f"{', '.join(schema.names)}")
    for relname, file in train + test:
        names = _read_schema(file).names
        for column in (image_column, label_column):
            if column not in names:
                raise ValueError(f"{relname} has no column {column!r}; columns: {', '.join(names)}")
    label_feature = features.get(label_column, {})
    declared_names = label_feature.get("names") if isinstance(label_feature, dict) else None
    return image_column, label_column, declared_names


def _parquet_plan(*, name: str, source: str, train: list[tuple[str, Traversable]],
                  test: list[tuple[str, Traversable]], label_column: str | None,
                  image_size: int | None, image_column: str | None = None) -> _Plan:
    image_column, label_column, declared_names = pick_columns(train, test, label_column, image_column)

    def read() -> DecodedSplits:
        train_images, train_labels = _read_parquet_split(train, image_column, label_column, image_size)
        test_images, test_labels = _read_parquet_split(test, image_column, label_column, image_size)
        # Without ClassLabel names, classes are the label values themselves.
        top = int(max(train_labels.max(initial=-1), test_labels.max(initial=-1)))
        classes = tuple(str(c) for c in declared_names) if declared_names else tuple(map(str, range(top + 1)))
        return _splits(train_images, train_labels, test_images, test_labels, classes, name)

    options = {"reader": "parquet", "image_column": image_column, "label_column": label_column,
               "image_size": image_size}
    return _Plan(name=name, source=source, files=tuple(train + test), options=options, read=read)


def _read_parquet_split(files: list[tuple[str, Traversable]], image_column: str, label_column: str,
                        image_size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    blobs: list[torch.Tensor] = []
    names: list[str] = []
    labels = []
    for relname, file in files:
        try:
            table = _read_table(file, [image_column, label_column])
        except (pa.ArrowException, OSError) as exc:  # damaged pages, a truncated file
            raise ValueError(f"{relname}: damaged {'Arrow' if _is_arrow(file) else 'Parquet'} data "
                             f"({_one_line(exc)})") from None
        column = table.column(image_column).combine_chunks()
        if pa.types.is_struct(column.type):  # the hub's Image feature: struct{bytes, path}
            if column.type.get_field_index("bytes") < 0:
                raise ValueError(f"{relname}: image column {image_column!r} has no 'bytes' field")
            column = pc.struct_field(column, "bytes")
        if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            raise ValueError(f"{relname}: image column {image_column!r} holds {column.type}, not encoded "
                             f"image bytes")
        if column.null_count:
            raise ValueError(f"{relname}: {column.null_count} rows have no image bytes (path-only images "
                             f"are not supported)")
        blobs.extend(_byte_views(column))
        names.extend(f"{relname} row {i}" for i in range(len(column)))
        lab = table.column(label_column)
        if lab.null_count or not pa.types.is_integer(lab.type):
            raise ValueError(f"{relname}: label column {label_column!r} must be integers without nulls, "
                             f"got {lab.type} with {lab.null_count} nulls")
        labels.append(lab.to_numpy().astype(np.int64))
    return decode_images(blobs, image_size=image_size, names=names), np.concatenate(labels)


def _byte_views(column: pa.Array) -> list[torch.Tensor]:
    """One uint8 tensor per value of a binary column: views into one copy of its data buffer.
    The copy makes the memory writable (torch warns on read-only buffers) and costs ~10 ms for
    CIFAR-10's 15 MB of JPEGs; the per-row views cost nothing."""
    column = column.cast(pa.large_binary())  # one offset width (int64) for binary and large_binary
    _, offsets, data = column.buffers()
    ends = np.frombuffer(offsets, dtype=np.int64)[column.offset: column.offset + len(column) + 1].tolist()
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data is not None and data.size \
        else torch.empty(0, dtype=torch.uint8)
    return [flat[a:b] for a, b in zip(ends[:-1], ends[1:])]


# -- image folders -------------------------------------------------------------------------------


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and p.is_file() and not p.name.startswith("."))


def folder_layout(root: Path) -> tuple[Path, list[str]]:
    """The held-out split's folder (``test/``, else ``val/``) and the class names of an image
    folder: the sorted names of ``train/``'s subfolders (ImageNet's wnids), label = position.
    Raises a one-line error naming what was looked for."""
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DataNotFoundError(f"{root} is not an image folder: expected train/<class>/ and test/<class>/ "
                                f"(or val/<class>/) holding {', '.join(IMAGE_EXTENSIONS)} files")
    classes = _class_dirs(root / "train")
    if not classes:
        raise DataNotFoundError(f"{root / 'train'} has no class folders")
    extra = sorted(set(_class_dirs(test_dir)) - set(classes))
    if extra:
        raise ValueError(f"{test_dir} has classes that train/ lacks: {', '.join(extra)}")
    return test_dir, classes


def folder_images(split_dir: Path, classes: Sequence[str]) -> Iterator[tuple[int, list[Path]]]:
    """Per class, in label order: the label and the class's image files (sorted, recursive). One
    class at a time, so indexing ImageNet never holds all 1.28M paths as objects; a class folder
    of train/ without images is an error (a held-out split may lack a class)."""
    for label, cls in enumerate(classes):
        files = _image_files(split_dir / cls) if (split_dir / cls).is_dir() else []
        if not files and split_dir.name == "train":
            raise ValueError(f"{split_dir / cls} holds no {', '.join(IMAGE_EXTENSIONS)} files")
        yield label, files


def _folder_plan(root: Path, image_size: int | None) -> _Plan:
    test_dir, classes = folder_layout(root)
    splits: dict[str, list[tuple[str, Path, int]]] = {}
    for split_dir in (root / "train", test_dir):
        rows = splits.setdefault(split_dir.name, [])
        for label, files in folder_images(split_dir, classes):
            rows += [(p.relative_to(root).as_posix(), p, label) for p in files]
    train, test = splits["train"], splits[test_dir.name]

    def read() -> DecodedSplits:
        decoded = []
        for rows in (train, test):
            # decode_image reads a path itself, so only one encoded file is in memory at a time.
            images = decode_images([str(p) for _, p, _ in rows], image_size=image_size,
                                   names=[rel for rel, _, _ in rows])
            decoded += [images, np.array([label for _, _, label in rows], dtype=np.int64)]
        return _splits(*decoded, tuple(classes), root.name)

    files = tuple((rel, path) for rel, path, _ in train + test)
    return _Plan(name=root.resolve().name, source=f"image folder {root.resolve()} (train/, {test_dir.name}/)",
                 files=files, options={"reader": "folder", "image_size": image_size}, read=read)


# -- decoding ------------------------------------------------------------------------------------


def decode_images(blobs: Sequence[torch.Tensor | str], *, image_size: int | None = None,
                  names: Sequence[str] | None = None) -> torch.Tensor:
    """Decode encoded images (JPEG, PNG; each a uint8 tensor of the file's bytes, or a path) to
    one ``uint8`` ``(N, 3, H, W)`` tensor, converting grey and RGBA to RGB. With ``image_size``,
    each image's shorter side is resized to it (bilinear, antialiased) and the centre cropped to
    square; without, all images must be the same size. ``names`` label images in errors."""
    with quiet_codecs():
        return _decode_all(blobs, image_size, names)


@contextlib.contextmanager
def quiet_codecs() -> Iterator[None]:
    """torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every
    call (60,000 warnings for CIFAR-10); they remain the pinned, tested decoder here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                                "TorchVision are deprecated", category=DeprecationWarning)
        yield


def _decode_all(blobs: Sequence[torch.Tensor | str], image_size: int | None,
                names: Sequence[str] | None) -> torch.Tensor:
    out: torch.Tensor | None = None
    for i, blob in enumerate(blobs):
        try:
            img = tv_io.decode_image(blob, mode=tv_io.ImageReadMode.RGB)
        except RuntimeError as err:
            raise ValueError(f"cannot decode image {_name(names, i)}: {str(err).splitlines()[0]}") from None
        if image_size is not None:
            img = resize_centre_crop(img, image_size)
        if out is None:
            out = torch.empty((len(blobs), *img.shape), dtype=torch.uint8)
        elif img.shape != out.shape[1:]:
            raise ValueError(f"image {_name(names, i)} is {_hw(img)} but {_name(names, 0)} is {_hw(out[0])}: "
                             f"stream the data instead (--data stream:PATH, data = \"stream:PATH\": each image "
                             f"cropped as it is read), or load it with DatasetSpec(image_size=...) to resize "
                             f"and centre-crop every image to one size")
        out[i] = img
    if out is None:
        side = image_size or 0
        return torch.empty((0, 3, side, side), dtype=torch.uint8)
    return out


def _splits(train_images: torch.Tensor, train_labels: np.ndarray, test_images: torch.Tensor,
            test_labels: np.ndarray, classes: tuple[str, ...], name: str) -> DecodedSplits:
    if len(train_images) and len(test_images) and train_images.shape[2:] != test_images.shape[2:]:
        raise ValueError(f"{name}: train images are {_hw(train_images[0])} but test images are "
                         f"{_hw(test_images[0])}: stream the data instead (--data stream:PATH), or load it "
                         f"with DatasetSpec(image_size=...) to bring both to one size")
    return DecodedSplits(train_images, torch.from_numpy(train_labels), test_images,
                         torch.from_numpy(test_labels), classes)


def _name(names: Sequence[str] | None, i: int) -> str:
    return names[i] if names is not None else f"#{i}"
