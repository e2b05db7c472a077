"""Downstream fine-tuning trials on COCO-format data (detection, 2D pose): their spec and their run.

:class:`CocoTrialSpec` is the downstream counterpart of :class:`bocb.spec.TrialSpec`: the task, the
pre-trained backbone (network as pre-trained, and :class:`bocb.spec.Pretrained`), the fine-tuning
optimizer, the task's recipe, the COCO-format data and the seed. Its id hashes all of it except
file locations: the data enters by the sha256 of its two annotation files and the image size (the
images themselves are not hashed: reading a COCO-sized folder per trial would cost minutes), the
weights by their sha256.

A task here is a :class:`CocoTask`: how to load its data, build its network on the pre-trained
backbone (RetinaNet + FPN, :mod:`bocb.transfer.detection`; SimpleBaseline,
:mod:`bocb.transfer.pose`), fine-tune it (through the one training loop) and find the backbone
inside the network for the weight diagnostics. :func:`execute` (the entry both register in
:mod:`bocb.tasks`) builds the network the trial starts from (the pre-trained backbone, seeded as
:func:`bocb.networks.starting_model`), fine-tunes it in ``artifacts/<trial_id>/`` (checkpoints,
resume, final weights) and measures the backbone's layers (names as inside the network, ``moved``
against the pre-trained weights). The record's ``final_score`` / ``best_score`` are the task's
headline metric (box AP, keypoint AP; :mod:`bocb.records`), never named top-1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from bocb import checkpoint
from bocb.engine import LoopOptions, resolve_device
from bocb.fencing import Fence, fence_for
from bocb.optim import OptimizerSpec
from bocb.spec import Pretrained
from bocb.zoo import BackboneSpec, classifier_name, init_backbone


@dataclass(frozen=True)
class CocoSpec:
    """COCO-format train and validation sets; ``*_sha256`` are the annotation files' digests."""

    train_annotations: str
    train_images: str
    val_annotations: str
    val_images: str
    image_size: int | None
    train_sha256: str
    val_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def at(cls, train_annotations: Path, train_images: Path, val_annotations: Path, val_images: Path,
           image_size: int | None) -> CocoSpec:
        return cls(str(train_annotations), str(train_images), str(val_annotations), str(val_images), image_size,
                   checkpoint.file_sha256(train_annotations), checkpoint.file_sha256(val_annotations))

    def check_unchanged(self) -> None:
        for name in ("train", "val"):
            path = Path(getattr(self, f"{name}_annotations"))
            if checkpoint.file_sha256(path) != getattr(self, f"{name}_sha256"):
                raise ValueError(f"{path} changed since the study was planned (sha256 differs)")


@dataclass(frozen=True)
class CocoTask:
    """What differs between the COCO-data tasks (see the module doc). ``load(data, recipe)`` ->
    ``(train, val)``; ``build(backbone, train, recipe)`` -> the network; ``run(network, optimizer,
    train, val, recipe, seed, device, progress, options=, run_id=)`` -> record; ``body(network)``
    -> the backbone inside it; ``final`` / ``best``: the record keys of the headline metric."""

    name: str
    recipe: Callable[[dict[str, Any]], Any]
    load: Callable[[CocoSpec, Any], tuple[Any, Any]]
    build: Callable[[torch.nn.Module, Any, Any], torch.nn.Module]
    run: Callable[..., dict[str, Any]]
    body: Callable[[torch.nn.Module], torch.nn.Module]
    final: str
    best: str


def _detection() -> CocoTask:
    from bocb.transfer.coco import load_coco
    from bocb.transfer.detection import DetectionRecipe, run_detection
    from bocb.transfer.retinanet import build_detector

    def build(backbone: torch.nn.Module, train: Any, recipe: Any) -> torch.nn.Module:
        height, width = train.image_size
        if height != width:
            raise ValueError(f"training images are {height}x{width}; set [detection] image_size to load them square")
        return build_detector(backbone, train.num_classes, height, recipe.fpn_channels)

    return CocoTask(
        "detection", DetectionRecipe.from_dict,
        lambda d, r: (load_coco(d.train_annotations, d.train_images, d.image_size),
                      load_coco(d.val_annotations, d.val_images, d.image_size)),
        build, run_detection, lambda net: net.backbone.body, "final_map", "best_map")


def _pose() -> CocoTask:
    from bocb.transfer.keypoints import load_keypoints
    from bocb.transfer.pose import PoseRecipe, build_pose_net, run_pose

    return CocoTask(
        "pose", PoseRecipe.from_dict,
        lambda d, r: (load_keypoints(d.train_annotations, d.train_images, r.input_size),
                      load_keypoints(d.val_annotations, d.val_images, r.input_size)),
        lambda backbone, train, r: build_pose_net(backbone, len(train.names), r.input_size, r.head_channels),
        run_pose, lambda net: net.body, "final_ap", "best_ap")


COCO_TASKS: dict[str, Callable[[], CocoTask]] = {"detection": _detection, "pose": _pose}


def coco_task(name: str) -> CocoTask:
    if name not in COCO_TASKS:
        raise ValueError(f"unknown downstream task {name!r}: valid: {', '.join(COCO_TASKS)}")
    return COCO_TASKS[name]()


@dataclass(frozen=True)
class CocoTrialSpec:
    backbone: BackboneSpec  # the network as pre-trained; its classifier is dropped
    optimizer: OptimizerSpec
    recipe: Any  # the task's recipe (DetectionRecipe, PoseRecipe)
    data: CocoSpec
    seed: int
    pretrained: Pretrained
    task: str = "detection"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "backbone": self.backbone.to_dict(), "optimizer": self.optimizer.to_dict(),
                "recipe": self.recipe.to_dict(), "data": self.data.to_dict(), "seed": self.seed,
                "pretrained": self.pretrained.to_dict()}

    @property
    def trial_id(self) -> str:
        identity = self.to_dict()
        identity["pretrained"] = {k: v for k, v in identity["pretrained"].items() if k != "path"}
        identity["data"] = {k: v for k, v in identity["data"].items() if k in ("image_size", "train_sha256", "val_sha256")}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CocoTrialSpec:
        task = coco_task(data["task"])
        return cls(BackboneSpec.from_dict(data["backbone"]), OptimizerSpec.from_dict(data["optimizer"]),
                   task.recipe(data["recipe"]), CocoSpec(**data["data"]), int(data["seed"]),
                   Pretrained(**data["pretrained"]), data["task"])


_SETS: dict[str, tuple[Any, Any]] = {}


def _data(spec: CocoTrialSpec, task: CocoTask) -> tuple[Any, Any]:
    """Train and val sets, loaded once per process (a worker runs many trials on the same data)."""
    key = json.dumps([spec.task, spec.data.to_dict(), spec.recipe.to_dict().get("input_size")], sort_keys=True)
    if key not in _SETS:
        spec.data.check_unchanged()
        _SETS[key] = task.load(spec.data, spec.recipe)
    return _SETS[key]


def starting_network(spec: CocoTrialSpec, task: CocoTask, train: Any) -> torch.nn.Module:
    """The network the trial starts from: pre-trained backbone, the task's new layers, seeded."""
    backbone = init_backbone(spec.backbone, spec.seed)
    checkpoint.load_weights(backbone, Path(spec.pretrained.path), skip=classifier_name(backbone),
                            sha256=spec.pretrained.sha256)
    torch.manual_seed(spec.seed)  # the new layers' init depends on the seed alone
    return task.build(backbone, train, spec.recipe)


def run_coco_trial(spec_dict: dict[str, Any], device: str, artifacts_dir: Path | None,
                   progress=None, fence: Fence | None = None, checkpoint_every: int = 1) -> dict[str, Any]:
    """Run one downstream fine-tuning trial; always returns a record (failures included). Its
    checkpoints and final weights go to ``artifacts_dir/<trial_id>/`` (nothing is kept when it is
    None), so a killed trial resumes like a classification one."""
    spec = CocoTrialSpec.from_dict(spec_dict)
    base = {"trial_id": spec.trial_id, "spec": spec_dict, "status": "failed", "epochs": []}
    try:
        task = coco_task(spec.task)
        dev = resolve_device(device)
        train, val = _data(spec, task)
        network = starting_network(spec, task, train)
    except Exception as exc:  # noqa: BLE001 - no device, data or weights: a failed trial
        return {**base, "error": f"{type(exc).__name__}: {exc}"}
    work = Path(artifacts_dir) / spec.trial_id if artifacts_dir is not None else None
    # Detection and pose run uncompiled (torchvision's detection models do not compile cleanly).
    options = LoopOptions(work_dir=work, weights_metadata={"spec": json.dumps(spec_dict)}, fence=fence,
                          checkpoint_every=checkpoint_every, stop_at_epoch=spec_dict.get("stop_at_epoch"))
    record = {**base, **task.run(network, spec.optimizer, train, val, spec.recipe, spec.seed, dev, progress,
                                 options=options, run_id=spec.trial_id)}
    path = (record.get("artifacts") or {}).get("final_weights")
    if path:
        network = network.to("cpu")
        record["diagnostics"] = _snapshot(spec, task, Path(path), lambda: network, train)
    return record


def execute(spec_dict: dict[str, Any], config: Any, device: str | None = None, progress=None,
            claim: str | None = None) -> dict[str, Any]:
    """The entry of the detection and pose tasks in :mod:`bocb.tasks` (see :func:`run_coco_trial`)."""
    trial_id = CocoTrialSpec.from_dict(spec_dict).trial_id
    return run_coco_trial(spec_dict, device or config.device, Path(config.artifacts_dir), progress,
                          fence=fence_for(config.artifacts_dir, trial_id, claim),
                          checkpoint_every=config.checkpoint_every)


def coco_snapshot(trial_id: str, path: str | Path, spec_dict: dict[str, Any], conv: str | None = None) -> dict[str, Any]:
    """The weight snapshot of a downstream trial's kept weights (for ``bocb diagnose``)."""
    spec = CocoTrialSpec.from_dict(spec_dict)
    task = coco_task(spec.task)

    def load() -> torch.nn.Module:
        network = starting_network(spec, task, _data(spec, task)[0])
        network.load_state_dict(load_file(str(path), device="cpu"))
        return network

    return _snapshot(spec, task, Path(path), load, None, conv)


def _snapshot(spec: CocoTrialSpec, task: CocoTask, path: Path, trained, train: Any,
              conv: str | None = None) -> dict[str, Any]:
    """The backbone's layers inside the network, ``moved`` against the pre-trained weights."""
    from bocb.diagnostics.metrics import DEFAULT_CONV
    from bocb.diagnostics.snapshot import measure, settings

    conv = conv or DEFAULT_CONV
    snap = {"snapshot_id": spec.trial_id, "source": "final", "backbone": spec.backbone.short,
            "trial_id": spec.trial_id, "seed": spec.seed, "path": str(path), "settings": settings(conv),
            "layers": [], "error": None, "seconds": None}
    try:
        reference = starting_network(spec, task, train if train is not None else _data(spec, task)[0])
        snap["layers"], snap["seconds"] = measure(task.body(trained()), task.body(reference), conv)
    except Exception as exc:  # noqa: BLE001 - diagnostics never fail a trial
        snap["error"] = f"{type(exc).__name__}: {exc}"
    return snap
