"""Small ImageNet-layout data made of real images, for the streaming tests and benchmarks/stream.py.

Real CIFAR-10 images from bocb's bundled sample, upscaled (bilinear) to full-size-like, non-square
sides and written as JPEG (quality 90) in ImageNet's layout ``train/<wnid>/<wnid>_<n>.JPEG`` and
``val/<wnid>/``; the same files can be packed into WebDataset-style tar shards or Parquet shards,
so every source holds byte-identical JPEGs. The wnid-like class names are not in CIFAR's label
order, so a test can see that labels follow the sorted folder names.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image, encode_jpeg

import bocb.data

SAMPLE = Path(bocb.data.__file__).parent / "sample" / "train.parquet"
# CIFAR label c is written under WNIDS[c]; sorted, they are not 0..9 in order.
WNIDS = ("n04552348", "n02814533", "n01530575", "n02123045", "n02421449",
         "n02085620", "n01641577", "n02374451", "n03095699", "n04467665")


def wnid_order() -> list[int]:
    """CIFAR label of each class index (position in the sorted wnids)."""
    return [WNIDS.index(w) for w in sorted(WNIDS)]


def write_folder(root: Path, per_class: dict[str, int], *, sides: tuple[int, int] = (96, 256),
                 seed: int = 0, classes: int = 10, noise: float = 0.0) -> Path:
    """``root/<split>/<wnid>/*.JPEG`` with ``per_class[split]`` images per class, each a distinct
    sample image upscaled to a random (height, width) in ``sides``. ``noise``: the std of Gaussian
    noise (0-255 scale) added before encoding; upscaled images are smooth and compress to small
    files, and JPEG decoding costs grow with the file size (25 gives ImageNet's ~110 kB at 400 px)."""
    table = pq.read_table(SAMPLE, columns=["img", "label"])
    labels = table.column("label").to_numpy()
    blobs = table.column("img").combine_chunks().field("bytes").to_pylist()
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision's codecs
        for c in range(classes):
            rows = iter(np.flatnonzero(labels == c))
            for split, count in per_class.items():
                folder = root / split / WNIDS[c]
                folder.mkdir(parents=True, exist_ok=True)
                for n in range(count):
                    image = decode_image(torch.frombuffer(bytearray(blobs[next(rows)]), dtype=torch.uint8),
                                         mode=ImageReadMode.RGB)
                    h, w = (int(v) for v in rng.integers(sides[0], sides[1] + 1, size=2))
                    big = TF.resize(image, [h, w], antialias=True)
                    if noise:
                        jitter = torch.randn(big.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
                        big = (big.float() + noise * jitter).round().clamp(0, 255).to(torch.uint8)
                    (folder / f"{WNIDS[c]}_{n}.JPEG").write_bytes(encode_jpeg(big, quality=90).numpy().tobytes())
    return root


def _split_files(folder: Path, split: str) -> list[tuple[str, Path, int]]:
    """(key, file, class index) of a split of a folder written above, in the folder reader's order."""
    wnids = sorted(p.name for p in (folder / split).iterdir())
    return [(f"{w}/{p.stem}", p, label) for label, w in enumerate(wnids)
            for p in sorted((folder / split / w).iterdir())]


def write_tar_shards(folder: Path, out: Path, per_shard: int) -> Path:
    """The folder's JPEGs as ``out/<split>-NNNNNN.tar`` with members ``<key>.jpg`` and ``<key>.cls``
    (WebDataset's layout), ``per_shard`` samples each, in the folder's order; ``classes.txt``."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        rows = _split_files(folder, split)
        for s in range(0, len(rows), per_shard):
            with tarfile.open(out / f"{split}-{s // per_shard:06d}.tar", "w") as tar:
                for key, path, label in rows[s:s + per_shard]:
                    for ext, data in (("jpg", path.read_bytes()), ("cls", str(label).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    (out / "classes.txt").write_text("\n".join(sorted(WNIDS)) + "\n")
    return out


def write_parquet_shards(folder: Path, out: Path, rows_per_group: int, files: int = 2) -> Path:
    """The folder's JPEGs as Hugging Face-layout Parquet (``image`` struct{bytes, path}, ``label``
    declared a ClassLabel of the sorted wnids): ``files`` shards per split, row groups of
    ``rows_per_group``; train as ``train-*``, the held-out split as ``validation-*``."""
    out.mkdir(parents=True, exist_ok=True)
    features = {"image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": sorted(WNIDS)}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, name in (("train", "train"), ("val", "validation")):
        rows = _split_files(folder, split)
        per_file = -(-len(rows) // files)
        for f in range(files):
            part = rows[f * per_file:(f + 1) * per_file]
            images = pa.array([{"bytes": p.read_bytes(), "path": p.name} for _, p, _ in part],
                              type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            table = pa.table({"image": images, "label": pa.array([lab for _, _, lab in part], pa.int64())})
            table = table.replace_schema_metadata(meta)
            pq.write_table(table, out / f"{name}-{f:05d}-of-{files:05d}.parquet", row_group_size=rows_per_group)
    return out


def train_tiny_r18(folder: Path, recipe: str, cache: Path) -> dict:
    """`bocb train` of a tiny R-18 with an ImageNet ``recipe`` on the streamed ``folder`` (1 epoch,
    batch 8, decoding in the training process): its JSON record, the command having succeeded."""
    from cli_inproc import bocb

    done = bocb("train", "--backbone", "R-18", "--scale", "tiny", "--policy", "upsample", "--optimizer", "LAMB",
                "--recipe", recipe, "--data", f"stream:{folder}", "--epochs", "1", "--batch-size", "8",
                "--data-workers", "0", "--device", "cpu", "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
