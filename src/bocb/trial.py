"""The classification task: one trial (backbone, optimizer, settings, seed) -> a result record.

:func:`run_trial` prepares what is particular to classification (:func:`_prepare`: the data on
the device, the model, augmented batches, the loss, top-1/top-5 evaluation, the collapse rule)
and hands it to the one training loop, :func:`bocb.engine.train`, which does the rest for every
task (optimizer, schedule, resume, epochs, divergence, checkpoints, final weights). It talks to the
zoo, the optimizer registry and the data layer only through their specs and builders.

Outcomes are data, never exceptions: ``done``; ``diverged`` (a non-finite training loss, a
training loss above 100 x ln(classes) — 230 for CIFAR-10 where training starts near 2.3 — or test
accuracy that had risen to at least twice chance falling back to within 10% of chance; the epoch
is recorded); ``failed`` (any exception, with its message); ``interrupted`` (stopped on purpose by
``stop_after_epochs`` or at an adaptive-tuning rung, ``stop_at_epoch``; the checkpoint lets the
next run resume).

A diverged trial is scored on the weights it ended with, never on an earlier epoch: when training
stops on a bad loss, those weights are evaluated and that row is the trial's last; weights or
logits that are not finite cannot be evaluated and score chance (100 / classes top-1, 500 /
classes top-5). So ``final_top1`` of a diverged trial is what its training produced, and the
analysis counts it as such (it cannot win tuning with a pre-divergence epoch).

Selection without the test set (``recipe.holdout_per_class``): that many training images per
class are held out (the same images for every trial and seed: split seed 0, before any subset)
and evaluated every epoch as ``val_*``; ``best_epoch`` is then chosen on validation accuracy and
``best_top1`` is the test accuracy at that epoch, so no number the analysis selects on comes from
the test set. Without a hold-out, ``best_epoch`` is the best test epoch (the paper's tools).

Precision (``recipe.precision``, part of the trial's identity): ``fp32`` switches TF32 off,
``tf32`` allows it in matmuls and cuDNN convolutions (the paper's A100 runs), ``bf16`` adds bf16
autocast. The record's ``precision_effective`` says what the device actually did (a CPU has no TF32).
The record also holds ``peak_memory_mb`` (:func:`bocb.engine.peak_memory_mb`), which the ranking's
cost component reads next to the measured seconds. Each row's ``score`` is its test top-1.

Streamed data (``--data stream:PATH``, tar shards; :mod:`bocb.data.stream`) is read per batch by
DataLoader workers that decode and RandomResizedCrop + flip, and evaluated with resize + centre
crop (ratio :data:`STREAM_EVAL_CROP_RATIO`); the rest of the recipe's augmentation runs on the device
as below (see :func:`_streamed`). A recipe with repeated augmentation (RSB A1/A2) trains on an
image folder whose epochs draw each image 3 times, each time another crop, and are about one
dataset long (:class:`bocb.data.stream.EpochSampler`); evaluation draws every image once.

Speed choices (the GPU path; CPU runs the same code): the whole dataset sits on the device as
uint8 and is augmented there in batches (no DataLoader, no host-device copies per step); bf16
autocast and channels_last on CUDA; ``torch.compile`` as an option, its warm-up timed apart;
the loss is summed on the device and synchronised rarely. Every epoch reseeds all RNGs from
(seed, epoch), so a trial resumed from a checkpoint replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bocb import engine
from bocb.data import Dataset, StreamData
from bocb.data.augment import AugmentConfig, BatchAugment
from bocb.data.stream import EpochSampler, check_repeats, epoch_loader
from bocb.data.stream_sources import FolderSplit, ShardSplit
from bocb.data.transforms import EvalTransform, TrainTransform
from bocb.distributed import DistContext
from bocb.engine import CHECKPOINT, FINAL_WEIGHTS, Progress, resolve_device
from bocb.fencing import Fence, fence_for
from bocb.spec import TrialSpec
from bocb.networks import starting_model

__all__ = ["CHECKPOINT", "FINAL_WEIGHTS", "HOLDOUT_SEED", "Progress", "RunOptions", "resolve_device",
           "run_trial", "starting_model"]

HOLDOUT_SEED = 0  # the validation split is the same for every trial and seed of a study


@dataclass(frozen=True)
class RunOptions:
    """How a trial runs; none of this is part of its identity (the result records it)."""

    device: str = "auto"  # auto: cuda when available, else cpu
    compile: bool = False
    work_dir: Path | None = None  # checkpoints and final weights go here; None = keep nothing
    checkpoint_every: int = 1  # epochs
    resume: bool = True
    stop_after_epochs: int | None = None  # end this run early (as if killed), for tests and budgets
    # Pause (status ``interrupted``, checkpoint kept) once the trial has trained this many epochs of
    # its schedule, counted from its start, not from this run's: an adaptive-tuning rung. Resuming
    # with a later stop continues the same schedule, so the numbers equal an uninterrupted run's.
    stop_at_epoch: int | None = None
    fence: Fence | None = None  # the runner's claim: checkpoint/weight writes refused once it is stale
    dist: DistContext | None = None  # this process's share of a multi-process trial (bocb.distributed)
    # DataLoader workers for streamed data (None: one per core but one, at most 8). Not part of
    # the identity: a folder's epochs are the same for any count (bocb.data.stream).
    data_workers: int | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ValueError(f"stop_after_epochs must be >= 1, got {self.stop_after_epochs}")
        if self.stop_at_epoch is not None and self.stop_at_epoch < 1:
            raise ValueError(f"stop_at_epoch must be >= 1, got {self.stop_at_epoch}")


_DATASETS: dict[str, Dataset | StreamData] = {}


def execute(spec_dict: dict[str, Any], config: Any, device: str | None = None,
            progress: Progress | None = None, claim: str | None = None) -> dict[str, Any]:
    """The classification task's entry in :mod:`bocb.tasks`: load the data (once per worker process),
    run the trial in ``config.artifacts_dir/<trial_id>`` and measure its final weights."""
    from bocb.data import open_data
    from bocb.diagnostics.snapshot import final_snapshot
    from bocb.distributed import join_from_env

    spec = TrialSpec.from_dict(spec_dict)
    # One process of several when a launcher started this one (bocb.executors.group, torchrun,
    # Ray Train): the process group is joined here, and this rank's GPU chosen.
    dist, device = join_from_env(device or config.device)
    # ``stop_at_epoch`` rides beside the spec for an adaptive-tuning rung (not part of the identity).
    options = RunOptions(device=device, compile=config.compile, dist=dist,
                         work_dir=Path(config.artifacts_dir) / spec.trial_id, checkpoint_every=config.checkpoint_every,
                         stop_at_epoch=spec_dict.get("stop_at_epoch"),
                         fence=fence_for(config.artifacts_dir, spec.trial_id, claim))
    key = json.dumps(spec.data.to_dict(), sort_keys=True)
    try:
        if key not in _DATASETS:
            _DATASETS[key] = open_data(
                spec.data, cache_dir=Path(config.cache_dir) if config.cache_dir else None,
                data_dirs=[Path(d) for d in config.data_dirs], download=config.download)
    except Exception as exc:  # noqa: BLE001 - a trial that cannot load its data is a failed trial
        return {"trial_id": spec.trial_id, "spec": spec_dict, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}", "epochs": []}
    record = run_trial(spec, _DATASETS[key], options, progress)
    weights = (record.get("artifacts") or {}).get("final_weights")
    if weights and (dist is None or dist.main):
        record["diagnostics"] = final_snapshot(spec.trial_id, weights, spec_dict, conv=config.weight_conv)
    return record


def run_trial(
    spec: TrialSpec, dataset: Dataset | StreamData, options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``spec`` on ``dataset``; always returns a result record (see module doc)."""
    record = engine.new_record(trial_id=spec.trial_id, spec=spec.to_dict(), task="classification", metric="top1")
    holdout = spec.recipe.holdout_per_class is not None
    engine.run(
        record, lambda device, precision: _prepare(spec, dataset, device, options.data_workers, options.dist),
        spec.optimizer, seed=spec.seed,
        run_id=spec.trial_id, device=options.device, precision=spec.recipe.precision,
        options=engine.LoopOptions(
            compile=options.compile, work_dir=options.work_dir, checkpoint_every=options.checkpoint_every,
            resume=options.resume, stop_after_epochs=options.stop_after_epochs,
            stop_at_epoch=options.stop_at_epoch, fence=options.fence, weights_metadata={"spec": spec.to_json()},
            dist=options.dist),
        progress=progress, select_on="val_top1" if holdout else "score",
    )
    _summarise(record, holdout)
    return record


def _summarise(record: dict[str, Any], holdout: bool) -> None:
    """final_* from the last evaluated row (for a diverged trial: its ended weights); best_epoch
    chosen on validation accuracy with a hold-out, else on test accuracy (see the module doc)."""
    rows = [r for r in record["epochs"] if r.get("test_top1") is not None]
    last = rows[-1] if rows else None
    best = next((r for r in rows if r["epoch"] == record["best_epoch"]), None)
    record["final_top1"] = last["test_top1"] if last else None
    record["final_top5"] = last["test_top5"] if last else None
    record["best_top1"] = best["test_top1"] if best else None
    record["selection"] = "holdout" if holdout else "test"
    if holdout:
        record["final_val_top1"] = last["val_top1"] if last else None
        record["best_val_top1"] = best["val_top1"] if best else None


def _prepare(spec: TrialSpec, dataset: Dataset | StreamData, device: torch.device,
             data_workers: int | None = None, dist: DistContext | None = None) -> engine.Run:
    """The classification task: the model, the data (in memory or streamed), batches, loss and evaluation."""
    recipe = spec.recipe
    if recipe.imagenet is not None and not isinstance(dataset, StreamData):
        # A failed trial saying why, never CIFAR crops under an ImageNet recipe: these crop full-size
        # images while streaming them (bocb.data.stream).
        from bocb.recipes_in1k import not_trainable

        raise ValueError(not_trainable([recipe.name]))
    model, head = starting_model(spec)  # first, so its init depends on the seed alone
    if spec.finetune == "linear":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + "."))

    if isinstance(dataset, StreamData):
        data = _streamed(spec, dataset, device, _workers(data_workers), dist)
    else:
        data = _in_memory(spec, dataset, device)
    augment = BatchAugment(data.augment, dataset.num_classes, device)
    model = model.to(device)
    cuda = device.type == "cuda"
    classes = dataset.num_classes

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if recipe.loss == "bce":
            if targets.dtype == torch.long:
                targets = F.one_hot(targets, classes).float()
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    # One autocast context for every step (a context manager is reusable), not one per batch.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16")

    def batch(forward_model: torch.nn.Module, index: torch.Tensor, generator: torch.Generator):
        images, targets = augment.train(*data.train(index), generator)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)

        def forward() -> torch.Tensor:
            with autocast:
                return forward_model(images)

        return forward, lambda logits: loss_fn(logits, targets)

    # Streamed evaluation sets are split between the processes of a multi-process trial (each reads
    # its share); in-memory ones are small and every process scores them whole.
    shared = dist if data.eval_split else None

    def evaluate(forward_model: torch.nn.Module, autocast: torch.autocast) -> dict[str, Any]:
        return _score_fields({split: _evaluate(forward_model, augment, batches(recipe.eval_batch_size), device,
                                               autocast, classes, shared)
                              for split, batches in data.eval_sets.items()})

    chance = 100.0 / classes
    unscorable = _score_fields({split: (round(chance, 4), round(100.0 * min(5, classes) / classes, 4), float("nan"))
                                for split in data.eval_sets})
    # Collapse back to chance is judged on the numbers selection uses (validation when held out).
    watched = "val_top1" if "val" in data.eval_sets else "test_top1"

    def collapsed(rows: list[dict[str, Any]]) -> bool:
        best = max(r[watched] for r in rows if r.get(watched) is not None)
        return best >= 2 * chance and rows[-1][watched] <= 1.1 * chance

    return engine.Run(
        model=model, examples=data.examples, batch_size=recipe.batch_size, epochs=recipe.epochs,
        lr_factor=lambda step, steps, sf: recipe.lr_factor(step, steps, sf, base_lr=spec.optimizer.lr),
        order=data.order, batch=batch, evaluate=evaluate, unscorable=unscorable,
        loss_limit=100.0 * math.log(max(classes, 2)), grad_clip=recipe.grad_clip, generator_device=device,
        train_mode=lambda: _train_mode(model, head if spec.finetune == "linear" else None),
        collapsed=collapsed, info=data.info,
    )


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _Data:
    """Where a trial's images come from. ``order(generator)``: an epoch's positions (the engine
    slices them into batches); ``train(positions)``: the uint8 images and labels of one batch on
    the device; ``eval_sets``: per split (``test``, then ``val`` when held out), batches of a
    given size; ``augment``: what :class:`BatchAugment` still does on the device."""

    examples: int
    order: Callable[[torch.Generator], torch.Tensor]
    train: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    eval_sets: dict[str, Callable[[int], Batches]]
    augment: AugmentConfig
    info: dict[str, Any]
    eval_split: bool = False  # each process of a multi-process trial evaluates its share only


def _in_memory(spec: TrialSpec, dataset: Dataset, device: torch.device) -> _Data:
    """Class-balanced subsets for reduced tiers, then the whole set on the device as uint8."""
    recipe = spec.recipe
    train, val = dataset.train, None
    if recipe.holdout_per_class is not None:
        train, val = train.split(recipe.holdout_per_class, seed=HOLDOUT_SEED)
    train = train.subset(recipe.train_per_class, seed=spec.seed)
    test = dataset.test.subset(recipe.test_per_class, seed=spec.seed)
    info = {"dataset": {
        "name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
        "train_images": len(train), "test_images": len(test), "num_classes": dataset.num_classes,
        "val_images": len(val) if val is not None else 0,
    }}
    train_x, train_y = train.images.to(device), train.labels.to(device)
    eval_sets = {"test": _slices(test.images.to(device), test.labels.to(device))}
    if val is not None:
        eval_sets["val"] = _slices(val.images.to(device), val.labels.to(device))
    aug_cfg = recipe.augment
    if train_x.shape[-1] != spec.backbone.input_size:  # the upsample policy, or data at another size
        aug_cfg = replace(aug_cfg, resize_to=spec.backbone.input_size)
    return _Data(examples=len(train),
                 order=lambda generator: torch.randperm(len(train), generator=generator, device=device),
                 train=lambda index: (train_x[index], train_y[index]), eval_sets=eval_sets, augment=aug_cfg, info=info)


def _slices(x: torch.Tensor, y: torch.Tensor) -> Callable[[int], Batches]:
    return lambda size: ((x[i:i + size], y[i:i + size]) for i in range(0, len(x), size))


# The evaluation crop of streamed data under a CIFAR-style recipe: resize to size / 0.875, centre
# crop (torchvision's and DeiT's ImageNet evaluation); the ImageNet recipes carry their own
# (imagenet_transforms). The in-memory path crops at ratio 1.0, so the two differ here.
STREAM_EVAL_CROP_RATIO = 0.875


def _workers(requested: int | None) -> int:
    """DataLoader workers for streamed data: as asked, else one per core of this process's share but
    one (the trainer's), at most 8. Under ``bocb run`` the share is the slot's (the local executor
    sets ``BOCB_SLOT_CORES``), so N slots do not each start a whole machine's worth."""
    if requested is not None:
        return requested
    share = os.environ.get("BOCB_SLOT_CORES", "")
    cores = int(share) if share.isdigit() else (os.cpu_count() or 2)
    return min(8, max(1, cores - 1))


def _streamed(spec: TrialSpec, data: StreamData, device: torch.device, workers: int,
              dist: DistContext | None = None) -> _Data:
    """Images read from disk per batch (:mod:`bocb.data.stream`): RandomResizedCrop + flip in the
    loader's workers, the rest of the recipe's augmentation (RandAugment, mixup/cutmix, erasing,
    normalisation) by BatchAugment on the device, as for data in memory.

    The loader's seed for an epoch is drawn from the engine's (seed, epoch) generator, so a resumed
    trial replays the same crops; an epoch that needs more batches than a sharded split yields
    (shards read by several workers each drop a partial batch) continues with the loader's next
    pass. Per-class subsets are the in-memory path's images (folders only); hold-outs are not
    supported yet. Repeated augmentation (``recipe.imagenet.repeats``, folders only) goes to the
    training loader, never evaluation's; an epoch is then that loader's draws (timm's count).

    Over several processes (``dist``) each reads its own share of every epoch (the loader's rank
    split, :class:`bocb.data.stream.EpochSampler`) in batches of ``batch_size / world size``: the
    engine's global step is then the recipe's batch, as for data in memory; the positions the
    engine hands out only count the steps."""
    recipe = spec.recipe
    if recipe.holdout_per_class is not None:
        raise ValueError("holdout_per_class is not supported for streamed data yet")
    train, test = data.train, data.test
    if recipe.train_per_class is not None or recipe.test_per_class is not None:
        if not isinstance(train, FolderSplit):
            raise ValueError(f"per-class subsets (train_per_class={recipe.train_per_class}, test_per_class="
                             f"{recipe.test_per_class}) need an image folder; {data.kind} shards are read whole")
        train = train.subset(recipe.train_per_class, seed=spec.seed)
        test = test.subset(recipe.test_per_class, seed=spec.seed)
    size = spec.data.image_size or spec.backbone.input_size
    repeats = 1
    train_tf, eval_tf = TrainTransform(size), EvalTransform(size, STREAM_EVAL_CROP_RATIO)
    aug_cfg = replace(recipe.augment, crop_padding=None, flip=False)  # the loader crops and flips
    departures: list[str] = []
    if recipe.imagenet is not None:
        train_tf, eval_tf, departures = imagenet_transforms(recipe)
        repeats = recipe.imagenet.repeats
        # No resize on the device: the network sees the recipe's train and test sizes (RSB A3
        # trains at 160 and tests at 224, which its convolutions take as they are).
    elif size != spec.backbone.input_size:
        aug_cfg = replace(aug_cfg, resize_to=spec.backbone.input_size)
    check_repeats(train, repeats)
    loader = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    ranks = {"rank": dist.rank, "world_size": dist.world_size} if dist is not None else {}
    world = dist.world_size if dist is not None else 1
    if recipe.batch_size % world:
        raise ValueError(f"a global batch of {recipe.batch_size} does not split evenly over {world} processes")
    for split in (train, test):
        if isinstance(split, ShardSplit) and len(split.shards) < world:
            raise ValueError(f"the {split.where} split has {len(split.shards)} shard(s) for {world} processes: "
                             f"each process reads whole shards; write at least {world}, or use fewer processes")
    # Training draws per epoch, over all processes: the images, or under repeated augmentation the
    # sampler's count (timm's: about the dataset's size, whatever the number of processes).
    examples = world * EpochSampler.count(len(train), world_size=world, drop_last=True, repeats=repeats)
    state: dict[str, Any] = {}

    def start(pass_: int) -> None:
        state["pass"] = pass_
        state["batches"] = iter(epoch_loader(train, train_tf, batch_size=recipe.batch_size // world,
                                             seed=state["seed"], epoch=pass_, shuffle=True, drop_last=True,
                                             repeats=repeats, **ranks, **loader))

    def order(generator: torch.Generator) -> torch.Tensor:
        # Below 2^32, the range of trial seeds, which the loader mixes with the epoch (seeding.epoch_seed).
        state["seed"] = int(torch.randint(2**32, (1,), generator=generator, device=generator.device).item())
        start(0)
        return torch.arange(examples)  # positions only count the steps: the loader orders the images

    def next_batch(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = next(state["batches"])
        except StopIteration:
            start(state["pass"] + 1)
            batch = next(state["batches"], None)
            if batch is None:  # a whole pass without one batch: this process's share is too small
                raise ValueError(f"{train.where}: a pass over this process's share of the data gives no batch "
                                 f"of {recipe.batch_size // world}") from None
            images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def test_batches(size_: int) -> Batches:
        for images, labels in epoch_loader(test, eval_tf, batch_size=size_, seed=0, epoch=0, shuffle=False,
                                           **ranks, **loader):
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    info = {"dataset": {
        "name": data.name, "source": data.source, "fingerprint": data.fingerprint, "train_images": len(train),
        "test_images": len(test), "num_classes": data.num_classes, "val_images": 0,
        "streamed": {"workers": workers, "train": train_tf.to_dict(), "eval": eval_tf.to_dict(), "repeats": repeats,
                     **({"departures": departures} if departures else {})},
    }}
    return _Data(examples=examples, order=order, train=next_batch, eval_sets={"test": test_batches},
                 augment=aug_cfg, info=info, eval_split=dist is not None)


def imagenet_transforms(recipe: Any) -> tuple[TrainTransform, EvalTransform, list[str]]:
    """An ImageNet recipe's crops (bocb.recipes_in1k.ImageNetInput) and what bocb does differently,
    recorded with the trial. Repeated augmentation (RSB A1/A2) is the training loader's
    (``ImageNetInput.repeats``, passed by :func:`_streamed`), not a transform's."""
    inet = recipe.imagenet
    train_tf = TrainTransform(inet.train_size, scale=inet.crop_scale, ratio=inet.crop_ratio,
                              interpolation=inet.interpolation)
    eval_tf = EvalTransform(inet.test_size, inet.crop_pct, interpolation=inet.interpolation)
    departures = []
    if inet.randaugment_mstd:
        departures.append(f"RandAugment at a fixed magnitude; the recipe's magnitude noise (std "
                          f"{inet.randaugment_mstd}) is not drawn")
    return train_tf, eval_tf, departures


def _score_fields(scores: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for split, (top1, top5, loss) in scores.items():
        row.update({f"{split}_top1": top1, f"{split}_top5": top5,
                    f"{split}_loss": loss if math.isfinite(loss) else None})
    row["score"] = row["test_top1"]
    return row


def _train_mode(model: torch.nn.Module, only: str | None) -> None:
    """Training mode for the whole model, or (linear probe) for the module ``only``: a frozen
    backbone keeps its BatchNorm statistics and has no dropout / drop-path."""
    if only is None:
        model.train()
    else:
        model.eval()
        model.get_submodule(only).train()


@torch.no_grad()
def _evaluate(model: torch.nn.Module, augment: BatchAugment, batches: Batches, device: torch.device,
              autocast: torch.autocast, classes: int, dist: DistContext | None = None) -> tuple[float, float, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy on the whole set (uint8 image batches).
    With ``dist`` the batches are this process's share and the counts are summed over processes
    (one collective), so every process returns the whole set's numbers.

    Weights that produce a non-finite logit anywhere cannot be evaluated: the set scores chance
    (100 / classes, 500 / classes top-5) with a NaN loss (see the module doc)."""
    model.eval()
    # correct top-1, correct top-5, summed loss, images, non-finite batches; float32 as the sums
    # always were (exact for counts below 2^24; MPS has no float64)
    totals = torch.zeros(5, device=device)
    for x, labels in batches:
        images = augment.eval(x)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        totals[0] += (top[:, 0] == labels).sum()
        totals[1] += (top == labels[:, None]).any(dim=1).sum()
        totals[2] += F.cross_entropy(logits, labels, reduction="sum")
        totals[3] += len(labels)
        totals[4] += (~torch.isfinite(logits)).any()
    if dist is not None:
        from torch import distributed

        distributed.all_reduce(totals)
    correct1, correct5, loss, n, bad = totals.tolist()
    if bad:
        return round(100.0 / classes, 4), round(100.0 * min(5, classes) / classes, 4), float("nan")
    loss_value = loss / n
    return (round(100.0 * correct1 / n, 4), round(100.0 * correct5 / n, 4),
            loss_value if math.isfinite(loss_value) else float("nan"))


