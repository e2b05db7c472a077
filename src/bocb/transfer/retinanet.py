"""The detector of the detection transfer: torchvision's RetinaNet + FPN on a zoo backbone's stages.

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
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

from bocb.data.augment import CIFAR100_MEAN, CIFAR100_STD

NUM_LEVELS = 3  # C3-C5 from the backbone; P6 and P7 from the FPN's extra block


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


def _stride(image_size: int | tuple[int, int], height: int) -> int:
    return 2 ** round(math.log2(_hw(image_size)[0] / height))


def _hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


def _pick(shapes: list[tuple[int, ...]], image_size: int | tuple[int, int], levels: int = NUM_LEVELS) -> list[int]:
    """Positions of the last map at each distinct stride, keeping the last ``levels`` strides."""
    last: dict[int, int] = {}
    for i, shape in enumerate(shapes):
        last[_stride(image_size, shape[-2])] = i
    return [last[s] for s in sorted(last)][-levels:]


def _dry(fn: Callable[[torch.Tensor], Any], model: nn.Module, image_size: int | tuple[int, int]) -> Any:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        return fn(torch.randn(1, 3, *_hw(image_size), device=device))


def stage_features(model: nn.Module, image_size: int | tuple[int, int], task: str = "detector",
                   levels: int = NUM_LEVELS) -> tuple[StageFeatures, dict[str, Any]]:
    """A backbone's last ``levels`` stage maps for ``image_size`` (square, or ``(height, width)``)
    input, read by a dry run (see the module doc); ``model`` is modified (head dropped, resized)."""
    return _stage_features(model, image_size, f"a {task} on {type(model).__name__}", levels)  # "a pose network on X"


def _stage_features(model: nn.Module, image_size: int | tuple[int, int], name: str,
                    levels: int = NUM_LEVELS) -> tuple[StageFeatures, dict[str, Any]]:
    refuse = f"cannot build {name}" if name.startswith("a ") else f"cannot build a detector on {name}"
    if hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers"):
        size = _fixed_input_size(model)
        if size is not None and (size, size) != _hw(image_size):
            if not hasattr(model, "set_input_size"):
                raise ValueError(f"{refuse}: it takes {size}px input only and has no set_input_size; "
                                 f"build it for image_size={image_size}")
            model.set_input_size(img_size=_hw(image_size))
        try:
            maps = _dry(lambda x: model.forward_intermediates(x, intermediates_only=True), model, image_size)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{refuse}: its forward_intermediates fails on {image_size}px input "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from None
        picks = _pick([tuple(m.shape) for m in maps], image_size, levels)
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
        picks = _pick([s for _, s in seen], image_size, levels)
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
