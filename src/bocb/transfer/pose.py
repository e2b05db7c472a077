"""2D human pose as a downstream task: SimpleBaseline heatmaps on a zoo backbone, scored by OKS.

- :data:`POSE_RECIPES` / :class:`PoseRecipe`: the paper's top-down recipe (``simplebaseline``:
  mmpose's SimpleBaseline on COCO — Adam, 210 epochs, lr x0.1 after epochs 170 and 200, 500
  iterations of linear warm-up from 0.001 x lr, 256x192 input, Gaussian heatmaps with sigma 2,
  random horizontal flip) and a reduced CPU tier (``smoke``).
- :class:`PoseNet` (:func:`build_pose_net`): the backbone's last feature map (read by the same dry
  run as the detector's stages, :func:`bocb.transfer.retinanet.stage_features`) -> three 4x4
  stride-2 transposed convolutions (BatchNorm, ReLU) -> a 1x1 convolution to K heatmaps, as Xiao
  et al. 2018 (256 channels; the smoke tier 32). A backbone that gives no 4-D feature map is
  refused with one line.
- :func:`run_pose`: fine-tune with one optimizer through the one training loop
  (:func:`bocb.engine.train`): loss = SimpleBaseline's joints MSE (0.5 x the mean squared error
  of the heatmaps of labelled keypoints); evaluation after every epoch = COCO keypoint AP
  (pycocotools' COCOeval, ``iouType="keypoints"``, OKS with the set's sigmas) of the predictions
  decoded from the heatmaps (arg-max plus SimpleBaseline's quarter-pixel shift towards the higher
  neighbour), mapped back to each image's frame; a prediction's score is its mean heatmap peak.

Deliberate differences from mmpose's config, stated: no random scale/rotation augmentation and no
flip test (the transfer study compares optimizers on one recipe; both would cost CPU time in the
tests); ground-truth person boxes at test time (:mod:`bocb.transfer.keypoints`). Images are
normalised with bocb's pre-training mean/std (CIFAR-100's by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.cocoeval import COCOeval
from torch import nn

from bocb import engine
from bocb.data.augment import CIFAR100_MEAN, CIFAR100_STD
from bocb.engine import LoopOptions, Progress
from bocb.optim import OptimizerSpec
from bocb.recipes import checked_replace
from bocb.transfer.detection import step_decay_factor
from bocb.transfer.keypoints import PoseSet
from bocb.transfer.retinanet import stage_features

LOSS_LIMIT = 100.0  # a fresh head's MSE on heatmaps is ~1e-3; a bad one is orders above


@dataclass(frozen=True)
class PoseRecipe:
    """Everything about a pose fine-tuning run except the backbone, optimizer and data."""

    name: str
    epochs: int = 210
    batch_size: int = 64
    milestones: tuple[int, ...] = (170, 200)
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    input_size: tuple[int, int] = (256, 192)  # height, width
    sigma: float = 2.0  # heatmap Gaussian, in heatmap pixels
    flip_prob: float = 0.5
    head_channels: int = 256
    grad_clip: float | None = None
    eval_batch_size: int = 64
    train_instances: int | None = None  # a seeded subset; None = all
    val_instances: int | None = None
    tier: str = "full"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.head_channels < 1:
            raise ValueError("epochs, batch_size, eval_batch_size and head_channels must be >= 1")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be ascending, got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"], out["input_size"] = list(self.milestones), list(self.input_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoseRecipe:
        return cls(**{**data, "milestones": tuple(data["milestones"]), "input_size": tuple(data["input_size"])})

    def with_changes(self, **changes: Any) -> PoseRecipe:
        return checked_replace(self, "pose recipe", changes)

    def lr_factor(self, step: int, steps_per_epoch: int, schedule_free: bool = False) -> float:
        return step_decay_factor(self, step, steps_per_epoch, schedule_free)


POSE_RECIPES: dict[str, PoseRecipe] = {
    "simplebaseline": PoseRecipe("simplebaseline"),
    # The schedule's shape on a small set: 12 epochs (x0.1 after 8 and 11), 32x32 crops, a 32-channel
    # head, at most 128 training and 64 validation instances, a 20-iteration warm-up.
    "smoke": PoseRecipe("smoke", epochs=12, batch_size=16, milestones=(8, 11), warmup_iters=20, input_size=(32, 32),
                        head_channels=32, eval_batch_size=64, train_instances=128, val_instances=64, tier="smoke"),
}


def get_pose_recipe(name: str) -> PoseRecipe:
    if name not in POSE_RECIPES:
        raise ValueError(f"unknown pose recipe {name!r}: valid: {', '.join(POSE_RECIPES)}")
    return POSE_RECIPES[name]


class PoseNet(nn.Module):
    """Backbone features -> deconvolution head -> K heatmaps (see the module doc)."""

    def __init__(self, body: nn.Module, in_channels: int, keypoints: int, channels: int,
                 mean: tuple[float, float, float] = CIFAR100_MEAN, std: tuple[float, float, float] = CIFAR100_STD):
        super().__init__()
        self.body = body
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, 4, stride=2, padding=1,
                                          bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, keypoints, 1)
        for m in [*self.deconv.modules(), self.final]:  # SimpleBaseline's init of the new layers
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.bocb_info: dict[str, Any] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float in [0, 1], ``(B, 3, H, W)`` -> heatmaps ``(B, K, h, w)``."""
        x = self.body.maps((images - self.mean) / self.std)[-1]
        return self.final(self.deconv(x))

    def no_weight_decay(self) -> set[str]:
        hook = getattr(self.body.body, "no_weight_decay", None)
        names = {n for n, _ in self.named_parameters()}
        return {n for n in (f"body.body.{k}" for k in (hook() if callable(hook) else ())) if n in names}

    def head_parameter_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith("final.")}


def build_pose_net(backbone: nn.Module, keypoints: int, input_size: tuple[int, int], channels: int = 256) -> PoseNet:
    """SimpleBaseline on a copy of ``backbone`` (its classifier dropped), for ``input_size``
    (height, width) crops. Raises ``ValueError`` (one line) for a backbone with no feature map."""
    import copy

    backbone = copy.deepcopy(backbone)
    was_training = backbone.training
    body, info = stage_features(backbone, tuple(input_size), task="pose network", levels=1)
    body.pyramid = None  # one map is all SimpleBaseline reads
    with torch.no_grad():
        body.eval()
        last = body.maps(torch.zeros(1, 3, *input_size, device=next(body.parameters()).device))[-1]
    net = PoseNet(body, int(last.shape[1]), keypoints, channels)
    net.to(last.device)
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, *input_size, device=last.device))
    net.bocb_info = {"backbone": type(backbone).__name__, "feature_source": info["feature_source"],
                     "feature_channels": int(last.shape[1]), "feature_stride": int(input_size[0] // last.shape[-2]),
                     "heatmap_size": [int(out.shape[-2]), int(out.shape[-1])], "head_channels": channels,
                     "keypoints": keypoints, "input_size": list(input_size)}
    net.train(was_training)
    return net


# -- a run -------------------------------------------------------------------------------------------


def heatmaps(joints: torch.Tensor, visible: torch.Tensor, size: tuple[int, int], stride: tuple[float, float],
             sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian targets ``(B, K, h, w)`` for crop-pixel ``joints`` ``(B, K, 2)``, and the weights
    ``(B, K)``: 1 for a labelled keypoint whose centre falls on the heatmap, else 0."""
    h, w = size
    mx, my = joints[..., 0] / stride[1], joints[..., 1] / stride[0]
    ys = torch.arange(h, device=joints.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=joints.device, dtype=torch.float32).view(1, 1, 1, w)
    target = torch.exp(-((xs - mx[..., None, None]) ** 2 + (ys - my[..., None, None]) ** 2) / (2 * sigma**2))
    inside = (mx >= -0.5) & (mx < w - 0.5) & (my >= -0.5) & (my < h - 0.5)
    return target, visible * inside.float()


def decode(maps: torch.Tensor, stride: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop-pixel keypoints ``(B, K, 2)`` and peak values ``(B, K)`` of heatmaps ``(B, K, h, w)``:
    the arg-max, shifted a quarter pixel towards the higher neighbour (SimpleBaseline)."""
    b, k, h, w = maps.shape
    flat = maps.float().reshape(b, k, -1)
    peak, index = flat.max(dim=-1)
    py, px = (index // w).float(), (index % w).float()
    ix, iy = px.long(), py.long()

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None]).squeeze(-1)

    # No shift at the border, where one neighbour is missing.
    dx = torch.sign(at(iy, ix + 1) - at(iy, ix - 1)) * ((ix > 0) & (ix < w - 1)).float()
    dy = torch.sign(at(iy + 1, ix) - at(iy - 1, ix)) * ((iy > 0) & (iy < h - 1)).float()
    xy = torch.stack([(px + 0.25 * dx) * stride[1], (py + 0.25 * dy) * stride[0]], dim=-1)
    return xy, peak


def run_pose(model: nn.Module, optimizer_spec: OptimizerSpec, train: PoseSet, val: PoseSet, recipe: PoseRecipe,
             seed: int, device: str | torch.device = "cpu", progress: Progress | None = None,
             precision: str = "auto", options: LoopOptions = LoopOptions(), run_id: str = "pose") -> dict[str, Any]:
    """Fine-tune ``model`` (a backbone, or a :class:`PoseNet` used as given) for pose on ``train``,
    keypoint AP on ``val`` after every epoch; always returns a record (``final_ap``, ``best_ap``)."""
    record = engine.new_record(task="pose", metric="keypoint_ap", recipe=recipe.to_dict(), seed=seed)
    engine.run(record, lambda dev, prec: _prepare(model, optimizer_spec, train, val, recipe, seed, dev, prec),
               optimizer_spec, seed=seed, run_id=run_id, device=device, precision=precision, options=options,
               progress=progress)
    engine.name_scores(record, {"final_ap": "ap", "final_ap50": "ap50"}, best="best_ap")
    return record


def _prepare(model: nn.Module, optimizer_spec: OptimizerSpec, train: PoseSet, val: PoseSet, recipe: PoseRecipe,
             seed: int, device: torch.device, precision: str) -> engine.Run:
    if optimizer_spec.curvature == "gnb":
        raise ValueError(f"{optimizer_spec.short} is not supported for pose: its Gauss-Newton-Bartlett "
                         "refresh samples labels from a softmax classifier, a heatmap regression is not one")
    if train.names != val.names:
        raise ValueError(f"train ({train.source}) and val ({val.source}) have different keypoints")
    if train.input_size != tuple(recipe.input_size) or val.input_size != tuple(recipe.input_size):
        raise ValueError(f"crops are {train.input_size} (train) and {val.input_size} (val); the recipe wants "
                         f"{tuple(recipe.input_size)}: load them at the recipe's input_size")
    train = train.subset(recipe.train_instances, seed)
    val = val.subset(recipe.val_instances, seed)
    if not isinstance(model, PoseNet):
        model = build_pose_net(model, len(train.names), recipe.input_size, recipe.head_channels)
    model = model.to(device)
    out_h, out_w = model.bocb_info["heatmap_size"]
    stride = (recipe.input_size[0] / out_h, recipe.input_size[1] / out_w)
    width = recipe.input_size[1]
    swap = torch.arange(len(train.names))
    for a, b in train.flip_pairs:
        swap[a], swap[b] = b, a
    info = {"dataset": {"train": train.source, "val": val.source, "train_instances": len(train),
                        "val_instances": len(val), "keypoints": list(train.names), "oks_sigmas": list(train.sigmas),
                        "input_size": list(recipe.input_size)},
            "pose_net": model.bocb_info}

    # One autocast context for every step (a context manager is reusable), not one per batch.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def batch(forward_model: nn.Module, index: torch.Tensor, generator: torch.Generator):
        images, joints, visible = train.images[index], train.joints[index].clone(), train.visible[index]
        flip = torch.rand(len(index), generator=generator) < recipe.flip_prob
        if flip.any():
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            mirrored = joints[:, swap].clone()
            mirrored[..., 0] = width - 1 - mirrored[..., 0]
            joints = torch.where(flip[:, None, None], mirrored, joints)
            visible = torch.where(flip[:, None], visible[:, swap], visible)
        x = images.to(device, non_blocking=True).float().div_(255)
        target, weight = heatmaps(joints.to(device), visible.to(device), (out_h, out_w), stride, recipe.sigma)

        def forward() -> torch.Tensor:
            with autocast:
                return forward_model(x)

        def loss(pred: torch.Tensor) -> torch.Tensor:
            w = weight[..., None, None]
            return 0.5 * F.mse_loss(pred.float() * w, target * w)

        return forward, loss

    def evaluate_fields(forward_model: nn.Module, autocast: torch.autocast) -> dict[str, Any]:
        return _score_fields(evaluate(model, val, stride, recipe.eval_batch_size, autocast))

    return engine.Run(
        model=model, examples=len(train), batch_size=recipe.batch_size, epochs=recipe.epochs,
        lr_factor=recipe.lr_factor, order=lambda generator: torch.randperm(len(train), generator=generator),
        batch=batch, evaluate=evaluate_fields, unscorable=_score_fields((0.0, 0.0)), loss_limit=LOSS_LIMIT,
        grad_clip=recipe.grad_clip, generator_device="cpu", info=info,
    )


def _score_fields(scores: tuple[float, float]) -> dict[str, Any]:
    return {"ap": scores[0], "ap50": scores[1], "score": scores[0]}


@torch.no_grad()
def evaluate(model: nn.Module, data: PoseSet, stride: tuple[float, float], batch_size: int = 64,
             autocast: torch.autocast | None = None) -> tuple[float, float]:
    """COCO keypoint AP (OKS 0.50:0.95) and AP50, in percent, of ``model`` on ``data``."""
    model.eval()
    device = next(model.parameters()).device
    autocast = autocast or torch.autocast(device.type, enabled=False)
    results = []
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device).float().div_(255)
        with autocast:
            maps = model(x)
        xy, peak = decode(maps, stride)
        crops = data.crops[start:start + batch_size]
        height, width = data.input_size
        for i in range(len(x)):
            left, top, cw, ch = crops[i].tolist()
            pts = xy[i].cpu()
            gx, gy = left + pts[:, 0] * cw / width, top + pts[:, 1] * ch / height
            flat = torch.stack([gx, gy, torch.ones_like(gx)], dim=1).flatten().tolist()
            score = float(peak[i].float().mean())
            if not all(math.isfinite(v) for v in flat) or not math.isfinite(score):
                continue
            results.append({"image_id": data.image_ids[start + i], "category_id": data.category_id,
                            "keypoints": flat, "score": score})
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        detections = data.coco.loadRes(results)
        evaluator = COCOeval(data.coco, detections, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(data.sigmas, dtype=np.float64)
        evaluator.params.imgIds = sorted(set(data.image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50 = (float(v) for v in evaluator.stats[:2])
    return round(max(ap, 0.0) * 100, 4), round(max(ap50, 0.0) * 100, 4)
