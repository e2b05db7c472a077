"""One training trial: (backbone, optimizer, settings, seed) -> a result record.

:func:`run_trial` reads top to bottom: setup, data, model, optimizer, schedule, resume, the epoch
loop (train, evaluate, record, checkpoint), result. It talks to the zoo, the optimizer registry
and the data layer only through their specs and builders.

Outcomes are data, never exceptions: ``done``; ``diverged`` (a non-finite training loss, a
training loss above 100 x ln(classes) — 230 for CIFAR-10 where training starts near 2.3 — or test
accuracy that had risen to at least twice chance falling back to within 10% of chance; the epoch
is recorded); ``failed`` (any exception, with its message); ``interrupted`` (stopped on purpose by
``stop_after_epochs``; the checkpoint lets the next run resume).

Speed choices (the GPU path; CPU runs the same code): the whole dataset sits on the device as
uint8 and is augmented there in batches (no DataLoader, no host-device copies per step); bf16
autocast and channels_last on CUDA; ``torch.compile`` as an option, its warm-up timed apart;
the loss is summed on the device and synchronised rarely. Every epoch reseeds all RNGs from
(seed, epoch), so a trial resumed from a checkpoint replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bocb import checkpoint
from bocb.data import Dataset
from bocb.data.augment import BatchAugment
from bocb.optim import Stepper, build_optimizer
from bocb.provenance import code_version, device_info, library_versions
from bocb.seeding import epoch_seed, seed_all, synchronize
from bocb.spec import TrialSpec
from bocb.zoo import classifier_name, init_backbone

Progress = Callable[[dict[str, Any]], None]

CHECKPOINT = "checkpoint.safetensors"
FINAL_WEIGHTS = "final.safetensors"


@dataclass(frozen=True)
class RunOptions:
    """How a trial runs; none of this is part of its identity (the result records it)."""

    device: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or "fp32" / "bf16"
    compile: bool = False
    work_dir: Path | None = None  # checkpoints and final weights go here; None = keep nothing
    checkpoint_every: int = 1  # epochs
    resume: bool = True
    stop_after_epochs: int | None = None  # end this run early (as if killed), for tests and budgets

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            raise ValueError(f"stop_after_epochs must be >= 1, got {self.stop_after_epochs}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available: valid: auto, cpu")
    return torch.device(name)


def starting_model(spec: TrialSpec) -> tuple[torch.nn.Module, str]:
    """The network ``spec`` starts training from, on the CPU, and its classifier's name.

    A pre-training trial starts from :func:`bocb.zoo.init_backbone` under its seed; a fine-tuning
    trial from the same, then every pre-trained weight except the classifier, which stays new.
    The weight diagnostics measure how far each layer moved from exactly this network.
    """
    model = init_backbone(spec.backbone, spec.seed)
    head = classifier_name(model)
    if spec.pretrained is not None:
        checkpoint.load_weights(model, Path(spec.pretrained.path), skip=head, sha256=spec.pretrained.sha256)
    return model, head






def run_trial(
    spec: TrialSpec, dataset: Dataset, options: RunOptions = RunOptions(), progress: Progress | None = None
) -> dict[str, Any]:
    """Train and evaluate ``spec`` on ``dataset``; always returns a result record (see module doc)."""
    started = time.time()
    record: dict[str, Any] = {
        "trial_id": spec.trial_id,
        "spec": spec.to_dict(),
        "status": "failed",
        "error": None,
        "diverged_epoch": None,
        "epochs": [],
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    try:
        _train(spec, dataset, options, progress, record)
    except Exception as exc:  # noqa: BLE001 - a crashing trial is a result, not a crashed study
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    rows = record["epochs"]
    finite = [r for r in rows if r["test_top1"] is not None]
    record["final_top1"] = finite[-1]["test_top1"] if finite else None
    record["final_top5"] = finite[-1]["test_top5"] if finite else None
    best = max(finite, key=lambda r: r["test_top1"]) if finite else None
    record["best_top1"] = best["test_top1"] if best else None
    record["best_epoch"] = best["epoch"] if best else None
    record.setdefault("seconds", {})["wall"] = round(time.time() - started, 3)
    return record


def _train(
    spec: TrialSpec, dataset: Dataset, options: RunOptions, progress: Progress | None,
    record: dict[str, Any],
) -> None:
    # --- setup -------------------------------------------------------------------------------
    device = resolve_device(options.device)
    cuda = device.type == "cuda"
    precision = options.precision if options.precision != "auto" else ("bf16" if cuda else "fp32")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}: valid: auto, fp32, bf16")
    recipe = spec.recipe
    record.update(device=device_info(device), precision=precision, compile=options.compile)
    seed_all(spec.seed, device)
    model, head = starting_model(spec)  # first, so its init depends on the seed alone
    if spec.finetune == "linear":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(head + "."))

    # --- data: class-balanced subsets for reduced tiers, then the whole set on the device -----
    train = dataset.train.subset(recipe.train_per_class, seed=spec.seed)
    test = dataset.test.subset(recipe.test_per_class, seed=spec.seed)
    record["dataset"] = {
        "name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
        "train_images": len(train), "test_images": len(test), "num_classes": dataset.num_classes,
    }
    if len(train) < recipe.batch_size:
        raise ValueError(f"{len(train)} training images is fewer than one batch of {recipe.batch_size}")
    train_x, train_y = train.images.to(device), train.labels.to(device)
    test_x, test_y = test.images.to(device), test.labels.to(device)
    input_size = spec.backbone.input_size
    aug_cfg = recipe.augment
    if train_x.shape[-1] != input_size:  # the upsample policy, or a dataset at another size
        aug_cfg = replace(aug_cfg, resize_to=input_size)
    augment = BatchAugment(aug_cfg, dataset.num_classes, device)

    # --- model ---------------------------------------------------------------------------------
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    record["params"] = sum(p.numel() for p in model.parameters())
    forward_model = torch.compile(model) if options.compile else model

    # --- optimizer and schedule -------------------------------------------------------------
    optimizer, optimizer_record = build_optimizer(spec.optimizer, model)
    record["optimizer"] = optimizer_record
    stepper = Stepper(optimizer, spec.optimizer)
    for group in optimizer.param_groups:
        group["bocb_base_lr"] = group["lr"]  # the schedule multiplies this; survives checkpoints
    steps_per_epoch = len(train) // recipe.batch_size  # drop_last: mixup needs full, even batches
    schedule_free = spec.optimizer.needs_train_eval

    def set_lr(step: int) -> float:
        factor = recipe.lr_factor(step, steps_per_epoch, schedule_free)
        for group in optimizer.param_groups:
            group["lr"] = group["bocb_base_lr"] * factor
        return factor * spec.optimizer.lr

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if recipe.loss == "bce":
            if targets.dtype == torch.long:
                targets = F.one_hot(targets, dataset.num_classes).float()
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets)

    # --- resume ----------------------------------------------------------------------------------
    work = options.work_dir
    ckpt_path = work / CHECKPOINT if work else None
    start_epoch = 0
    seconds = {"train": 0.0, "eval": 0.0, "compile": 0.0}
    state = _readable_checkpoint(ckpt_path, spec.trial_id, device, record) if options.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        stepper.load_state_dict(state["stepper"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch = int(state["epoch"])
        record["epochs"] = list(state["rows"])
        seconds = dict(state["seconds"])
        record["resumed_from_epoch"] = start_epoch

    # --- epochs ----------------------------------------------------------------------------------
    chance = 100.0 / dataset.num_classes
    loss_limit = 100.0 * math.log(max(dataset.num_classes, 2))
    # One host sync per step is free on CPU; on a GPU it would stall the queue, so check rarely.
    check_every = 25 if cuda else 1
    record["status"] = "running"
    epochs_this_run = 0
    for epoch in range(start_epoch, recipe.epochs):
        generator = seed_all(epoch_seed(spec.seed, epoch), device)
        _train_mode(model, head if spec.finetune == "linear" else None)
        stepper.train()
        order = torch.randperm(len(train), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        synchronize(device)
        t0 = time.perf_counter()
        diverged = False
        for i in range(steps_per_epoch):
            step_t0 = time.perf_counter()
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            images, targets = augment.train(train_x[idx], train_y[idx], generator)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            lr_now = set_lr(epoch * steps_per_epoch + i)

            def forward(images: torch.Tensor = images) -> torch.Tensor:
                with autocast:
                    return forward_model(images)

            loss, _ = stepper.step(
                forward, lambda logits, t=targets: loss_fn(logits, t),
                params=params, clip_grad_norm=recipe.grad_clip,
            )
            loss_sum += loss
            if options.compile and epoch == start_epoch and i == 0:
                synchronize(device)
                seconds["compile"] += time.perf_counter() - step_t0  # first call compiles
            if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                if not math.isfinite(loss_sum.item()) or loss.item() > loss_limit:
                    diverged = True
                    break
            if progress:
                progress({"event": "step", "epoch": epoch, "step": i + 1, "steps": steps_per_epoch})
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        if options.compile and epoch == start_epoch:
            train_seconds -= seconds["compile"]
        seconds["train"] += train_seconds
        if diverged:
            record["status"] = "diverged"
            record["diverged_epoch"] = epoch + 1
            mean_loss = loss_sum.item() / (i + 1)  # non-finite becomes None in the row
            record["epochs"].append(_row(epoch, mean_loss, None, lr_now, train_seconds, 0.0, 0))
            break

        t1 = time.perf_counter()
        stepper.eval()
        top1, top5, test_loss = _evaluate(forward_model, augment, test_x, test_y, recipe.eval_batch_size, autocast)
        eval_seconds = time.perf_counter() - t1
        seconds["eval"] += eval_seconds
        row = _row(epoch, loss_sum.item() / steps_per_epoch, (top1, top5, test_loss), lr_now,
                   train_seconds, eval_seconds, steps_per_epoch * recipe.batch_size)
        record["epochs"].append(row)
        if progress:
            progress({"event": "epoch", "epoch": epoch, "row": row})

        best = max(r["test_top1"] for r in record["epochs"] if r["test_top1"] is not None)
        if best >= 2 * chance and top1 <= 1.1 * chance:
            record["status"] = "diverged"
            record["diverged_epoch"] = epoch + 1
            break
        epochs_this_run += 1
        last = epoch + 1 == recipe.epochs
        if ckpt_path and (last or (epoch + 1) % options.checkpoint_every == 0):
            checkpoint.save(ckpt_path, {
                "trial_id": spec.trial_id, "epoch": epoch + 1, "model": model.state_dict(),
                "stepper": stepper.state_dict(), "rng": checkpoint.rng_state(),
                "rows": record["epochs"], "seconds": seconds,
            })
        if options.stop_after_epochs is not None and epochs_this_run >= options.stop_after_epochs and not last:
            record["status"] = "interrupted"
            break
    else:
        record["status"] = "done"

    # --- result ------------------------------------------------------------------------------
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    record["seconds"] = seconds
    images = sum(r["images"] for r in record["epochs"])
    record["train_images_per_second"] = round(images / seconds["train"], 1) if seconds["train"] else None
    if work and record["status"] in ("done", "diverged"):
        # The spec travels in the file's metadata, so `bocb diagnose --checkpoint` needs nothing else.
        checkpoint.save_weights(work / FINAL_WEIGHTS, model,
                                metadata={"trial_id": spec.trial_id, "spec": spec.to_json()})
        record["artifacts"] = {"final_weights": str(work / FINAL_WEIGHTS), "checkpoint": str(ckpt_path)}


def _readable_checkpoint(path: Path | None, trial_id: str, device: torch.device,
                         record: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start from scratch.

    A checkpoint that cannot be read (truncated by a full disk, damaged, not a bocb checkpoint, or
    another trial's) would fail the trial on every run; it is renamed to
    ``checkpoint.safetensors.bad-<unix time>`` (kept for inspection, never deleted), the trial
    starts again from epoch 0, and ``record["checkpoint_set_aside"]`` names the file and why.
    """
    if path is None or not path.exists():
        return None
    try:
        state = checkpoint.load(path, device=device)
        if not isinstance(state, dict) or not {"trial_id", "model", "stepper", "rng", "epoch", "rows",
                                                "seconds"} <= set(state):
            raise ValueError("not a complete trial checkpoint")
        if state["trial_id"] != trial_id:
            raise ValueError(f"it belongs to trial {state['trial_id']}")
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is set aside the same way
        aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
        os.replace(path, aside)
        record["checkpoint_set_aside"] = f"{aside}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return None


def _train_mode(model: torch.nn.Module, only: str | None) -> None:
    """Training mode for the whole model, or (linear probe) for the module ``only``: a frozen
    backbone keeps its BatchNorm statistics and has no dropout / drop-path."""
    if only is None:
        model.train()
    else:
        model.eval()
        model.get_submodule(only).train()


def _row(epoch: int, train_loss: float, test: tuple[float, float, float] | None, lr: float,
         train_seconds: float, eval_seconds: float, images: int) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss if math.isfinite(train_loss) else None,
        "test_top1": test[0] if test else None,
        "test_top5": test[1] if test else None,
        "test_loss": test[2] if test and math.isfinite(test[2]) else None,
        "lr": lr,
        "seconds_train": round(train_seconds, 3),
        "seconds_eval": round(eval_seconds, 3),
        "images": images,
    }


@torch.no_grad()
def _evaluate(model: torch.nn.Module, augment: BatchAugment, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, autocast: torch.autocast) -> tuple[float, float, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy on the whole test set."""
    model.eval()
    correct1 = torch.zeros((), device=x.device)
    correct5 = torch.zeros((), device=x.device)
    loss = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch_size):
        images = augment.eval(x[i:i + batch_size])
        if x.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(images).float()
        labels = y[i:i + batch_size]
        loss += F.cross_entropy(logits, labels, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == labels).sum()
        correct5 += (top == labels[:, None]).any(dim=1).sum()
    n = len(x)
    loss_value = loss.item() / n
    return (round(100.0 * correct1.item() / n, 4), round(100.0 * correct5.item() / n, 4),
            loss_value if math.isfinite(loss_value) else float("nan"))


