"""Streaming image data (bocb.data.stream, stream_sources, transforms) on real JPEGs.

The data: CIFAR-10 images from the bundled sample upscaled to 96-256 px sides and written in
ImageNet's layout (tests/imagenet_like.py), and the same JPEG files packed as tar and Parquet
shards. What is checked: the streamed evaluation images equal the in-memory readers' bit for bit
on every source; labels follow the sorted class-folder names; a training epoch is a function of
(seed, epoch, rank, world size) only (folders: also of nothing else, workers included); ranks split
an epoch; repeated augmentation deals draws as timm's RepeatAugSampler, each copy its own crop;
peak memory does not grow with the number of images; bad data is one clear error line.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bocb.data import DataNotFoundError, DatasetSpec, load_dataset, parse_data_arg
from bocb.data.stream import EpochSampler, epoch_loader
from bocb.data.stream_sources import open_stream
from bocb.data.transforms import EvalTransform, TrainTransform, sample_seed
from bocb.seeding import epoch_seed
from bocb.spec import TrialSpec

sys.path.insert(0, str(Path(__file__).parent))
from imagenet_like import WNIDS, wnid_order, write_folder, write_parquet_shards, write_tar_shards  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

SIZE = 64  # the crops' side: small, so the tests stay fast; the images are 96-256 px


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{kind: root}: one ImageNet-layout folder (6 train, 3 val images per class) and the same
    JPEGs as tar shards (7 per shard: shards end mid-class) and Parquet (row groups of 5)."""
    base = tmp_path_factory.mktemp("stream")
    folder = write_folder(base / "folder", {"train": 6, "val": 3})
    return {"folder": folder, "wds": write_tar_shards(folder, base / "wds", 7),
            "parquet": write_parquet_shards(folder, base / "parquet", 5)}


@pytest.fixture(scope="module")
def in_memory(sources):
    return load_dataset(DatasetSpec("folder", str(sources["folder"]), image_size=SIZE))


def _stream(sources, kind):
    return open_stream(DatasetSpec(kind, str(sources[kind]), stream=True))


def _epoch(split, transform, **kw):
    kw = {"batch_size": 8, "seed": 3, "epoch": 0, **kw}
    batches = list(epoch_loader(split, transform, **kw))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _digests(images):
    return sorted(hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images)


# -- matches the in-memory path ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "wds", "parquet"])
def test_streamed_eval_images_equal_the_in_memory_ones_exactly(sources, in_memory, kind):
    # Same decoder (torchvision's libjpeg-turbo) and the same resize + centre-crop function, so
    # the comparison is exact, not within a tolerance.
    data = _stream(sources, kind)
    for split, loaded in (("train", in_memory.train), ("test", in_memory.test)):
        images, labels = _epoch(getattr(data, split), EvalTransform(SIZE), shuffle=False, num_workers=0)
        assert images.dtype == torch.uint8 and images.shape == loaded.images.shape
        assert torch.equal(images, loaded.images)
        assert torch.equal(labels, loaded.labels)
    assert data.classes == in_memory.classes == tuple(sorted(WNIDS))


def test_a_streamed_folder_subset_holds_the_in_memory_subset_images(sources, in_memory):
    split = _stream(sources, "folder").train.subset(4, seed=7)
    images, labels = _epoch(split, EvalTransform(SIZE), shuffle=False)
    expected = in_memory.train.subset(4, seed=7)
    assert torch.equal(images, expected.images) and torch.equal(labels, expected.labels)


def test_class_index_is_the_position_of_the_sorted_folder_name(sources):
    data = _stream(sources, "folder")
    for i in range(len(data.train)):
        wnid = data.train.paths[i].split("/")[1]
        assert data.train.labels[i] == sorted(WNIDS).index(wnid)
    assert wnid_order() != list(range(10))  # the wnids' order is not CIFAR's label order


def test_eval_crop_ratio_resizes_to_size_over_ratio_then_centre_crops(sources):
    assert EvalTransform(224, 0.875).resize_to == 256
    assert EvalTransform(224, 0.95).resize_to == 235
    image = torch.randint(0, 256, (3, 150, 210), dtype=torch.uint8)
    out = EvalTransform(56, 0.875)(image)
    import torchvision.transforms.v2.functional as TF
    assert torch.equal(out, TF.center_crop(TF.resize(image, [64], antialias=True), [56, 56]))
    with pytest.raises(ValueError, match="crop_ratio"):
        EvalTransform(224, 1.5)


# -- determinism ----------------------------------------------------------------------------------


def test_folder_training_epoch_depends_on_seed_and_epoch_only_not_on_workers(sources):
    split = _stream(sources, "folder").train
    train = TrainTransform(SIZE)
    a, la = _epoch(split, train, drop_last=True, num_workers=0)
    b, lb = _epoch(split, train, drop_last=True, num_workers=2)
    assert torch.equal(a, b) and torch.equal(la, lb)  # same order, same crops, any worker count
    c, _ = _epoch(split, train, drop_last=True, epoch=1)
    assert not torch.equal(a, c)  # another epoch: another order and other crops
    assert a.shape == (len(split) // 8 * 8, 3, SIZE, SIZE)
    assert len(set(la.tolist())) > 1


def test_train_transform_draws_from_the_image_seed_alone_and_leaves_global_rng_alone():
    image = torch.randint(0, 256, (3, 120, 200), dtype=torch.uint8)
    train = TrainTransform(48)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train(image, sample_seed(0, 0, 5))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    assert torch.equal(train(image, sample_seed(0, 0, 5)), first)
    assert not torch.equal(train(image, sample_seed(0, 0, 6)), first)
    with pytest.raises(ValueError, match="seed"):
        train(image)


@pytest.mark.parametrize("kind", ["wds", "parquet"])
def test_shard_epochs_repeat_and_give_each_image_the_folder_path_crop(sources, kind):
    """Shards: the same run twice is the same; another worker count changes the order only; the
    crops are the folder path's (an image's seed is its position in the split on both)."""
    split, train = _stream(sources, kind).train, TrainTransform(SIZE)
    a, la = _epoch(split, train, num_workers=0, shuffle_buffer=10)
    again, _ = _epoch(split, train, num_workers=0, shuffle_buffer=10)
    assert torch.equal(a, again)
    b, lb = _epoch(split, train, num_workers=2, shuffle_buffer=10)
    assert _digests(a) == _digests(b) and sorted(la.tolist()) == sorted(lb.tolist())
    folder, _ = _epoch(_stream(sources, "folder").train, train)
    assert _digests(a) == _digests(folder)
    assert not torch.equal(a[:8], _epoch(split, train, shuffle=False)[0][:8])  # it was shuffled


# -- ranks ----------------------------------------------------------------------------------------


def test_epoch_sampler_splits_an_epoch_between_ranks():
    n, world = 23, 3
    train = [list(EpochSampler(n, seed=1, epoch=2, rank=r, world_size=world, drop_last=True)) for r in range(world)]
    indices = [[k[0] for k in keys] for keys in train]
    assert {len(i) for i in indices} == {n // world}  # equal counts: no rank waits on another
    flat = sum(indices, [])
    assert len(set(flat)) == len(flat) == n - n % world
    assert all(k[1:] == (1, 2) for keys in train for k in keys)
    assert indices == [[k[0] for k in EpochSampler(n, seed=1, epoch=2, rank=r, world_size=world,
                                                   drop_last=True)] for r in range(world)]
    evaluation = [k[0] for r in range(world) for k in EpochSampler(n, seed=0, epoch=0, rank=r, world_size=world,
                                                                     shuffle=False)]
    assert sorted(evaluation) == list(range(n))  # evaluation: every image exactly once
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(n, seed=0, epoch=0, rank=3, world_size=3)


@pytest.mark.parametrize("kind", ["folder", "wds"])
def test_two_ranks_evaluate_every_image_once_between_them(sources, in_memory, kind):
    split = getattr(_stream(sources, kind), "test")
    parts = [_epoch(split, EvalTransform(SIZE), shuffle=False, rank=r, world_size=2)[0] for r in range(2)]
    assert all(len(p) for p in parts)
    assert _digests(torch.cat(parts)) == _digests(in_memory.test.images)


# -- repeated augmentation ----------------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(10, 1), (100, 2), (300, 1), (300, 2), (1000, 3), (5, 8), (0, 2)])
def test_repeated_epochs_deal_as_timms_repeat_aug_sampler(n, world):
    """The outside reference: timm's RepeatAugSampler (DeiT's RASampler) given bocb's permutation
    (timm seeds its generator with the epoch, so its epoch is set to bocb's epoch seed) hands
    every rank the same indices in the same order, shuffled or not; 300 is not a multiple of 256,
    10 and 100 are under it (timm then keeps ceil(n / W) a rank, not 0); 5 images on 8 ranks wrap."""
    from timm.data.distributed_sampler import RepeatAugSampler

    seed, epoch = 4, 7
    for shuffle in (True, False):
        for repeats in (3, 2):
            for rank in range(world):
                timm = RepeatAugSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, num_repeats=repeats)
                timm.set_epoch(epoch_seed(seed, epoch))
                ours = EpochSampler(n, seed=seed, epoch=epoch, rank=rank, world_size=world, shuffle=shuffle,
                                    drop_last=True, repeats=repeats)
                keys = list(ours)
                assert [k[0] for k in keys] == list(timm)
                assert len(ours) == len(timm) == len(keys)
    # The counts, by hand: about one dataset per epoch, not three.
    expected = {10: 10, 100: 50, 300: 256 // world, 1000: 768 // 3, 5: 1, 0: 0}[n]
    assert len(EpochSampler(n, seed=0, epoch=0, world_size=world, repeats=3)) == expected


def test_every_draw_of_a_repeated_epoch_is_another_copy_on_another_rank():
    n, world = 300, 2
    ranks = [list(EpochSampler(n, seed=1, epoch=0, rank=r, world_size=world, repeats=3)) for r in range(world)]
    draws = [(k[0], k[3]) for keys in ranks for k in keys]
    assert len(set(draws)) == len(draws) == 256  # no (image, copy) twice: no crop twice
    assert all(k[1:3] == (1, 0) and 0 <= k[3] < 3 for keys in ranks for k in keys)
    on = {}
    for r, keys in enumerate(ranks):
        for k in keys:
            on.setdefault(k[0], set()).add(r)
    assert max(len(r) for r in on.values()) == 2  # an image's copies are split between the ranks
    # repeats=1 keeps its keys (and so its crops): (index, seed, epoch), DistributedSampler's rule.
    plain = EpochSampler(n, seed=1, epoch=0, drop_last=True)
    generator = torch.Generator().manual_seed(epoch_seed(1, 0))
    assert list(plain) == [(i, 1, 0) for i in torch.randperm(n, generator=generator).tolist()]
    with pytest.raises(ValueError, match="repeats"):
        EpochSampler(n, seed=0, epoch=0, repeats=0)


def test_copies_of_an_image_get_other_crops_and_workers_change_nothing(sources):
    from bocb.data.stream import FolderDataset

    split, train = _stream(sources, "folder").train, TrainTransform(SIZE)
    a, la = _epoch(split, train, drop_last=True, num_workers=0, repeats=3)
    b, lb = _epoch(split, train, drop_last=True, num_workers=2, repeats=3)
    assert torch.equal(a, b) and torch.equal(la, lb)  # the whole epoch, any worker count
    keys = list(EpochSampler(len(split), seed=3, epoch=0, drop_last=True, repeats=3))
    assert len(keys) == 60 and len(a) == 56  # 60 images (under 256): 60 draws, whole batches of 8
    keys = keys[:len(a)]
    copies: dict[int, list[torch.Tensor]] = {}
    for key, image in zip(keys, a):
        copies.setdefault(key[0], []).append(image)
    assert len(copies) == 19 and {len(c) for c in copies.values()} == {2, 3}  # 20 images x 3, cut at 56
    for crops in copies.values():
        assert all(not torch.equal(crops[i], crops[j]) for i in range(len(crops)) for j in range(i))
    # Copy 0 is the crop the image gets without repeats; copy 1 another.
    dataset = FolderDataset(split, train)
    index = keys[0][0]
    assert torch.equal(dataset[(index, 3, 0, 0)][0], dataset[(index, 3, 0)][0])
    assert not torch.equal(dataset[(index, 3, 0, 1)][0], dataset[(index, 3, 0)][0])
    assert sample_seed(3, 0, index, 0) == sample_seed(3, 0, index) != sample_seed(3, 0, index, 1)


@pytest.mark.parametrize("kind", ["wds", "parquet"])
def test_shards_refuse_repeated_augmentation_in_one_line(sources, kind):
    with pytest.raises(ValueError, match="needs an image folder") as err:
        epoch_loader(_stream(sources, kind).train, TrainTransform(SIZE), batch_size=8, seed=0, epoch=0, repeats=3)
    assert "\n" not in str(err.value) and "stream:folder:" in str(err.value)


def test_rsb_a2_trains_on_a_streamed_folder_with_three_copies_an_epoch(tmp_path):
    """RSB A2 (the paper's ResNet-50 recipe in Table 2) was refused for its repeated augmentation;
    now it trains: 40 images draw 40 samples an epoch (under 256: ceil(n / W)), 5 batches of 8."""
    from imagenet_like import train_tiny_r18

    folder = write_folder(tmp_path / "in", {"train": 4, "val": 1}, sides=(96, 160))
    record = train_tiny_r18(folder, "in1k-rsb-a2", tmp_path / "cache")
    assert record["status"] == "done" and record["spec"]["recipe"]["name"] == "in1k-rsb-a2"
    assert record["dataset"]["streamed"]["repeats"] == 3 and record["dataset"]["streamed"]["train"]["size"] == 224
    assert record["epochs"][0]["images"] == 40 and record["dataset"]["train_images"] == 40


# -- naming the data and its errors ----------------------------------------------------------------


def test_data_text_names_streamed_sources(sources):
    folder = parse_data_arg(f"stream:{sources['folder']}")
    assert (folder.kind, folder.stream) == ("folder", True)
    assert parse_data_arg(str(sources["folder"])).stream is False  # the in-memory path by default
    assert parse_data_arg(str(sources["wds"])) == DatasetSpec("wds", str(sources["wds"]), stream=True)
    assert parse_data_arg(f"stream:parquet:{sources['parquet']}").stream
    # `stream` serialises only when set, so the ids of existing trials do not change.
    assert "stream" not in DatasetSpec("folder", "/x").to_dict()
    spec = DatasetSpec("wds", "/x")
    assert spec.stream and DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="cannot be streamed"):
        parse_data_arg("stream:sample")
    with pytest.raises(ValueError, match="bocb.data.stream"):
        load_dataset(folder)


def _one_line_error(spec_text):
    with pytest.raises(DataNotFoundError) as err:
        open_stream(parse_data_arg(spec_text))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_paths_and_empty_folders_are_one_line_naming_what_was_looked_for(tmp_path, sources):
    assert "does not exist" in _one_line_error(f"stream:folder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    assert "expected train/<class>/ and test/<class>/" in _one_line_error(f"stream:folder:{tmp_path / 'empty'}")
    for split in ("train/n01", "val/n01"):
        (tmp_path / "noimages" / split).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"n01 holds no \.jpg, \.jpeg, \.png files"):
        open_stream(parse_data_arg(f"stream:folder:{tmp_path / 'noimages'}"))
    (tmp_path / "trainonly").mkdir()
    shutil.copy(next(sources["wds"].glob("train-*.tar")), tmp_path / "trainonly")
    message = _one_line_error(f"wds:{tmp_path / 'trainonly'}")
    assert "*val*.tar" in message and "found 1 train and 0 held-out" in message


def test_naming_streamed_data_imports_no_torch(sources):
    code = (f"import sys; from bocb.data import parse_data_arg; import bocb.data.stream_sources; "
            f"parse_data_arg({str(sources['wds'])!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- memory ---------------------------------------------------------------------------------------

_PEAK = textwrap.dedent("""
    import json, resource, sys, warnings
    warnings.filterwarnings("ignore")
    from bocb.data import DatasetSpec, load_dataset
    from bocb.data.stream import epoch_loader
    from bocb.data.stream_sources import open_stream
    from bocb.data.transforms import TrainTransform
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "stream":
        data = open_stream(DatasetSpec("folder", root, stream=True))
        n = 0
        for x, y in epoch_loader(data.train, TrainTransform(128), batch_size=32, seed=0, epoch=0,
                                 drop_last=True, num_workers=2):
            n += len(x)
    else:
        n = len(load_dataset(DatasetSpec("folder", root, image_size=128)).train)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"images": n, "main_kib": hwm, "worker_kib": workers}))
""")


def _peak(mode, root):
    out = subprocess.run([sys.executable, "-c", _PEAK, mode, str(root)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_of_a_streamed_epoch_does_not_grow_with_the_dataset(tmp_path):
    """N and 10N training images (the 10N folder holds each of the N JPEGs ten times under other
    names: ten times the files to index, read and decode). The streamed epoch's peak resident
    memory, of the main process and of its largest worker, stays within 8 MiB; the in-memory
    loader on the same folders grows by the decoded pixels (~66 MiB at 128 px), so the measure
    does see growth where there is some."""
    small = write_folder(tmp_path / "small", {"train": 15, "val": 1}, sides=(128, 256))
    big = tmp_path / "big"
    shutil.copytree(small / "val", big / "val")
    for src in (small / "train").rglob("*.JPEG"):
        for copy in range(10):
            dst = big / "train" / src.parent.name / f"{src.stem}_{copy}.JPEG"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
    s, b = _peak("stream", small), _peak("stream", big)
    assert (s["images"], b["images"]) == (128, 1472)  # 150 and 1500 images, whole batches of 32
    mib = 1024
    assert b["main_kib"] - s["main_kib"] < 8 * mib, (s, b)
    assert b["worker_kib"] - s["worker_kib"] < 8 * mib, (s, b)
    ms, mb = _peak("memory", small), _peak("memory", big)
    assert mb["main_kib"] - ms["main_kib"] > 50 * mib, (ms, mb)
    print(f"peak KiB (main, largest worker): stream N {s['main_kib']}, {s['worker_kib']}; "
          f"10N {b['main_kib']}, {b['worker_kib']}; in-memory N {ms['main_kib']}, 10N {mb['main_kib']}")


# -- the classification trainer ---------------------------------------------------------------------


def _streamed_trial(sources, epochs, kind="folder", **kw):
    from bocb.spec import resolve_trial

    data_spec = parse_data_arg(f"stream:{sources[kind]}")
    data = open_stream(data_spec)
    spec = resolve_trial("R-18", "AdamW", data=data_spec, num_classes=data.num_classes, tier="smoke",
                         epochs=epochs, batch_size=20, **kw)
    return spec, data


@pytest.mark.parametrize("kind", ["folder", "wds"])
def test_a_trial_trains_from_streamed_jpegs(sources, kind):
    from bocb.trial import RunOptions, run_trial

    subsets = {"train_per_class": 6, "test_per_class": 3} if kind == "folder" else {}
    spec, data = _streamed_trial(sources, 1, kind, **subsets)
    if kind == "wds":  # shards are read whole: the smoke tier's per-class subsets are refused
        spec = TrialSpec(spec.backbone, spec.optimizer,
                         spec.recipe.with_changes(train_per_class=None, test_per_class=None), spec.data, spec.seed)
    record = run_trial(spec, data, RunOptions(device="cpu", data_workers=0))
    assert record["status"] == "done", record.get("traceback")
    assert record["epochs"][0]["images"] == 60 and record["dataset"]["test_images"] == 30
    assert record["spec"]["data"]["stream"] is True


@pytest.mark.slow
def test_a_streamed_trial_is_the_same_for_any_worker_count_and_resumes_exactly(sources, tmp_path):
    from bocb.trial import RunOptions, run_trial

    spec, data = _streamed_trial(sources, 2, train_per_class=6, test_per_class=3)
    first = run_trial(spec, data, RunOptions(device="cpu", data_workers=0))
    assert first["status"] == "done", first.get("traceback")
    assert [r["images"] for r in first["epochs"]] == [60, 60]
    streamed = first["dataset"]["streamed"]
    assert streamed["train"]["size"] == spec.backbone.input_size and streamed["eval"]["crop_ratio"] == 0.875
    two = run_trial(spec, data, RunOptions(device="cpu", data_workers=2, work_dir=tmp_path / "cut",
                                           stop_after_epochs=1))
    resumed = run_trial(spec, data, RunOptions(device="cpu", data_workers=1, work_dir=tmp_path / "cut"))
    numbers = [(r["train_loss"], r["test_top1"], r["test_loss"]) for r in first["epochs"]]
    assert [(r["train_loss"], r["test_top1"], r["test_loss"]) for r in two["epochs"]] == numbers[:1]
    assert resumed["resumed_from_epoch"] == 1
    assert [(r["train_loss"], r["test_top1"], r["test_loss"]) for r in resumed["epochs"]] == numbers


def test_shards_are_dealt_to_the_ranks_first():
    """50 shards over 8 ranks x 8 loader workers: every rank gets 6 or 7 shards (dealt rank-major,
    ranks 6 and 7 got 2 and 0), every shard is read exactly once per epoch."""
    from bocb.data.stream import ShardDataset
    from bocb.data.stream_sources import Shard, ShardSplit

    split = ShardSplit("wds", "train", tuple(Shard(f"s{i}.tar", None, 10) for i in range(50)))
    per_rank, seen = [], []
    for rank in range(8):
        dataset = ShardDataset(split, lambda image, seed: image, seed=0, epoch=3, rank=rank, world_size=8)
        mine = [k for worker in range(8) for k in dataset._my_shards(worker, 8)]
        per_rank.append(len(mine))
        seen += mine
    assert sorted(seen) == list(range(50))
    assert max(per_rank) - min(per_rank) <= 1 and sum(per_rank) == 50
