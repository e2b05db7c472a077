"""Where datasets come from: six kinds of source loaded into one in-memory form, and the spec of
streamed data (read from disk batch by batch: :mod:`bocb.data.stream`).

Every source loads into a :class:`Dataset`: train and test :class:`ImageSet` s of ``uint8``
``(N, 3, H, W)`` images with ``int64`` labels, the class names, where the data came from and a
content fingerprint. The kinds (:data:`DATA_KINDS`):

- ``sample``: the real CIFAR-10 subset bundled with bocb (``sample/``, 500 train and 100 test
  images per class), read with the Parquet reader.
- ``cifar10`` / ``cifar100``: torchvision's python batches (``cifar-10-batches-py/``,
  ``cifar-100-python/``), read by torchvision; CIFAR-100 gives its 100 fine labels.
- ``parquet``: Hugging Face-layout Parquet (``train-*.parquet`` and ``test-*.parquet``, in the
  folder or one subfolder such as ``plain_text/``) with encoded images in an ``Image`` column.
- ``arrow``: a Hugging Face ``datasets`` ``save_to_disk`` folder (``dataset_dict.json``, ``train/``
  and ``test/`` Arrow files), read like Parquet.
- ``folder``: ImageNet-style ``train/<class>/*.jpg`` and ``test/<class>/`` (or ``val/``).
- ``wds``: WebDataset-style tar shards; streamed only (:mod:`bocb.data.stream_sources`), as are
  folder and parquet specs with ``stream=True``; :func:`load_dataset` refuses streamed specs.

This module holds :func:`parse_data_arg` (the CLI's ``--data`` text to a spec, detecting the kind
from a path), the locating of data (CIFAR in data dirs, the cache dir, or by download) and
:func:`load_dataset`, which picks a reader and, with a ``cache_dir``, caches the decoded dataset
(:mod:`bocb.data.cache`). The value types are in :mod:`bocb.data.types`; the per-kind readers and
image decoding in :mod:`bocb.data.readers`. Import them from :mod:`bocb.data`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path

from bocb.data.cache import cache_path, fingerprint, read_cache, write_cache
from bocb.data.readers import (
    _CIFAR,
    _CIFAR_TITLES,
    CIFAR_FOLDERS,
    cifar_class,
    _Plan,
    _arrow_plan_at,
    _cifar_files,
    _cifar_plan,
    _class_dirs,
    _folder_plan,
    _parquet_dirs,
    _parquet_plan,
    _parquet_plan_at,
)
from bocb.data.stream_sources import StreamData, open_stream, tar_shards
from bocb.data.types import (
    DATA_KINDS,
    STREAM_KINDS,
    DataNotFoundError,
    Dataset,
    DatasetSpec,
    ImageSet,
    UnknownDataKindError,
)

__all__ = ["load_dataset", "open_data", "parse_data_arg"]


# -- the CLI's --data argument -------------------------------------------------------------------


def parse_data_arg(text: str) -> DatasetSpec:
    """Turn ``--data`` text into a spec.

    Accepted: a kind that needs no path (``sample``, ``cifar10``, ``cifar100``; these names win
    over a same-named folder, write ``./cifar10`` for the folder); ``KIND:PATH``; or an existing
    PATH, whose kind is detected: a ``.parquet`` file, or a folder holding ``train*.parquet`` (in
    it or a subfolder) -> parquet; a folder holding ``dataset_dict.json`` (Hugging Face
    ``save_to_disk``) -> arrow; a folder holding ``cifar-10-batches-py/`` or
    ``cifar-100-python/`` (or that folder itself) -> cifar10 / cifar100; a folder holding tar
    shards (``train/*.tar`` or ``*train*.tar``) -> wds (streamed); a folder with
    ``train/<class>/`` -> folder.

    ``stream:`` before any of these (``stream:/data/imagenet``, ``stream:parquet:PATH``) streams the
    data from disk instead of loading it into memory (:mod:`bocb.data.stream`; kinds
    :data:`STREAM_KINDS`); ``wds`` is always streamed.
    """
    text = text.strip()
    head, sep, rest = text.partition(":")
    if sep and head.lower() == "stream":
        spec = parse_data_arg(rest)
        if spec.kind not in STREAM_KINDS:
            raise ValueError(f"data argument {text!r}: kind {spec.kind!r} is loaded into memory and cannot be "
                             f"streamed; streamed kinds: {', '.join(STREAM_KINDS)}")
        return replace(spec, stream=True)
    if text.lower() in ("sample", *_CIFAR):
        return DatasetSpec(text.lower())
    if text.lower() in DATA_KINDS:
        raise ValueError(f"data kind {text.lower()!r} needs a location: write {text.lower()}:PATH")
    path = Path(text).expanduser()
    if path.exists():
        return _detect(path)
    kind, sep, rest = text.partition(":")
    # Two or more letters before the colon, so a Windows drive (C:\...) is not taken for a kind.
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]+", kind):
        if kind.lower() not in DATA_KINDS:
            raise UnknownDataKindError(kind)
        if not rest:
            raise ValueError(f"data argument {text!r} has no PATH after the colon")
        return DatasetSpec(kind.lower(), root=str(Path(rest).expanduser().absolute()))
    raise DataNotFoundError(f"data argument {text!r} is neither a data kind nor an existing path; "
                            f"write one of sample, cifar10, cifar100, KIND:PATH or an existing PATH "
                            f"(kinds: {', '.join(DATA_KINDS)})")


def _detect(path: Path) -> DatasetSpec:
    root = str(path.absolute())
    if path.is_file():
        if path.suffix == ".parquet":
            return DatasetSpec("parquet", root)
        raise ValueError(f"{path} is a file but not .parquet: pass a .parquet file or a data folder")
    for kind, folder in CIFAR_FOLDERS.items():
        if path.name == folder:
            return DatasetSpec(kind, str(path.parent.absolute()))
    cifar = [kind for kind, folder in CIFAR_FOLDERS.items() if (path / folder).is_dir()]
    if len(cifar) > 1:
        raise ValueError(f"{path} holds both cifar-10-batches-py and cifar-100-python: "
                         f"write cifar10:{path} or cifar100:{path}")
    if cifar:
        return DatasetSpec(cifar[0], root)
    if (path / "dataset_dict.json").is_file():
        return DatasetSpec("arrow", root)
    if _parquet_dirs(path):
        return DatasetSpec("parquet", root)
    if tar_shards(path, ("train",))[1]:
        return DatasetSpec("wds", root)
    if (path / "train").is_dir() and _class_dirs(path / "train"):
        return DatasetSpec("folder", root)
    raise DataNotFoundError(f"cannot tell what data {path} holds: looked for train*.parquet (in it or a "
                            f"subfolder), dataset_dict.json, cifar-10-batches-py/, cifar-100-python/, tar shards "
                            f"train/*.tar or *train*.tar, and train/<class>/; "
                            f"write KIND:{path} with KIND one of {', '.join(DATA_KINDS)}")


# -- loading -------------------------------------------------------------------------------------


def load_dataset(spec: DatasetSpec, *, cache_dir: Path | None = None, data_dirs: Sequence[Path] = (),
                 download: bool = False) -> Dataset:
    """Load the dataset ``spec`` names.

    Locating cifar10/cifar100, in this order: (1) ``spec.root`` when given: then it is the only
    place looked, and a download goes there; otherwise (2) each of ``data_dirs`` (the CLI passes
    ``$BOCB_DATA_DIR``), then (3) ``cache_dir/<kind>``, each holding ``cifar-10-batches-py/`` or
    ``cifar-100-python/`` directly or under ``<kind>/``; (4) with ``download=True``, torchvision's
    download (md5-checked) into ``spec.root`` or ``cache_dir/<kind>``. Failing all, a
    :class:`DataNotFoundError` lists what was tried. parquet and folder need ``spec.root``;
    ``download`` does not apply to them.

    With ``cache_dir``, decoded datasets are cached at ``cache_dir/datasets/<fingerprint>.safetensors``
    and a later load with the same files and options reads that instead of decoding; a damaged
    cache file is rewritten. With ``cache_dir=None`` nothing is written.
    """
    if spec.stream:
        raise ValueError(f"{spec.kind} data at {spec.root} is streamed (stream=True): it is read batch by batch "
                         f"by bocb.data.stream (open_stream, epoch_loader), not loaded into memory")
    cache_dir = Path(cache_dir) if cache_dir is not None else None
    plan = _plan(spec, cache_dir=cache_dir, data_dirs=[Path(d) for d in data_dirs], download=download)
    fp = fingerprint(plan.files, plan.options)
    path = cache_path(cache_dir, fp) if cache_dir is not None and plan.cacheable else None
    splits = read_cache(path, fp) if path is not None else None
    if splits is None:
        splits = plan.read()
        if path is not None:
            write_cache(path, splits, fingerprint=fp, name=plan.name, source=plan.source)
    dataset = Dataset(
        name=plan.name,
        train=ImageSet(splits.train_images, splits.train_labels),
        test=ImageSet(splits.test_images, splits.test_labels),
        classes=splits.classes,
        source=plan.source,
        fingerprint=fp,
    )
    return dataset.select_classes(spec.classes) if spec.classes is not None else dataset


def open_data(spec: DatasetSpec, *, cache_dir: Path | None = None, data_dirs: Sequence[Path] = (),
              download: bool = False) -> Dataset | StreamData:
    """What a trainer needs for ``spec``: the in-memory :class:`Dataset` (:func:`load_dataset`), or
    for a streamed spec its index (:func:`bocb.data.stream_sources.open_stream`; nothing decoded,
    the cache and download do not apply)."""
    if spec.stream:
        return open_stream(spec)
    return load_dataset(spec, cache_dir=cache_dir, data_dirs=data_dirs, download=download)


def _plan(spec: DatasetSpec, *, cache_dir: Path | None, data_dirs: list[Path], download: bool) -> _Plan:
    if spec.kind == "sample":
        folder = resources.files(__package__).joinpath("sample")
        return _parquet_plan(
            name="cifar10-sample", source=f"bocb's bundled CIFAR-10 sample at {folder}",
            train=[("train.parquet", folder.joinpath("train.parquet"))],
            test=[("test.parquet", folder.joinpath("test.parquet"))],
            label_column=None, image_size=spec.image_size)
    if spec.kind in _CIFAR:
        return _cifar_plan(spec.kind, _locate_cifar(spec, data_dirs, cache_dir, download))
    if spec.root is None:
        raise DataNotFoundError(f"data kind {spec.kind!r} needs a location: write {spec.kind}:PATH "
                                f"(DatasetSpec root)")
    root = Path(spec.root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"{spec.kind} data not found: {root} does not exist")
    if spec.kind == "parquet":
        return _parquet_plan_at(root, spec.label_column, spec.image_size, spec.image_column)
    if spec.kind == "arrow":
        return _arrow_plan_at(root, spec.label_column, spec.image_size, spec.image_column)
    return _folder_plan(root, spec.image_size)


# -- locating CIFAR: data dirs, the cache dir, download ------------------------------------------


def _find_cifar(place: Path, kind: str) -> tuple[Path | None, str]:
    """The torchvision root (folder holding the batches folder) at ``place``, or why there is none."""
    base = CIFAR_FOLDERS[kind]
    if not place.is_dir():
        return None, "does not exist"
    roots = [place, place / kind] + ([place.parent] if place.name == base else [])
    for root in roots:
        if (root / base).is_dir():
            missing = [n for n, _ in _cifar_files(kind) if not (root / base / n).is_file()]
            if missing:
                return None, f"{root / base} lacks {', '.join(missing)}"
            return root, ""
    return None, f"no {base}/ or {kind}/{base}/ in it"


def _download_cifar(kind: str, root: Path) -> None:
    """torchvision's download: fetch the archive, check its md5, extract it into ``root``."""
    cifar_class(kind)(str(root), train=True, download=True)


def _locate_cifar(spec: DatasetSpec, data_dirs: list[Path], cache_dir: Path | None, download: bool) -> Path:
    kind = spec.kind
    places: list[tuple[str, Path | None]]
    if spec.root is not None:
        target: Path | None = Path(spec.root).expanduser()
        places = [("root", target)]
    else:
        target = cache_dir / kind if cache_dir is not None else None
        places = [("data dir", d) for d in data_dirs] or [("data dirs", None)]
        places.append(("cache dir", target))
    tried = []
    for label, place in places:
        if place is None:
            tried.append(f"{label}: none given")
            continue
        root, why = _find_cifar(place, kind)
        if root is not None:
            return root
        tried.append(f"{label} {place}: {why}")
    if not download:
        tried.append("download: not enabled")
    elif target is None:
        tried.append("download: no root or cache dir to download into")
    else:
        try:
            _download_cifar(kind, target)
            root, why = _find_cifar(target, kind)
        except Exception as err:  # noqa: BLE001 - network, checksum and disk errors all mean "not found"
            root, why = None, f"failed ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        if root is not None:
            return root
        tried.append(f"download from {cifar_class(kind).url} into {target}: {why}")
    base = CIFAR_FOLDERS[kind]
    raise DataNotFoundError(
        f"{_CIFAR_TITLES[kind]} not found; tried, in order: "
        + "; ".join(f"({i}) {t}" for i, t in enumerate(tried, 1))
        + f". Fix: pass --data {kind}:PATH with PATH the folder holding {base}/, set BOCB_DATA_DIR to "
        f"such a folder, or enable download")
