"""Object detection as a downstream task: RetinaNet + FPN on a zoo backbone, scored with COCOeval.

Three pieces, meant to be called by the transfer study:

- :data:`DETECTION_RECIPES` / :class:`DetectionRecipe`: the paper's 1x schedule (``retinanet-1x``)
  and a reduced CPU tier (``smoke``), serialisable like :class:`bocb.recipes.Recipe`.
- :func:`bocb.transfer.retinanet.build_detector`: torchvision's
  :class:`~torchvision.models.detection.RetinaNet` on the feature maps of a backbone's stages.
- :func:`run_detection`: fine-tune a detector with one optimizer and return a result record shaped
  like :func:`bocb.trial.run_trial`'s.

**The 1x schedule** (mmdetection's ``retinanet_r50_fpn_1x_coco``, which the paper follows): 12
epochs, batch 16, the optimizer's own lr, step decay x0.1 after epochs 8 and 11, linear warm-up over
the first 500 iterations from 0.001 x lr (mmcv's ``warmup_ratio``), gradient clipping at norm 35,
random horizontal flip with probability 0.5, and at test time a score threshold of 0.05, NMS at IoU
0.5, 1000 candidates per level and 100 detections per image. The image size is the data's (see
:func:`bocb.transfer.coco.load_coco`: letterboxed squares). Schedule-free optimizers get the
warm-up and then a constant factor (their averaging replaces the decay), as in bocb.recipes.
Deliberate differences from mmdet's config: every backbone parameter is fine-tuned (mmdet freezes
the stem and first stage of a ResNet, which would take those weights out of the fine-tuning
optimizer's reach, the very thing the transfer study measures); BatchNorm statistics are frozen
(``norm_eval``, as mmdet does) only in the 1x recipe, since a randomly initialised backbone (the
smoke tier's tests) has no statistics worth freezing.

**The detector** and how it reads a backbone's stages: :mod:`bocb.transfer.retinanet`.

**A run** (:func:`run_detection`): outcomes are data, never exceptions: ``done``; ``diverged`` on a
non-finite training loss or one step's loss above :data:`LOSS_LIMIT` (100, some 50x the ~2 a fresh
RetinaNet starts at; checked every step on the CPU, every 25 on CUDA, as bocb.trial); ``failed`` on
any exception, with its message and traceback; a diverged run's last row evaluates the weights it
ended with (AP 0 when they are not finite). The loop itself is :func:`bocb.engine.train`, the one
classification uses too (checkpoints and resume included); this module only prepares what is
particular to detection (:func:`_prepare`). Every epoch reseeds all RNGs from (seed, epoch), as
bocb.trial does; batch order and flips come from a CPU generator, so they are the same on any
device. The data stays in host memory as uint8 and each batch is copied to the device (a detection
set can outgrow it); batches are drawn without replacement and the last partial batch is dropped
(as bocb.trial); training images without boxes are skipped (mmdet's ``filter_empty_gt``), validation keeps every image. Steps go through
:class:`bocb.optim.Stepper` (schedule-free train/eval switching, SophiaH's create_graph), with
the optimizer and its parameter groups from :func:`bocb.optim.build_optimizer`; the real SophiaG
(``sophia_g``; the paper's ``sophia`` row never refreshes its Hessian and runs) is refused
(its Gauss-Newton-Bartlett refresh samples labels from a softmax classifier, which RetinaNet's
per-anchor sigmoid focal loss is not). Precision (``precision="auto"``): bf16 autocast and
channels_last on CUDA, fp32 on CPU; under autocast the head's outputs are cast to fp32 and anchors
are made in fp32, so losses, box decoding and NMS run in fp32. Evaluation: pycocotools' COCOeval
(``iouType='bbox'``) on the validation set after every epoch; AP (IoU 0.50:0.95) and AP50 in
percent, COCOeval's prints silenced; no detections at all give 0.0 (as does a set without
ground truth, where COCOeval says -1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import torch
from pycocotools.cocoeval import COCOeval
from torch import nn

from bocb import engine
from bocb.engine import LoopOptions, Progress
from bocb.optim import OptimizerSpec
from bocb.recipes import checked_replace
from bocb.transfer.coco import DetectionSet
from bocb.transfer.retinanet import Detector, build_detector

LOSS_LIMIT = 100.0

TIERS = {
    "full": "the paper's 1x schedule as published",
    "smoke": "the 1x schedule's shape on at most 128 images with a narrow FPN, for CPU tests",
}


# -- recipes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionRecipe:
    """Everything about a detection fine-tuning run except the backbone, optimizer and data."""

    name: str
    epochs: int = 12
    batch_size: int = 16
    milestones: tuple[int, ...] = (8, 11)  # lr x gamma after these epochs (mmdet's step=[8, 11])
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001  # warm-up starts at this fraction of the lr (mmcv's linear warm-up)
    grad_clip: float | None = 35.0
    flip_prob: float = 0.5
    norm_eval: bool = True  # backbone BatchNorm layers keep their (pre-trained) statistics
    fpn_channels: int = 256
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    topk_candidates: int = 1000
    detections_per_img: int = 100
    eval_batch_size: int = 16
    train_images: int | None = None  # a seeded subset of the training set; None = all
    val_images: int | None = None
    tier: str = "full"

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"unknown detection tier {self.tier!r}: valid: {', '.join(TIERS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be ascending, got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionRecipe:
        data = dict(data)
        data["milestones"] = tuple(data["milestones"])
        return cls(**data)

    def with_changes(self, **changes: Any) -> DetectionRecipe:
        """A copy with some fields replaced; unknown field names are an error naming the valid ones."""
        return checked_replace(self, "detection recipe", changes)

    def lr_factor(self, step: int, steps_per_epoch: int, schedule_free: bool = False) -> float:
        return step_decay_factor(self, step, steps_per_epoch, schedule_free)


def step_decay_factor(recipe: Any, step: int, steps_per_epoch: int, schedule_free: bool = False) -> float:
    """Multiplier on the optimizer's lr at global ``step`` (0-based) for mmdet/mmpose step
    schedules: ``gamma`` after each of ``milestones`` (epochs), times mmcv's linear warm-up
    ``1 - (1 - step / warmup_iters) * (1 - warmup_ratio)``. Schedule-free optimizers keep only the
    warm-up (their averaging replaces the decay)."""
    epoch = step // max(steps_per_epoch, 1)
    factor = 1.0 if schedule_free else recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if step < recipe.warmup_iters:
        factor *= 1 - (1 - step / recipe.warmup_iters) * (1 - recipe.warmup_ratio)
    return factor


DETECTION_RECIPES: dict[str, DetectionRecipe] = {
    "retinanet-1x": DetectionRecipe("retinanet-1x"),
    # The 1x schedule's shape (12 epochs, x0.1 after 8 and 11) on a small set: at most 128
    # training and 64 validation images, batch 8, a 20-iteration warm-up and a 32-channel FPN.
    # tests/test_detection.py trains a tiny R-50 with it on 32 px synthetic shapes in ~15 s of CPU.
    "smoke": DetectionRecipe(
        "smoke", epochs=12, batch_size=8, milestones=(8, 11), warmup_iters=20, norm_eval=False,
        fpn_channels=32, eval_batch_size=64, train_images=128, val_images=64, tier="smoke",
    ),
}


def get_detection_recipe(name: str) -> DetectionRecipe:
    if name not in DETECTION_RECIPES:
        raise ValueError(f"unknown detection recipe {name!r}: valid: {', '.join(DETECTION_RECIPES)}")
    return DETECTION_RECIPES[name]


# -- a run -----------------------------------------------------------------------------------------


def run_detection(
    model: nn.Module,
    optimizer_spec: OptimizerSpec,
    train: DetectionSet,
    val: DetectionSet,
    recipe: DetectionRecipe,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    precision: str = "auto",
    options: LoopOptions = LoopOptions(),
    run_id: str = "detection",
) -> dict[str, Any]:
    """Fine-tune ``model`` for detection on ``train``, evaluating on ``val`` after every epoch.

    ``model``: a backbone (a detector is built on a copy of it with :func:`build_detector`, at the
    training images' size, ``recipe.fpn_channels`` wide, after seeding with ``seed``) or a
    :class:`Detector` from :func:`build_detector` (used as given, and trained in place).
    Always returns a record (see module doc); the training loop is :func:`bocb.engine.train`,
    shared with classification (``options``: checkpoints, resume and final weights in its
    ``work_dir``). ``device``: ``cpu``, ``cuda`` or ``cuda:N``. ``precision``: ``auto`` (bf16
    autocast on CUDA, fp32 on CPU), ``fp32``, ``tf32`` or ``bf16``.
    """
    record = engine.new_record(task="detection", metric="box_ap", recipe=recipe.to_dict(), seed=seed)
    engine.run(record, lambda dev, prec: _prepare(model, optimizer_spec, train, val, recipe, seed, dev, prec),
               optimizer_spec, seed=seed, run_id=run_id, device=device, precision=precision, options=options,
               progress=progress)
    engine.name_scores(record, {"final_map": "map", "final_ap50": "ap50"}, best="best_map")
    return record


def _prepare(model: nn.Module, optimizer_spec: OptimizerSpec, train: DetectionSet, val: DetectionSet,
             recipe: DetectionRecipe, seed: int, device: torch.device, precision: str) -> engine.Run:
    """The detection task: the detector, host-side batches with flips, the summed RetinaNet losses,
    COCOeval on ``val``."""
    if optimizer_spec.curvature == "gnb":
        raise ValueError(f"{optimizer_spec.short} is not supported for detection: its Gauss-Newton-Bartlett "
                         "refresh samples labels from a softmax classifier, RetinaNet's loss is not one")
    if train.category_ids != val.category_ids:
        raise ValueError(f"train ({train.source}) and val ({val.source}) have different categories: "
                         f"{train.category_ids} vs {val.category_ids}")
    train = train.subset(recipe.train_images, seed)
    val = val.subset(recipe.val_images, seed)
    train_rows = [i for i, t in enumerate(train.targets) if len(t["labels"])]  # mmdet's filter_empty_gt
    info: dict[str, Any] = {"dataset": {
        "train": train.source, "val": val.source, "train_images": len(train_rows),
        "train_images_without_boxes": len(train) - len(train_rows), "val_images": len(val),
        "train_boxes": train.num_boxes, "val_boxes": val.num_boxes, "num_classes": train.num_classes,
        "categories": list(train.category_names), "image_size": list(train.image_size),
    }}
    if len(train_rows) < recipe.batch_size:
        raise ValueError(f"{len(train_rows)} training images with boxes is fewer than one batch of {recipe.batch_size}")
    height, width = train.image_size
    if not isinstance(model, Detector):
        if height != width:
            raise ValueError(f"training images are {height}x{width}; load them with a square image_size")
        model = build_detector(model, train.num_classes, height, recipe.fpn_channels)
    built = getattr(model, "bocb_info", {})
    if built.get("num_classes", train.num_classes) != train.num_classes:
        raise ValueError(f"the detector was built for {built['num_classes']} classes, the data has {train.num_classes}")
    if built.get("image_size", height) != height or val.image_size != train.image_size:
        raise ValueError(f"the detector was built for {built.get('image_size')}px images; train images are "
                         f"{height}x{width}, val images {val.image_size[0]}x{val.image_size[1]}")
    model.score_thresh = recipe.score_thresh
    model.nms_thresh = recipe.nms_thresh
    model.topk_candidates = recipe.topk_candidates
    model.detections_per_img = recipe.detections_per_img
    info["detector"] = getattr(model, "bocb_info", {"backbone": type(model).__name__})
    model = model.to(device)
    cuda = device.type == "cuda"
    # The data stays in host memory (a detection set can outgrow the device); batches are copied.
    train_x = train.images[train_rows]
    train_t = [train.targets[i] for i in train_rows]
    bn = [m for m in model.backbone.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
        if recipe.norm_eval else []
    parts = torch.zeros(2, device=device)

    def train_mode() -> None:
        model.train()
        for m in bn:
            m.eval()

    # One autocast context for every step (a context manager is reusable), not one per batch.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def batch(forward_model: nn.Module, index: torch.Tensor, generator: torch.Generator):
        images, targets = _flip(train_x[index], [train_t[j] for j in index.tolist()], recipe.flip_prob, generator)
        images = images.to(device, non_blocking=True).float().div_(255)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)

        def forward() -> torch.Tensor:
            with autocast:
                losses = forward_model(images, targets)
            return torch.stack([losses["classification"], losses["bbox_regression"]]).float()

        return forward, lambda p: p.sum()

    def after_step(loss: torch.Tensor, output: torch.Tensor) -> None:
        parts.add_(output)

    def epoch_fields(steps: int) -> dict[str, Any]:
        mean = (parts / steps).tolist()
        parts.zero_()
        return {"train_loss_cls": mean[0] if math.isfinite(mean[0]) else None,
                "train_loss_box": mean[1] if math.isfinite(mean[1]) else None}

    def evaluate_fields(forward_model: nn.Module, autocast: torch.autocast) -> dict[str, Any]:
        return _score_fields(evaluate(model, val, recipe.eval_batch_size, autocast))

    return engine.Run(
        model=model, examples=len(train_rows), batch_size=recipe.batch_size, epochs=recipe.epochs,
        lr_factor=recipe.lr_factor, order=lambda generator: torch.randperm(len(train_rows), generator=generator),
        batch=batch, evaluate=evaluate_fields, unscorable=_score_fields((0.0, 0.0, 0)), loss_limit=LOSS_LIMIT,
        grad_clip=recipe.grad_clip, generator_device="cpu", train_mode=train_mode, after_step=after_step,
        epoch_fields=epoch_fields, info=info,
    )


def _score_fields(scores: tuple[float, float, int]) -> dict[str, Any]:
    return {"map": scores[0], "ap50": scores[1], "detections": scores[2], "score": scores[0]}


def _flip(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], prob: float,
          generator: torch.Generator) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Random horizontal flip of each image with ``prob``, boxes mirrored with it."""
    if prob <= 0:
        return images, targets
    flip = torch.rand(len(images), generator=generator) < prob
    images = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    width = images.shape[-1]
    out = []
    for f, t in zip(flip.tolist(), targets, strict=True):
        if f:
            boxes = t["boxes"]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            t = {**t, "boxes": boxes}
        out.append(t)
    return images, out


@torch.no_grad()
def evaluate(model: nn.Module, data: DetectionSet, batch_size: int = 16,
             autocast: torch.autocast | None = None) -> tuple[float, float, int]:
    """COCO AP (IoU 0.50:0.95) and AP50 in percent, and the number of detections, of ``model``
    on ``data``, in batches copied to the model's device."""
    model.eval()
    device = next(model.parameters()).device
    autocast = autocast or torch.autocast(device.type, enabled=False)
    results = []
    for start in range(0, len(data), batch_size):
        batch = data.images[start:start + batch_size].to(device, non_blocking=True).float().div_(255)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast:
            detections = model(batch)
        for offset, det in enumerate(detections):
            image_id = data.image_ids[start + offset]
            boxes = det["boxes"].float().cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
            for box, score, label in zip(xywh, det["scores"].float().cpu().tolist(),
                                         det["labels"].cpu().tolist(), strict=True):
                if label < 1:  # the background slot
                    continue
                results.append({"image_id": image_id, "category_id": data.category_ids[label - 1],
                                "bbox": box, "score": score})
    if not results:
        return 0.0, 0.0, 0
    with contextlib.redirect_stdout(io.StringIO()):
        detections_coco = data.coco.loadRes(results)
        evaluator = COCOeval(data.coco, detections_coco, iouType="bbox")
        evaluator.params.imgIds = list(data.image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = (float(v) for v in evaluator.stats[:2])
    # COCOeval gives -1 where no ground truth exists: no boxes to find counts as 0, not an error.
    return round(max(ap, 0.0) * 100, 4), round(max(ap50, 0.0) * 100, 4), len(results)


