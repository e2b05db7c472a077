"""Object detection as a downstream task: RetinaNet + FPN on a zoo backbone, scored with COCOeval.

Three pieces, meant to be called by the transfer study:

- :data:`DETECTION_RECIPES` / :class:`DetectionRecipe`: the paper's 1x schedule (``retinanet-1x``)
  and a reduced CPU tier (``smoke``), serialisable like :class:`bocb.recipes.Recipe`.
- :func:`build_detector`: torchvision's :class:`~torchvision.models.detection.RetinaNet` on the
  feature maps of a backbone's stages.
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

**The detector** (:func:`build_detector`):

- *Stage features*, read from the backbone, never from a per-model table: a dry run (eval mode,
  no grad, one ``image_size`` image) lists the backbone's intermediate maps; the last map at each
  distinct stride is that stage's output, and the last three stages are C3-C5. Where they come
  from, in order of preference: timm's ``forward_intermediates`` (timm models of the zoo: ResNet,
  DenseNet, MobileNetV2, EfficientNet, RepVGG, ConvNeXt(-V2), Swin, the MetaFormers, DeiT,
  Mixer), after which ``prune_intermediate_layers`` drops the head and the layers after C5;
  torchvision ResNets through ``create_feature_extractor`` (layer2-layer4); any other model with
  ``forward_features`` (or a ``features`` module, as torchvision's AlexNet/VGG) through forward
  hooks on its top-level modules and the members of its top-level ``ModuleList``/``Sequential``
  containers (MogaNet, UniRepLKNet), keeping their 4-D outputs; top-level modules with parameters
  that ``forward_features`` never runs (the head and its norm) are replaced by ``Identity``. A model
  whose stages emit token sequences there (TransNeXt) has no maps to hook and is refused with one
  line.
- *Single-scale backbones* (plain ViTs and Mixers, all maps at one stride ``s``) get ViTDet's
  simple pyramid (Li et al. 2022): a 2x2 stride-2 transposed conv to ``s/2`` (half the channels),
  the map itself at ``s``, and a 2x2 max-pool to ``2s``; these three feed the same FPN.
  Backbones with a fixed input size (ViT, Swin) are resized to ``image_size`` through timm's
  ``set_input_size`` (position embeddings resampled); one without it (Mixer) must already be
  built for ``image_size``, else it is refused with one line.
- *Neck and head*: torchvision's ``FeaturePyramidNetwork`` with ``LastLevelP6P7`` (P6 from C5,
  mmdet's ``add_extra_convs='on_input'``), ``fpn_channels`` wide; torchvision's RetinaNet head
  (4 convs per branch, focal loss alpha 0.25 gamma 2, L1 box loss, IoU 0.5/0.4 matching).
  Anchors: 3 scales x 3 ratios per level, size ``4 x stride x 2^(k/3)`` (mmdet's
  ``octave_base_scale=4, scales_per_octave=3``), so a backbone at the CIFAR policy (C3 at stride
  2 for a ResNet) gets anchors to match its finer maps.
- *Classes*: ``num_classes`` is K, the number of object categories; the classifier has K + 1
  outputs with column 0 the never-positive background slot, because targets use labels 1..K
  (:mod:`bocb.transfer.coco`). Detections labelled 0 are dropped before evaluation.
- *Input*: RetinaNet's transform with ``min_size = max_size = image_size`` (square images are not
  rescaled), normalised with bocb's pre-training mean/std (CIFAR-100's by default, as
  :class:`bocb.data.augment.AugmentConfig`).
- The backbone passed in is deep-copied, never modified; its classifier is dropped.

**A run** (:func:`run_detection`): outcomes are data, never exceptions: ``done``; ``diverged`` on a
non-finite training loss or one step's loss above :data:`LOSS_LIMIT` (100, some 50x the ~2 a fresh
RetinaNet starts at; checked every step on the CPU, every 25 on CUDA, as bocb.trial); ``failed`` on
any exception, with its message and traceback. Every epoch reseeds all RNGs from (seed, epoch), as
bocb.trial does; batch order and flips come from a CPU generator, so they are the same on any
device. The data stays in host memory as uint8 and each batch is copied to the device (a detection
set can outgrow it); batches are drawn without replacement and the last partial batch is dropped
(as bocb.trial); training images without boxes are skipped (mmdet's ``filter_empty_gt``), validation keeps every image. Steps go through
:class:`bocb.optim.Stepper` (schedule-free train/eval switching, SophiaH's create_graph), with
the optimizer and its parameter groups from :func:`bocb.optim.build_optimizer`; SophiaG is refused
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
import copy
import dataclasses
import io
import math
import random
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from bocb.data.augment import CIFAR100_MEAN, CIFAR100_STD
from bocb.optim import OptimizerSpec, Stepper, build_optimizer
from bocb.provenance import code_version, device_info, library_versions
from bocb.transfer.coco import DetectionSet

Progress = Callable[[dict[str, Any]], None]

LOSS_LIMIT = 100.0
NUM_LEVELS = 3  # C3-C5 from the backbone; P6 and P7 from the FPN's extra block

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
        valid = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - valid)
        if bad:
            raise ValueError(f"detection recipe has no field {', '.join(bad)}: valid: {', '.join(sorted(valid))}")
        return dataclasses.replace(self, **changes)

    def lr_factor(self, step: int, steps_per_epoch: int, schedule_free: bool = False) -> float:
        """Multiplier on the optimizer's lr at global ``step`` (0-based): step decay by epoch,
        times mmcv's linear warm-up ``1 - (1 - step / warmup_iters) * (1 - warmup_ratio)``."""
        epoch = step // max(steps_per_epoch, 1)
        factor = 1.0 if schedule_free else self.gamma ** sum(epoch >= m for m in self.milestones)
        if step < self.warmup_iters:
            factor *= 1 - (1 - step / self.warmup_iters) * (1 - self.warmup_ratio)
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


# -- the detector ----------------------------------------------------------------------------------


class StageFeatures(nn.Module):
    """A backbone as an ``OrderedDict`` of its C3-C5 maps (``c3``, ``c4``, ``c5``); see module doc.

    ``mode`` is ``intermediates`` (timm's ``forward_intermediates`` at ``indices``), ``graph`` (a
    torchvision FX feature extractor) or ``hooks`` (the outputs of the submodules ``hook_modules``
    while ``body.<fn>`` runs; the hooks live only for the call). ``pyramid`` (single-scale
    backbones) turns the one map into three.
    """

    def __init__(self, body: nn.Module, mode: str, indices: list[int] | None = None,
                 hook_modules: list[str] | None = None, fn: str = "forward"):
        super().__init__()
        self.body = body
        self.mode = mode
        self.indices = indices
        self.hook_modules = list(hook_modules or [])
        self.fn = fn
        self.pyramid: nn.Module | None = None

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.mode == "intermediates":
            return list(self.body.forward_intermediates(x, indices=self.indices, intermediates_only=True))
        if self.mode == "graph":
            return list(self.body(x).values())
        store: dict[str, torch.Tensor] = {}
        handles = [
            self.body.get_submodule(name).register_forward_hook(
                lambda module, args, out, name=name: store.__setitem__(name, out))
            for name in self.hook_modules
        ]
        try:
            self.body(x) if self.fn == "forward" else getattr(self.body, self.fn)(x)
        finally:
            for handle in handles:
                handle.remove()
        return [store[name] for name in self.hook_modules]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.maps(x)
        if self.pyramid is not None:
            maps = self.pyramid(maps[-1])
        return OrderedDict((f"c{i + 3}", m) for i, m in enumerate(maps))


class SimplePyramid(nn.Module):
    """ViTDet's simple feature pyramid: one map at stride s -> maps at s/2, s and 2s."""

    def __init__(self, channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2)
        self.down = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = [channels // 2, channels, channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.up(x), x, self.down(x)]


class DetectorBackbone(nn.Module):
    """Stage features + FPN (with P6/P7); ``out_channels`` as torchvision's detectors expect."""

    def __init__(self, body: StageFeatures, in_channels: list[int], out_channels: int):
        super().__init__()
        self.body = body
        extra = LastLevelP6P7(in_channels[-1], out_channels)
        extra.use_P5 = False  # P6 from C5 (mmdet's add_extra_convs='on_input'), whatever the widths
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


class _Fp32OutputHead(RetinaNetHead):
    """RetinaNet's head with its outputs cast to fp32, so losses and decoding leave autocast's bf16."""

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in super().forward(x).items()}


class _Fp32Anchors(AnchorGenerator):
    """torchvision's AnchorGenerator makes anchors in the feature maps' dtype, which is bf16 under
    autocast (coordinates past 256 px would round to multiples of 2 or more); this one always
    makes them in fp32, from shape-only stand-ins for the maps."""

    def forward(self, image_list: Any, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        proxies = [torch.empty((0, 0, *f.shape[-2:]), device=f.device) for f in feature_maps]
        return super().forward(image_list, proxies)


class Detector(RetinaNet):
    """torchvision's RetinaNet with the backbone's ``no_weight_decay`` names passed through, so
    bocb's parameter-group policy sees them (cls token, position embeddings); ``bocb_info``
    describes how it was built (a JSON-ready dict for the run record)."""

    bocb_info: dict[str, Any]
    _backbone_no_wd: tuple[str, ...] = ()

    def no_weight_decay(self) -> set[str]:
        return set(self._backbone_no_wd)

    def head_parameter_names(self) -> set[str]:
        """The output layers (class logits, box regression): what optimizers that treat the
        classifier apart (Muon's AdamW fallback) must see as the head; a detector has no Linear."""
        return {n for n, _ in self.named_parameters()
                if n.startswith(("head.classification_head.cls_logits.", "head.regression_head.bbox_reg."))}


def build_detector(
    backbone: nn.Module,
    num_classes: int,
    image_size: int,
    fpn_channels: int = 256,
    *,
    image_mean: tuple[float, float, float] = CIFAR100_MEAN,
    image_std: tuple[float, float, float] = CIFAR100_STD,
) -> Detector:
    """RetinaNet + FPN on a copy of ``backbone`` for ``num_classes`` object categories (K; the
    classifier gets K + 1 outputs, see module doc) and ``image_size`` square input.

    The detector is on the backbone's device, in the backbone's train/eval mode; ``bocb_info``
    (JSON-ready) says where its features come from, their channels and strides, the anchor sizes.
    Raises ``ValueError`` (one line) for a backbone it cannot take.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (object categories, background not counted), got {num_classes}")
    backbone = copy.deepcopy(backbone)
    name = type(backbone).__name__
    was_training = backbone.training
    body, info = _stage_features(backbone, image_size, name)
    in_channels = info["in_channels"]
    strides = info["strides"]
    all_strides = [*strides, strides[-1] * 2, strides[-1] * 4]
    sizes = tuple(tuple(round(4 * s * 2 ** (k / 3), 2) for k in range(3)) for s in all_strides)
    anchors = _Fp32Anchors(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    neck = DetectorBackbone(body, in_channels, fpn_channels)
    head = _Fp32OutputHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes + 1)
    model = Detector(
        neck, num_classes + 1, min_size=image_size, max_size=image_size,
        image_mean=list(image_mean), image_std=list(image_std), anchor_generator=anchors, head=head,
    )
    no_wd = getattr(body.body, "no_weight_decay", None)
    if callable(no_wd):
        names = {n for n, _ in model.named_parameters()}
        model._backbone_no_wd = tuple(sorted(n for n in (f"backbone.body.body.{k}" for k in no_wd()) if n in names))
    model.bocb_info = {
        "backbone": name, **info, "anchor_sizes": [list(s) for s in sizes], "fpn_channels": fpn_channels,
        "num_classes": num_classes, "classifier_outputs": num_classes + 1, "image_size": image_size,
        "image_mean": list(image_mean), "image_std": list(image_std),
    }
    param = next(body.parameters(), None)
    if param is not None:
        model.to(param.device)  # the new neck and head join the backbone's device
    model.train(was_training)
    return model


def _stride(image_size: int, height: int) -> int:
    return 2 ** round(math.log2(image_size / height))


def _pick(shapes: list[tuple[int, ...]], image_size: int) -> list[int]:
    """Positions of the last map at each distinct stride, keeping the last NUM_LEVELS strides."""
    last: dict[int, int] = {}
    for i, shape in enumerate(shapes):
        last[_stride(image_size, shape[-2])] = i
    return [last[s] for s in sorted(last)][-NUM_LEVELS:]


def _dry(fn: Callable[[torch.Tensor], Any], model: nn.Module, image_size: int) -> Any:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        return fn(torch.randn(1, 3, image_size, image_size, device=device))


def _stage_features(model: nn.Module, image_size: int, name: str) -> tuple[StageFeatures, dict[str, Any]]:
    refuse = f"cannot build a detector on {name}"
    if hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers"):
        size = _fixed_input_size(model)
        if size is not None and size != image_size:
            if not hasattr(model, "set_input_size"):
                raise ValueError(f"{refuse}: it takes {size}px input only and has no set_input_size; "
                                 f"build it for image_size={image_size}")
            model.set_input_size(img_size=image_size)
        try:
            maps = _dry(lambda x: model.forward_intermediates(x, intermediates_only=True), model, image_size)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{refuse}: its forward_intermediates fails on {image_size}px input "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None
        picks = _pick([tuple(m.shape) for m in maps], image_size)
        shapes = [tuple(maps[i].shape) for i in picks]
        model.prune_intermediate_layers(picks, prune_norm=True, prune_head=True)
        body = StageFeatures(model, "intermediates", indices=picks)
        source = f"forward_intermediates{picks}"
    elif isinstance(model, torchvision.models.ResNet):
        nodes = {f"layer{i}": f"layer{i}" for i in (2, 3, 4)}
        body = StageFeatures(create_feature_extractor(model, return_nodes=nodes), "graph")
        shapes = [tuple(m.shape) for m in _dry(body.maps, body, image_size)]
        source = "create_feature_extractor[layer2, layer3, layer4]"
    else:
        fn = "forward_features" if callable(getattr(model, "forward_features", None)) else None
        if fn is None and isinstance(getattr(model, "features", None), nn.Module):
            model, fn = model.features, "forward"  # torchvision's plain nets: the classifier is dropped
        if fn is None:
            raise ValueError(f"{refuse}: it has neither timm's forward_intermediates, nor forward_features, "
                             "nor a features module, nor is it a torchvision ResNet")
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)
        seen: list[tuple[str, tuple[int, ...]]] = []
        ran: set[str] = set()
        handles = [
            model.get_submodule(n).register_forward_hook(
                lambda m, a, out, n=n: seen.append((n, tuple(out.shape)))
                if isinstance(out, torch.Tensor) and out.dim() == 4 else None)
            for n in _hook_candidates(model)
        ] + [
            child.register_forward_hook(lambda m, a, out, n=n: ran.add(n))
            for n, child in model.named_children()
        ]
        try:
            _dry(lambda x: model(x) if fn == "forward" else getattr(model, fn)(x), model, image_size)
        finally:
            for h in handles:
                h.remove()
        for n, child in list(model.named_children()):  # what forward_features never runs (a head's norm)
            if n not in ran and not isinstance(child, (nn.ModuleList, nn.ModuleDict)) \
                    and any(True for _ in child.parameters()):
                setattr(model, n, nn.Identity())
        if not seen:
            raise ValueError(f"{refuse}: none of its top-level modules outputs a 4-D feature map "
                             "(stages that emit token sequences are not supported)")
        picks = _pick([s for _, s in seen], image_size)
        shapes = [seen[i][1] for i in picks]
        body = StageFeatures(model, "hooks", hook_modules=[seen[i][0] for i in picks], fn=fn)
        source = f"hooks{body.hook_modules} during {fn}"
    strides = [_stride(image_size, s[-2]) for s in shapes]
    in_channels = [int(s[1]) for s in shapes]
    single = len(set(strides)) == 1
    if single:
        body.pyramid = SimplePyramid(in_channels[-1])
        in_channels = body.pyramid.out_channels
        s = strides[-1]
        strides = [max(s // 2, 1), s, s * 2]
    return body, {
        "mode": body.mode, "feature_source": source, "in_channels": in_channels, "strides": strides,
        "simple_pyramid": single,
    }


def _fixed_input_size(model: nn.Module) -> int | None:
    """The one input size a patch-embedding backbone accepts (ViT, Swin, Mixer), else None."""
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        embed = getattr(model, "stem", None)
    size = getattr(embed, "img_size", None)
    if size is None or getattr(embed, "dynamic_img_size", False) or getattr(embed, "strict_img_size", True) is False:
        return None
    return int(size[0]) if isinstance(size, (tuple, list)) else int(size)


def _hook_candidates(model: nn.Module) -> list[str]:
    names = []
    for name, child in model.named_children():
        names.append(name)
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


# -- a run -----------------------------------------------------------------------------------------


def _seed_all(seed: int) -> torch.Generator:
    """Seed every RNG; returns a CPU generator for batch order and flips (the same on any device)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch + 1


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
) -> dict[str, Any]:
    """Fine-tune ``model`` for detection on ``train``, evaluating on ``val`` after every epoch.

    ``model``: a backbone (a detector is built on a copy of it with :func:`build_detector`, at the
    training images' size, ``recipe.fpn_channels`` wide, after seeding with ``seed``) or a
    :class:`Detector` from :func:`build_detector` (used as given, and trained in place).
    Always returns a record (see module doc); ``progress`` gets ``step`` and ``epoch`` events
    like bocb.trial's. ``device``: ``cpu``, ``cuda`` or ``cuda:N``. ``precision``: ``auto`` (bf16
    autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``.
    """
    started = time.time()
    record: dict[str, Any] = {
        "task": "detection",
        "recipe": recipe.to_dict(),
        "seed": seed,
        "status": "failed",
        "error": None,
        "diverged_epoch": None,
        "epochs": [],
        "code_version": code_version(),
        "libraries": library_versions(),
    }
    try:
        _train(model, optimizer_spec, train, val, recipe, seed, torch.device(device), precision, progress,
               record)
    except Exception as exc:  # noqa: BLE001 - a crashing run is a result, not a crashed study
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    rows = [r for r in record["epochs"] if r["map"] is not None]
    record["final_map"] = rows[-1]["map"] if rows else None
    record["final_ap50"] = rows[-1]["ap50"] if rows else None
    best = max(rows, key=lambda r: r["map"]) if rows else None
    record["best_map"] = best["map"] if best else None
    record["best_epoch"] = best["epoch"] if best else None
    record.setdefault("seconds", {})["wall"] = round(time.time() - started, 3)
    return record


def _train(model: nn.Module, spec: OptimizerSpec, train: DetectionSet, val: DetectionSet,
           recipe: DetectionRecipe, seed: int, device: torch.device, precision: str,
           progress: Progress | None, record: dict[str, Any]) -> None:
    # --- setup -------------------------------------------------------------------------------
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    cuda = device.type == "cuda"
    precision = precision if precision != "auto" else ("bf16" if cuda else "fp32")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}: valid: auto, fp32, bf16")
    record.update(device=device_info(device), precision=precision)
    if spec.curvature == "gnb":
        raise ValueError(f"{spec.short} is not supported for detection: its Gauss-Newton-Bartlett "
                         "refresh samples labels from a softmax classifier, RetinaNet's loss is not one")
    if train.category_ids != val.category_ids:
        raise ValueError(f"train ({train.source}) and val ({val.source}) have different categories: "
                         f"{train.category_ids} vs {val.category_ids}")
    train = train.subset(recipe.train_images, seed)
    val = val.subset(recipe.val_images, seed)
    train_rows = [i for i, t in enumerate(train.targets) if len(t["labels"])]  # mmdet's filter_empty_gt
    record["dataset"] = {
        "train": train.source, "val": val.source, "train_images": len(train_rows),
        "train_images_without_boxes": len(train) - len(train_rows), "val_images": len(val),
        "train_boxes": train.num_boxes, "val_boxes": val.num_boxes, "num_classes": train.num_classes,
        "categories": list(train.category_names), "image_size": list(train.image_size),
    }
    if len(train_rows) < recipe.batch_size:
        raise ValueError(f"{len(train_rows)} training images with boxes is fewer than one batch of {recipe.batch_size}")
    _seed_all(seed)
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
    record["detector"] = getattr(model, "bocb_info", {"backbone": type(model).__name__})
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    record["params"] = sum(p.numel() for p in model.parameters())

    # The data stays in host memory (a detection set can outgrow the device); batches are copied.
    train_x = train.images[train_rows]
    train_t = [train.targets[i] for i in train_rows]

    optimizer, optimizer_record = build_optimizer(spec, model)
    record["optimizer"] = optimizer_record
    stepper = Stepper(optimizer, spec)
    for group in optimizer.param_groups:
        group["bocb_base_lr"] = group["lr"]
    steps_per_epoch = len(train_rows) // recipe.batch_size  # drop_last, as bocb.trial
    schedule_free = spec.needs_train_eval

    def set_lr(step: int) -> float:
        factor = recipe.lr_factor(step, steps_per_epoch, schedule_free)
        for group in optimizer.param_groups:
            group["lr"] = group["bocb_base_lr"] * factor
        return factor * spec.lr

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]
    bn = [m for m in model.backbone.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
        if recipe.norm_eval else []

    # --- epochs ----------------------------------------------------------------------------------
    seconds = {"train": 0.0, "eval": 0.0}
    check_every = 25 if cuda else 1
    record["status"] = "running"
    lr_now = 0.0
    for epoch in range(recipe.epochs):
        generator = _seed_all(_epoch_seed(seed, epoch))
        model.train()
        for m in bn:
            m.eval()
        stepper.train()
        order = torch.randperm(len(train_rows), generator=generator)
        loss_sum = torch.zeros((), device=device)
        part_sum = torch.zeros(2, device=device)
        _sync(device)
        t0 = time.perf_counter()
        diverged = False
        for i in range(steps_per_epoch):
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            images, targets = _flip(train_x[idx], [train_t[j] for j in idx.tolist()], recipe.flip_prob, generator)
            images = images.to(device, non_blocking=True).float().div_(255)
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            lr_now = set_lr(epoch * steps_per_epoch + i)

            def forward(images: torch.Tensor = images, targets: list = targets) -> torch.Tensor:
                with autocast:
                    losses = model(images, targets)
                return torch.stack([losses["classification"], losses["bbox_regression"]]).float()

            loss, parts = stepper.step(forward, lambda p: p.sum(), params=params, clip_grad_norm=recipe.grad_clip)
            loss_sum += loss
            part_sum += parts
            if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                if not math.isfinite(loss_sum.item()) or loss.item() > LOSS_LIMIT:
                    diverged = True
                    break
            if progress:
                progress({"event": "step", "epoch": epoch, "step": i + 1, "steps": steps_per_epoch})
        _sync(device)
        train_seconds = time.perf_counter() - t0
        seconds["train"] += train_seconds
        steps_done = i + 1
        mean_loss = loss_sum.item() / steps_done
        parts_mean = (part_sum / steps_done).tolist()
        if diverged:
            record["status"] = "diverged"
            record["diverged_epoch"] = epoch + 1
            record["epochs"].append(_row(epoch, mean_loss, parts_mean, None, lr_now, train_seconds, 0.0,
                                         steps_done * recipe.batch_size))
            break
        t1 = time.perf_counter()
        stepper.eval()
        scores = evaluate(model, val, recipe.eval_batch_size, autocast)
        eval_seconds = time.perf_counter() - t1
        seconds["eval"] += eval_seconds
        row = _row(epoch, mean_loss, parts_mean, scores, lr_now, train_seconds, eval_seconds,
                   steps_per_epoch * recipe.batch_size)
        record["epochs"].append(row)
        if progress:
            progress({"event": "epoch", "epoch": epoch, "row": row})
    else:
        record["status"] = "done"
    record["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    images = sum(r["images"] for r in record["epochs"])
    record["train_images_per_second"] = round(images / seconds["train"], 1) if seconds["train"] else None


def _row(epoch: int, train_loss: float, parts: list[float], scores: tuple[float, float, int] | None,
         lr: float, train_seconds: float, eval_seconds: float, images: int) -> dict[str, Any]:
    finite = [v if math.isfinite(v) else None for v in parts]
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss if math.isfinite(train_loss) else None,
        "train_loss_cls": finite[0],
        "train_loss_box": finite[1],
        "map": scores[0] if scores else None,
        "ap50": scores[1] if scores else None,
        "detections": scores[2] if scores else None,
        "lr": lr,
        "seconds_train": round(train_seconds, 3),
        "seconds_eval": round(eval_seconds, 3),
        "images": images,
    }


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
