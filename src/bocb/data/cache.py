"""A dataset's identity (a content fingerprint) and the cache of decoded datasets.

The fingerprint is a sha256 over the source files and the loader options that change the decoded
result, so it is stable across runs, machines and copies of the same files, and it names the
cache file: ``<cache_dir>/datasets/<fingerprint>.safetensors``. The cache holds the decoded
``uint8`` tensors, so a second load skips decoding: CIFAR-10's 60,000 JPEGs take 2-3 s to read
and decode, their 185 MB cache file under 0.1 s (2-core build machine, page cache warm).

This module knows only tensors, strings and files; :mod:`bocb.data.sources` builds datasets on
top of it. A cache file that cannot be read, or that was written by another decoder version, is
treated as absent and rewritten: the cache can only ever save time, never fail a load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from bocb.lazy import lazy_module

# Imported when a cache file is first read or written (bocb.lazy).
torch = lazy_module("torch")
torchvision = lazy_module("torchvision")
safetensors = lazy_module("safetensors")
st_torch = lazy_module("safetensors.torch")

# Bump when the fingerprint recipe or the cache layout changes, so old entries stop matching.
FORMAT = "bocb-data/1"

# Up to this many source bytes are hashed by content (sha256 runs at ~1.7 GB/s on the 2-core
# build machine, so 1 GiB costs about 0.6 s); bigger sources (ImageNet folders) are identified by
# relative path, size and mtime instead, which is stable across runs but not across copies.
CONTENT_HASH_LIMIT = 1 << 30

_CHUNK = 1 << 22
_TENSORS = ("train_images", "train_labels", "test_images", "test_labels")


def fingerprint(files: Sequence[tuple[str, Traversable]], options: Mapping[str, object]) -> str:
    """Hex sha256 identifying a dataset: its files (name relative to the source root + content)
    and the loader ``options`` (JSON-serialisable) that change what is decoded.

    Files are hashed by content unless they are all on the file system and together exceed
    :data:`CONTENT_HASH_LIMIT`; then by name, size and modification time. The mode is part of the
    hash, so the two never collide.
    """
    files = sorted(files, key=lambda item: item[0])
    by_stat = all(isinstance(f, Path) for _, f in files) and (
        sum(f.stat().st_size for _, f in files) > CONTENT_HASH_LIMIT  # type: ignore[union-attr]
    )
    digest = hashlib.sha256()
    header = {"format": FORMAT, "mode": "stat" if by_stat else "content", "options": dict(options)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, file in files:
        if by_stat:
            st = file.stat()  # type: ignore[union-attr]
            entry = f"{name}\0{st.st_size}\0{st.st_mtime_ns}"
        else:
            entry = f"{name}\0{_sha256(file)}"
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def _sha256(file: Traversable) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class DecodedSplits:
    """What the cache stores: both splits' tensors and the class names."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]


def cache_path(cache_dir: Path, fingerprint: str) -> Path:
    """Where the decoded dataset with this fingerprint is cached."""
    return Path(cache_dir) / "datasets" / f"{fingerprint}.safetensors"


def _decoder() -> str:
    # Decoded pixels depend on the JPEG/PNG decoder torchvision bundles, not only on the files.
    return f"torchvision {torchvision.__version__}"


def read_cache(path: Path, fingerprint: str) -> DecodedSplits | None:
    """The cached splits at ``path``, or None when it is absent, unreadable, inconsistent, or
    was written for another fingerprint or decoder version. Never raises."""
    if not path.is_file():
        return None
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if (meta.get("format"), meta.get("fingerprint"), meta.get("decoder")) != (
            FORMAT, fingerprint, _decoder()
        ):
            return None
        # safetensors maps the file copy-on-write: pages are read on first touch, and writes to
        # the tensors never reach the file.
        tensors = st_torch.load_file(str(path))
        splits = DecodedSplits(
            *(tensors[key] for key in _TENSORS), classes=tuple(json.loads(meta["classes"]))
        )
        for images, labels in ((splits.train_images, splits.train_labels),
                               (splits.test_images, splits.test_labels)):
            ok = (images.dtype == torch.uint8 and images.dim() == 4 and labels.dtype == torch.int64
                  and labels.shape == images.shape[:1])
            if not ok:
                return None
        return splits
    except Exception:  # noqa: BLE001 - any damage to a cache file means "not cached"
        return None


def write_cache(path: Path, splits: DecodedSplits, *, fingerprint: str, name: str,
                source: str) -> None:
    """Store ``splits`` at ``path`` atomically (write a temporary file, then rename), so readers
    never see a half-written file. A failure to write (read-only or full disk) only warns."""
    tensors = {key: getattr(splits, key).contiguous() for key in _TENSORS}
    metadata = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "decoder": _decoder(),
        "name": name,
        "source": source,
        "classes": json.dumps(list(splits.classes)),
    }
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        os.close(fd)
        st_torch.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except (OSError, safetensors.SafetensorError) as err:
        warnings.warn(f"could not write the dataset cache {path}: {err}", stacklevel=3)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
