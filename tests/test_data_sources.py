"""Dataset sources: the bundled sample, every loader on the same images, the cache, the errors.

The loaders are checked against each other on ~70 real CIFAR-10 images taken from the bundled
sample and written out in each source format by the test itself. Tests that need the shared
CIFAR-10 copy (``../shared`` next to the repository) skip when it is absent.
"""

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, encode_png

import bocb.data
from bocb.data import (
    DATA_KINDS,
    DataNotFoundError,
    DatasetSpec,
    ImageSet,
    UnknownDataKindError,
    load_dataset,
    parse_data_arg,
)
from bocb.data import cache as data_cache
from bocb.data import readers, sources

SHARED_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "plain_text"
needs_shared = pytest.mark.skipif(
    not SHARED_CIFAR10.is_dir(),
    reason=f"the shared CIFAR-10 copy is not at {SHARED_CIFAR10} (CI mounts it at ../shared)")

SAMPLE_DIR = Path(bocb.data.__file__).parent / "sample"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The sample's fingerprint: sha256 of its two files and the loader options. It changes only if the
# sample files, the fingerprint recipe (cache.FORMAT) or the Parquet loader's options change.
SAMPLE_FINGERPRINT = "ca5380cceffb"
PER_CLASS = {"train": 5, "test": 2}

# The tests write images with torchvision's codecs, which torchvision 0.29 deprecates per call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def sample():
    return load_dataset(DatasetSpec("sample"))


@pytest.fixture(scope="module")
def picked():
    """Per split: the sample's Parquet rows of the first PER_CLASS images of each class (a
    pyarrow table, schema and metadata unchanged) and their row numbers in the sample."""
    out = {}
    for split, k in PER_CLASS.items():
        table = pq.read_table(SAMPLE_DIR / f"{split}.parquet")
        labels = table.column("label").to_numpy()
        rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in range(10)]))
        out[split] = (table.take(pa.array(rows)), rows)
    return out


def _decode(table: pa.Table) -> tuple[torch.Tensor, list[int]]:
    """The test's own decoding of a table's JPEGs, for the CIFAR batches it writes."""
    images = [decode_image(torch.frombuffer(bytearray(r["img"]["bytes"]), dtype=torch.uint8),
                           mode=ImageReadMode.RGB) for r in table.to_pylist()]
    return torch.stack(images), table.column("label").to_pylist()


def _write_parquet(folder: Path, tables: dict[str, pa.Table]) -> None:
    folder.mkdir(parents=True)
    for split, table in tables.items():
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet", compression="zstd")


def _write_folder(root: Path, tables: dict[str, pa.Table], test_name: str = "test") -> None:
    for split, table in tables.items():
        for i, row in enumerate(table.to_pylist()):
            folder = root / (test_name if split == "test" else split) / CIFAR10_NAMES[row["label"]]
            path = folder / f"{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(row["img"]["bytes"])  # the same JPEG bytes, unchanged


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10_batches(root: Path, tables: dict[str, pa.Table]) -> None:
    """torchvision's CIFAR-10 python layout: data_batch_1..5, test_batch, batches.meta, each a
    pickled dict; ``data`` is (N, 3072) uint8 in CHW order. torchvision's reader opens all five
    train batches, so 2..5 exist with zero rows."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    images, labels = _decode(tables["train"])
    _dump(base / "data_batch_1", {"data": images.reshape(len(images), -1).numpy(), "labels": labels})
    for i in range(2, 6):
        _dump(base / f"data_batch_{i}", {"data": np.zeros((0, 3072), np.uint8), "labels": []})
    images, labels = _decode(tables["test"])
    _dump(base / "test_batch", {"data": images.reshape(len(images), -1).numpy(), "labels": labels})
    _dump(base / "batches.meta", {"label_names": list(CIFAR10_NAMES)})


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, picked):
    """The picked images in every source format: {kind: path for parse_data_arg}."""
    tmp = tmp_path_factory.mktemp("layouts")
    tables = {split: table for split, (table, _) in picked.items()}
    _write_parquet(tmp / "pq" / "plain_text", tables)  # the hub's config subfolder
    _write_folder(tmp / "folder", tables)
    _write_cifar10_batches(tmp / "cifar", tables)
    return {"parquet": tmp / "pq", "folder": tmp / "folder", "cifar10": tmp / "cifar"}


# -- the bundled sample --------------------------------------------------------------------------


def test_sample_loads_balanced_real_cifar10(sample):
    assert (len(sample.train), len(sample.test)) == (5000, 1000)
    assert sample.classes == CIFAR10_NAMES and sample.num_classes == 10
    assert sample.train.class_counts().tolist() == [500] * 10
    assert sample.test.class_counts().tolist() == [100] * 10
    for split in (sample.train, sample.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.images.is_contiguous() and split.labels.dtype == torch.int64
    # Real photographs, not blank or constant: mean near CIFAR-10's 0.47 (x255), wide spread.
    assert 100 < sample.train.images.float().mean() < 140 and sample.train.images.float().std() > 50
    assert sample.fingerprint.startswith(SAMPLE_FINGERPRINT)
    assert sample.name == "cifar10-sample"


def test_sample_readme_records_the_files_hashes():
    readme = (SAMPLE_DIR / "README.md").read_text()
    for split in ("train", "test"):
        digest = hashlib.sha256((SAMPLE_DIR / f"{split}.parquet").read_bytes()).hexdigest()
        assert re.search(rf"{split} `{digest}`", readme), f"README lacks the sha256 of {split}.parquet"
        assert (SAMPLE_DIR / f"{split}.parquet").stat().st_size < 3_000_000


@needs_shared
def test_sample_rows_are_unchanged_rows_of_the_shared_copy():
    for split, name in (("train", "train-00000-of-00001.parquet"), ("test", "test-00000-of-00001.parquet")):
        shared = {r["img"]["path"]: r for r in pq.read_table(SHARED_CIFAR10 / name).to_pylist()}
        table = pq.read_table(SAMPLE_DIR / f"{split}.parquet")
        assert table.schema.equals(pq.read_schema(SHARED_CIFAR10 / name), check_metadata=True)
        for row in table.to_pylist():
            assert row == shared[row["img"]["path"]]


# -- every loader, the same images ---------------------------------------------------------------


def test_every_loader_gives_identical_tensors(layouts, picked, sample):
    loaded = {kind: load_dataset(parse_data_arg(str(path))) for kind, path in layouts.items()}
    names = {kind: dataset.name for kind, dataset in loaded.items()}
    assert names == {"parquet": "pq", "folder": "folder", "cifar10": "cifar10"}
    reference = loaded["parquet"]
    for split in ("train", "test"):
        ref = getattr(reference, split)
        _, rows = picked[split]
        # The Parquet loader agrees with the full sample, row for row ...
        assert torch.equal(ref.images, getattr(sample, split).images[rows])
        assert torch.equal(ref.labels, getattr(sample, split).labels[rows])
        assert len(ref) == 10 * PER_CLASS[split]
        # ... and every other loader with it. (CIFAR-10's class names are already in alphabetical
        # order, so the folder loader's sorted classes give the same label numbers.)
        for kind, dataset in loaded.items():
            got = getattr(dataset, split)
            assert torch.equal(got.images, ref.images), f"{kind} {split} images differ"
            assert torch.equal(got.labels, ref.labels), f"{kind} {split} labels differ"
            assert got.images.is_contiguous()
    for dataset in loaded.values():
        assert dataset.classes == CIFAR10_NAMES
    assert "not the official release" in loaded["cifar10"].source


def test_parquet_accepts_a_split_file_and_validation_split(layouts, tmp_path, picked):
    train_file = layouts["parquet"] / "plain_text" / "train-00000-of-00001.parquet"
    assert parse_data_arg(str(train_file)) == DatasetSpec("parquet", str(train_file))
    by_file = load_dataset(DatasetSpec("parquet", str(train_file)))
    assert len(by_file.train) == 50 and len(by_file.test) == 20
    # ImageNet on the hub names its held-out split "validation"; an image folder may say "val".
    pq.write_table(picked["train"][0], tmp_path / "train.parquet")
    pq.write_table(picked["test"][0], tmp_path / "validation.parquet")
    assert torch.equal(load_dataset(DatasetSpec("parquet", str(tmp_path))).test.images, by_file.test.images)
    _write_folder(tmp_path / "f", {s: t for s, (t, _) in picked.items()}, test_name="val")
    by_val = load_dataset(DatasetSpec("folder", str(tmp_path / "f")))
    assert torch.equal(by_val.test.images, by_file.test.images)


def _cifar100_table(table: pa.Table) -> pa.Table:
    """The hub's CIFAR-100 layout (img, fine_label, coarse_label) around CIFAR-10 images: fine
    label = 2 x label + 1 of 20 fine classes, coarse = label // 2 of 5."""
    label = table.column("label").to_numpy()
    features = {"img": {"_type": "Image"},
                "fine_label": {"names": [f"fine{i}" for i in range(20)], "_type": "ClassLabel"},
                "coarse_label": {"names": [f"coarse{i}" for i in range(5)], "_type": "ClassLabel"}}
    return pa.table({"img": table.column("img"), "fine_label": pa.array(2 * label + 1),
                     "coarse_label": pa.array(label // 2)},
                    metadata={"huggingface": json.dumps({"info": {"features": features}})})


def test_cifar100_parquet_loads_fine_labels(picked, tmp_path):
    _write_parquet(tmp_path / "cifar100", {s: _cifar100_table(t) for s, (t, _) in picked.items()})
    fine = load_dataset(parse_data_arg(str(tmp_path)))
    label = torch.tensor(picked["train"][0].column("label").to_pylist())
    assert fine.classes == tuple(f"fine{i}" for i in range(20))
    assert torch.equal(fine.train.labels, 2 * label + 1)
    coarse = load_dataset(DatasetSpec("parquet", str(tmp_path), label_column="coarse_label"))
    assert coarse.num_classes == 5 and torch.equal(coarse.train.labels, label // 2)
    assert torch.equal(coarse.train.images, fine.train.images)
    assert coarse.fingerprint != fine.fingerprint  # the label column is part of the identity
    with pytest.raises(ValueError, match="no column 'nope'.*fine_label"):
        load_dataset(DatasetSpec("parquet", str(tmp_path), label_column="nope"))


def test_cifar100_python_batches_load_fine_labels(picked, tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for split, name in (("train", "train"), ("test", "test")):
        images, labels = _decode(picked[split][0])
        _dump(base / name, {"data": images.reshape(len(images), -1).numpy(),
                            "fine_labels": [2 * y + 1 for y in labels],
                            "coarse_labels": [y // 2 for y in labels]})
    _dump(base / "meta", {"fine_label_names": [f"fine{i}" for i in range(20)],
                          "coarse_label_names": [f"coarse{i}" for i in range(5)]})
    assert parse_data_arg(str(tmp_path)) == DatasetSpec("cifar100", str(tmp_path))
    dataset = load_dataset(parse_data_arg(str(base)))  # the batches folder itself works too
    assert dataset.num_classes == 20 and dataset.train.labels.max() == 19


def test_folder_resizes_mixed_sizes_only_when_asked(tmp_path):
    for split in ("train", "test"):
        for cls, (h, w, channels) in {"a": (40, 60, 3), "b": (24, 24, 1)}.items():
            image = torch.randint(0, 256, (channels, h, w), dtype=torch.uint8,
                                  generator=torch.Generator().manual_seed(h))
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / split / cls / "x.png").write_bytes(encode_png(image).numpy().tobytes())
    with pytest.raises(ValueError, match="is 24x24 but .* is 40x60: stream the data instead .*image_size="):
        load_dataset(DatasetSpec("folder", str(tmp_path)))
    dataset = load_dataset(DatasetSpec("folder", str(tmp_path), image_size=16))
    assert dataset.train.images.shape == (2, 3, 16, 16) and dataset.classes == ("a", "b")
    grey = dataset.train.images[1]  # a 1-channel PNG comes out as RGB with equal channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


# -- the cache -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_is_written_then_used_instead_of_decoding(tmp_path, monkeypatch, sample):
    first = load_dataset(DatasetSpec("sample"), cache_dir=tmp_path)
    path = tmp_path / "datasets" / f"{first.fingerprint}.safetensors"
    assert path.is_file() and first.fingerprint == sample.fingerprint

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this dataset")

    monkeypatch.setattr(readers, "decode_images", no_decoding)
    cached = load_dataset(DatasetSpec("sample"), cache_dir=tmp_path)
    assert torch.equal(cached.train.images, sample.train.images)
    assert torch.equal(cached.test.labels, sample.test.labels)
    assert (cached.classes, cached.source) == (sample.classes, sample.source)
    cached.train.images[0] += 1  # the loaded tensors are private: the cache file is unchanged
    again = load_dataset(DatasetSpec("sample"), cache_dir=tmp_path)
    assert torch.equal(again.train.images, sample.train.images)
    # Other options are another dataset, another file.
    monkeypatch.undo()
    resized = load_dataset(DatasetSpec("sample", image_size=16), cache_dir=tmp_path)
    assert resized.fingerprint != first.fingerprint and len(list((tmp_path / "datasets").iterdir())) == 2


@pytest.mark.parametrize("damage", [b"not a safetensors file", b""])
def test_a_damaged_cache_file_is_rewritten(tmp_path, sample, damage):
    path = data_cache.cache_path(tmp_path, sample.fingerprint)
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    dataset = load_dataset(DatasetSpec("sample"), cache_dir=tmp_path)
    assert torch.equal(dataset.train.images, sample.train.images)
    assert data_cache.read_cache(path, sample.fingerprint) is not None
    assert not list(path.parent.glob("*.tmp"))


def test_an_unwritable_cache_only_warns(tmp_path, sample):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the dataset cache"):
        dataset = load_dataset(DatasetSpec("sample"), cache_dir=blocker)
    assert torch.equal(dataset.test.images, sample.test.images)


def test_no_cache_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_dataset(DatasetSpec("sample"))
    assert not list(tmp_path.iterdir())


# -- locating CIFAR and the errors ---------------------------------------------------------------


def test_not_found_lists_what_was_tried_in_order(tmp_path):
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(DatasetSpec("cifar10"), data_dirs=[empty, missing], cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message
    tried = [f"(1) data dir {empty}: no cifar-10-batches-py/", f"(2) data dir {missing}: does not exist",
             f"(3) cache dir {tmp_path / 'cache' / 'cifar10'}", "(4) download: not enabled"]
    positions = [message.index(t) for t in tried]
    assert positions == sorted(positions)
    assert "--data cifar10:PATH" in message and "BOCB_DATA_DIR" in message
    # An explicit root is the only place looked.
    only_root = rf"\(1\) root {re.escape(str(missing))}: does not exist; \(2\) download"
    with pytest.raises(DataNotFoundError, match=only_root):
        load_dataset(DatasetSpec("cifar100", root=str(missing)), data_dirs=[empty])


def test_cifar_is_found_in_a_data_dir_then_in_the_cache(layouts, tmp_path):
    spec = DatasetSpec("cifar10")
    found = load_dataset(spec, data_dirs=[tmp_path, layouts["cifar10"]])
    assert str(layouts["cifar10"].resolve()) in found.source and len(found.train) == 50
    nested = tmp_path / "cache" / "cifar10"
    nested.mkdir(parents=True)
    (nested / "cifar-10-batches-py").symlink_to(layouts["cifar10"] / "cifar-10-batches-py")
    assert torch.equal(load_dataset(spec, cache_dir=tmp_path / "cache").train.images, found.train.images)


def test_download_goes_into_the_cache_dir(layouts, tmp_path, monkeypatch):
    calls = []

    def fake_download(kind, root):  # stands in for torchvision's download, which needs internet
        calls.append((kind, root))
        root.mkdir(parents=True)
        (root / "cifar-10-batches-py").symlink_to(layouts["cifar10"] / "cifar-10-batches-py")

    monkeypatch.setattr(sources, "_download_cifar", fake_download)
    dataset = load_dataset(DatasetSpec("cifar10"), cache_dir=tmp_path, download=True)
    assert calls == [("cifar10", tmp_path / "cifar10")] and len(dataset.test) == 20

    def failing_download(kind, root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sources, "_download_cifar", failing_download)
    failed = r"download from https://\S+ into .*: failed \(network is unreachable\)"
    with pytest.raises(DataNotFoundError, match=failed):
        load_dataset(DatasetSpec("cifar100"), cache_dir=tmp_path, download=True)


def test_parse_data_arg_detects_each_kind(layouts, tmp_path):
    for kind, path in layouts.items():
        assert parse_data_arg(str(path)) == DatasetSpec(kind, str(path))
    assert parse_data_arg(str(layouts["cifar10"] / "cifar-10-batches-py")).root == str(layouts["cifar10"])
    for name in ("sample", "cifar10", "CIFAR100"):
        assert parse_data_arg(name) == DatasetSpec(name.lower())
    assert parse_data_arg(f"folder:{tmp_path}/x") == DatasetSpec("folder", f"{tmp_path}/x")
    assert parse_data_arg("cifar10:/data") == DatasetSpec("cifar10", "/data")
    with pytest.raises(UnknownDataKindError, match="unknown data kind 'imagenet'.*valid: sample .*folder"):
        parse_data_arg("imagenet:/data")
    with pytest.raises(DataNotFoundError, match="neither a data kind nor an existing path"):
        parse_data_arg(str(tmp_path / "nothing"))
    with pytest.raises(DataNotFoundError, match="cannot tell what data"):
        parse_data_arg(str(tmp_path))
    with pytest.raises(ValueError, match="needs a location: write parquet:PATH"):
        parse_data_arg("parquet")


def test_spec_is_checked_and_serialisable():
    spec = DatasetSpec("folder", root="/data/imagenet", image_size=224)
    assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(UnknownDataKindError, match="did you mean 'cifar10'.*valid: " + ".*".join(DATA_KINDS)):
        DatasetSpec("cifar-10")
    with pytest.raises(ValueError, match="unknown DatasetSpec keys \\['size'\\]: valid: kind, root"):
        DatasetSpec.from_dict({"kind": "sample", "size": 3})
    with pytest.raises(ValueError, match="label_column applies to data kinds 'parquet' and 'arrow' only"):
        DatasetSpec("cifar100", label_column="coarse_label")
    with pytest.raises(ValueError, match="image_size applies to .*not 'cifar10'"):
        DatasetSpec("cifar10", image_size=224)
    with pytest.raises(ValueError, match="takes no root"):
        DatasetSpec("sample", root="/x")
    with pytest.raises(DataNotFoundError, match="needs a location"):
        load_dataset(DatasetSpec("parquet"))


# -- ImageSet ------------------------------------------------------------------------------------


def test_subset_is_class_balanced_and_deterministic(sample):
    a = sample.train.subset(7, seed=1)
    assert len(a) == 70 and a.class_counts().tolist() == [7] * 10
    b = sample.train.subset(7, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, sample.train.subset(7, seed=2).images)
    assert torch.equal(a.labels, a.labels.sort().values)  # original (class-sorted) order kept
    assert sample.train.subset(None, seed=0) is sample.train
    assert a.subset(3, seed=0).classes_present() == tuple(range(10))
    with pytest.raises(ValueError, match="fewer than per_class=8; per_class can be at most 7"):
        a.subset(8, seed=0)


def test_imageset_rejects_wrong_tensors():
    with pytest.raises(ValueError, match="uint8 tensor \\(N, 3, H, W\\), got torch.float32"):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels must be an int64 CPU tensor \\(2,\\)"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="contiguous"):
        channels_last = torch.zeros(2, 4, 4, 3, dtype=torch.uint8).permute(0, 3, 1, 2)
        ImageSet(channels_last, torch.zeros(2, dtype=torch.int64))


def test_a_parquet_label_column_named_labels_is_found_and_any_is_chosen_from_cli_or_study(picked, tmp_path):
    from cli_inproc import bocb

    from bocb.study import load_study

    _write_parquet(tmp_path / "plural", {s: t.rename_columns(["img", "labels"]) for s, (t, _) in picked.items()})
    plural = load_dataset(parse_data_arg(str(tmp_path / "plural")))
    assert torch.equal(plural.train.labels, torch.tensor(picked["train"][0].column("label").to_pylist()))
    _write_parquet(tmp_path / "c100", {s: _cifar100_table(t) for s, (t, _) in picked.items()})
    study = tmp_path / "s.toml"
    study.write_text(f'[study]\nname = "c"\ndata = "{tmp_path / "c100"}"\nlabel_column = "coarse_label"\n'
                     '[[backbones]]\nname = "R-18"\n[[optimizers]]\nname = "AdamW"\n')
    assert load_study(study).data.label_column == "coarse_label"
    proc = bocb("train", "--backbone", "R-18", "--data", tmp_path / "c100", "--label-column", "coarse_label",
                "--tier", "smoke", "--epochs", "1", "--batch-size", "10", "--train-per-class", "2",
                "--test-per-class", "2", "--device", "cpu", "--json", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["spec"]["data"]["label_column"] == "coarse_label"
    proc = bocb("train", "--backbone", "R-18", "--data", tmp_path / "c100", "--label-column", "nope",
                "--tier", "smoke", cache=tmp_path / "cache")
    assert proc.returncode == 2 and "no column 'nope'" in proc.stderr, proc.stderr


def test_a_save_to_disk_folder_written_by_datasets_reads_like_its_parquet_source():
    """tests/fixtures/hf-save-to-disk was written by Hugging Face ``datasets`` 5.0.1 from the
    bundled sample's JPEG bytes (see make_save_to_disk.py there); its label column is ``labels``,
    declared a ClassLabel, so the reader must find it from the feature."""
    from bocb.data import load_dataset, parse_data_arg

    folder = Path(__file__).parent / "fixtures" / "hf-save-to-disk"
    spec = parse_data_arg(str(folder))
    assert spec.kind == "arrow"
    got = load_dataset(spec)
    sample = load_dataset(parse_data_arg("sample"))
    assert got.classes == ("airplane", "automobile", "bird")
    for split, per_class in (("train", 4), ("test", 2)):
        source = getattr(sample, split)
        rows = torch.cat([torch.nonzero(source.labels == c).flatten()[:per_class] for c in range(3)])
        mine = getattr(got, split)
        assert torch.equal(mine.labels, source.labels[rows])
        assert torch.equal(mine.images, source.images[rows])  # the same JPEGs, the same pixels


def test_the_image_column_can_be_named_and_a_wrong_name_is_one_line():
    from bocb.data import DatasetSpec, load_dataset

    folder = str(Path(__file__).parent / "fixtures" / "hf-save-to-disk")
    named = load_dataset(DatasetSpec("arrow", folder, image_column="image"))
    assert len(named.train) == 12
    with pytest.raises(ValueError, match=r"has no column 'picture' \(--image-column.*columns: image, labels"):
        load_dataset(DatasetSpec("arrow", folder, image_column="picture"))
    # Unset, the key is not serialised: every trial id from before it existed stays the same.
    assert "image_column" not in DatasetSpec("arrow", folder).to_dict()
    assert DatasetSpec.from_dict(DatasetSpec("arrow", folder, image_column="image").to_dict()).image_column == "image"
    with pytest.raises(ValueError, match="image_column applies to data kinds 'parquet' and 'arrow' only"):
        DatasetSpec("sample", image_column="img")
