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

Speed choices (the GPU path; CPU runs the same code): the whole dataset sits on the device as
uint8 and is augmented there in batches (no DataLoader, no host-device copies per step); bf16
autocast and channels_last on CUDA; ``torch.compile`` as an option, its warm-up timed apart;
the loss is summed on the device and synchronised rarely. Every epoch reseeds all RNGs from
(seed, epoch), so a trial resumed from a checkpoint replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bocb import engine
from bocb.data import Dataset
from bocb.data.augment import BatchAugment
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

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ValueError(f"stop_after_epochs must be >= 1, got {self.stop_after_epochs}")
        if self.stop_at_epoch is not None and self.stop_at_epoch < 1:
            raise ValueError(f"stop_at_epoch must be >= 1, got {self.stop_at_epoch}")


_DATASETS: dict[str, Dataset] = {}


def execute(spec_dict: dict[str, Any], config: Any, device: str | None = None,
            progress: Progress | None = None, claim: str | None = None) -> dict[str, Any]:
    """The classification task's entry in :mod:`bocb.tasks`: load the data (once per worker process),
    run the trial in ``config.artifacts_dir/<trial_id>`` and measure its final weights."""
    from bocb.data import load_dataset
    from bocb.diagnostics.snapshot import final_snapshot

    spec = TrialSpec.from_dict(spec_dict)
    # ``stop_at_epoch`` rides beside the spec for an adaptive-tuning rung (not part of the identity).
    options = RunOptions(device=device or config.device, compile=config.compile,
                         work_dir=Path(config.artifacts_dir) / spec.trial_id, checkpoint_every=config.checkpoint_every,
                         stop_at_epoch=spec_dict.get("stop_at_epoch"),
                         fence=fence_for(config.artifacts_dir, spec.trial_id, claim))
    key = json.dumps(spec.data.to_dict(), sort_keys=True)
    try:
        if key not in _DATASETS:
            _DATASETS[key] = load_dataset(
                spec.data, cache_dir=Path(config.cache_dir) if config.cache_dir else None,
                data_dirs=[Path(d) for d in config.data_dirs], download=config.download)
    except Exception as exc:  # noqa: BLE001 - a trial that cannot load its data is a failed trial
        return {"trial_id": spec.trial_id, "spec": spec_dict, "status": "failed",
                "error": f"{type(exc).__name__}: {exc}", "epochs": []}
    record = run_trial(spec, _DATASETS[key], options, progress)
    weights = (record.get("artifacts") or {}).get("final_weights")
    if weights:
        record["diagnostics"] = final_snapshot(spec.trial_id, weights, spec_dict, conv=config.weight_conv)
    return record


def run_trial(
    spec: TrialSpec, dataset: Dataset, options: RunOptions = RunOptions(), progress: Progress | None = None
) -> dict[str, Any]:
    """Train and evaluate ``spec`` on ``dataset``; always returns a result record (see module doc)."""
    record = engine.new_record(trial_id=spec.trial_id, spec=spec.to_dict(), task="classification", metric="top1")
    holdout = spec.recipe.holdout_per_class is not None
    engine.run(
        record, lambda device, precision: _prepare(spec, dataset, device), spec.optimizer, seed=spec.seed,
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


def _prepare(spec: TrialSpec, dataset: Dataset, device: torch.device) -> engine.Run:
    """The classification task: data on the device, the model, batches, loss and evaluation."""
    recipe = spec.recipe
    if recipe.imagenet is not None:  # a failed trial saying why, never CIFAR crops under an ImageNet recipe
        from bocb.recipes_in1k import not_trainable

        raise ValueError(not_trainable([recipe.name]))
    model, head = starting_model(spec)  # first, so its init depends on the seed alone
    if spec.finetune == "linear":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + "."))

    # --- data: class-balanced subsets for reduced tiers, then the whole set on the device -----
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
    test_x, test_y = test.images.to(device), test.labels.to(device)
    val_xy = (val.images.to(device), val.labels.to(device)) if val is not None else None
    aug_cfg = recipe.augment
    if train_x.shape[-1] != spec.backbone.input_size:  # the upsample policy, or data at another size
        aug_cfg = replace(aug_cfg, resize_to=spec.backbone.input_size)
    augment = BatchAugment(aug_cfg, dataset.num_classes, device)
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
        images, targets = augment.train(train_x[index], train_y[index], generator)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)

        def forward() -> torch.Tensor:
            with autocast:
                return forward_model(images)

        return forward, lambda logits: loss_fn(logits, targets)

    def evaluate(forward_model: torch.nn.Module, autocast: torch.autocast) -> dict[str, Any]:
        scores = {"test": _evaluate(forward_model, augment, test_x, test_y, recipe.eval_batch_size, autocast)}
        if val_xy is not None:
            scores["val"] = _evaluate(forward_model, augment, *val_xy, recipe.eval_batch_size, autocast)
        return _score_fields(scores)

    chance = 100.0 / classes
    unscorable = _score_fields({split: (round(chance, 4), round(100.0 * min(5, classes) / classes, 4), float("nan"))
                                for split in (("test", "val") if val_xy is not None else ("test",))})
    # Collapse back to chance is judged on the numbers selection uses (validation when held out).
    watched = "val_top1" if val_xy is not None else "test_top1"

    def collapsed(rows: list[dict[str, Any]]) -> bool:
        best = max(r[watched] for r in rows if r.get(watched) is not None)
        return best >= 2 * chance and rows[-1][watched] <= 1.1 * chance

    return engine.Run(
        model=model, examples=len(train), batch_size=recipe.batch_size, epochs=recipe.epochs,
        lr_factor=lambda step, steps, sf: recipe.lr_factor(step, steps, sf, base_lr=spec.optimizer.lr),
        order=lambda generator: torch.randperm(len(train), generator=generator, device=device),
        batch=batch, evaluate=evaluate, unscorable=unscorable,
        loss_limit=100.0 * math.log(max(classes, 2)), grad_clip=recipe.grad_clip, generator_device=device,
        train_mode=lambda: _train_mode(model, head if spec.finetune == "linear" else None),
        collapsed=collapsed, info=info,
    )


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
def _evaluate(model: torch.nn.Module, augment: BatchAugment, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, autocast: torch.autocast) -> tuple[float, float, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy on the whole set.

    Weights that produce a non-finite logit anywhere cannot be evaluated: the set scores chance
    (100 / classes, 500 / classes top-5) with a NaN loss (see the module doc)."""
    model.eval()
    correct1 = torch.zeros((), device=x.device)
    correct5 = torch.zeros((), device=x.device)
    loss = torch.zeros((), device=x.device)
    finite = torch.ones((), dtype=torch.bool, device=x.device)
    classes = None
    for i in range(0, len(x), batch_size):
        images = augment.eval(x[i:i + batch_size])
        if x.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images).float()
        classes = logits.shape[1]
        finite &= torch.isfinite(logits).all()
        labels = y[i:i + batch_size]
        loss += F.cross_entropy(logits, labels, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == labels).sum()
        correct5 += (top == labels[:, None]).any(dim=1).sum()
    n = len(x)
    if classes is not None and not bool(finite):
        return round(100.0 / classes, 4), round(100.0 * min(5, classes) / classes, 4), float("nan")
    loss_value = loss.item() / n
    return (round(100.0 * correct1.item() / n, 4), round(100.0 * correct5.item() / n, 4),
            loss_value if math.isfinite(loss_value) else float("nan"))


