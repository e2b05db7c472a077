"""A detection fine-tuning trial: its spec (identity) and how a worker runs it.

:class:`DetectionTrialSpec` is the detection counterpart of :class:`bocb.spec.TrialSpec`: the
pre-trained backbone (network as pre-trained, and :class:`bocb.spec.Pretrained`), the fine-tuning
optimizer, the :class:`~bocb.transfer.detection.DetectionRecipe`, the COCO-format data and the seed.
Its id hashes all of it except file locations: the data enters by the sha256 of its two annotation
files and the image size (the images themselves are not hashed: reading a COCO-sized folder per
trial would cost minutes), the weights by their sha256.

:func:`run_detection_trial` builds the network the trial starts from (the pre-trained backbone,
seeded as :func:`bocb.trial.starting_model`), puts RetinaNet + FPN on it
(:func:`~bocb.transfer.retinanet.build_detector`), fine-tunes it (:func:`~bocb.transfer.detection.run_detection`)
and keeps the detector's final weights. The record speaks the store's language: ``final_top1`` /
``best_top1`` hold box AP (the trial's headline metric, as the report's title says) and each epoch
row's ``test_top1`` its AP (:mod:`bocb.transfer.detection` writes both names). Its weight snapshot measures the backbone's layers inside the detector
(layer names as inside the detector's stage wrapper, prefixed ``body.``), ``moved`` against the pre-trained weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from bocb import checkpoint
from bocb.fencing import Fence
from bocb.optim import OptimizerSpec
from bocb.spec import Pretrained
from bocb.transfer.coco import DetectionSet, load_coco
from bocb.transfer.detection import DetectionRecipe, run_detection
from bocb.transfer.retinanet import build_detector
from bocb.trial import resolve_device
from bocb.zoo import BackboneSpec, classifier_name, init_backbone

TASK = "detection"


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


@dataclass(frozen=True)
class DetectionTrialSpec:
    backbone: BackboneSpec  # the network as pre-trained; its classifier is dropped
    optimizer: OptimizerSpec
    recipe: DetectionRecipe
    data: CocoSpec
    seed: int
    pretrained: Pretrained

    def to_dict(self) -> dict[str, Any]:
        return {"task": TASK, "backbone": self.backbone.to_dict(), "optimizer": self.optimizer.to_dict(),
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
    def from_dict(cls, data: dict[str, Any]) -> DetectionTrialSpec:
        return cls(BackboneSpec.from_dict(data["backbone"]), OptimizerSpec.from_dict(data["optimizer"]),
                   DetectionRecipe.from_dict(data["recipe"]), CocoSpec(**data["data"]), int(data["seed"]),
                   Pretrained(**data["pretrained"]))


def is_detection(spec: dict[str, Any]) -> bool:
    return spec.get("task") == TASK


_SETS: dict[str, tuple[DetectionSet, DetectionSet]] = {}


def _data(spec: CocoSpec) -> tuple[DetectionSet, DetectionSet]:
    """Train and val sets, loaded once per process (a worker runs many trials on the same data)."""
    key = json.dumps(spec.to_dict(), sort_keys=True)
    if key not in _SETS:
        for name in ("train", "val"):
            path = Path(getattr(spec, f"{name}_annotations"))
            if checkpoint.file_sha256(path) != getattr(spec, f"{name}_sha256"):
                raise ValueError(f"{path} changed since the study was planned (sha256 differs)")
        _SETS[key] = (load_coco(spec.train_annotations, spec.train_images, spec.image_size),
                      load_coco(spec.val_annotations, spec.val_images, spec.image_size))
    return _SETS[key]


def starting_detector(spec: DetectionTrialSpec, train: DetectionSet) -> torch.nn.Module:
    """The detector the trial starts from: pre-trained backbone, new FPN and head, seeded."""
    backbone = init_backbone(spec.backbone, spec.seed)
    checkpoint.load_weights(backbone, Path(spec.pretrained.path), skip=classifier_name(backbone),
                               sha256=spec.pretrained.sha256)
    torch.manual_seed(spec.seed)  # the FPN and head's init depend on the seed alone
    height, width = train.image_size
    if height != width:
        raise ValueError(f"training images are {height}x{width}; set [detection] image_size to load them square")
    return build_detector(backbone, train.num_classes, height, spec.recipe.fpn_channels)


def run_detection_trial(spec_dict: dict[str, Any], device: str, artifacts_dir: Path | None,
                        progress=None, fence: Fence | None = None) -> dict[str, Any]:
    """Run one detection fine-tuning trial; always returns a record (failures included). Its
    final weights go to ``artifacts_dir/<trial_id>/`` (nothing is kept when it is None), only
    while ``fence``'s claim is current when one is given (:mod:`bocb.fencing`)."""
    spec = DetectionTrialSpec.from_dict(spec_dict)
    base = {"trial_id": spec.trial_id, "spec": spec_dict, "status": "failed", "epochs": []}
    try:
        dev = resolve_device(device)
        train, val = _data(spec.data)
        detector = starting_detector(spec, train)
    except Exception as exc:  # noqa: BLE001 - no device, data or weights: a failed trial
        return {**base, "error": f"{type(exc).__name__}: {exc}"}
    record = {**base, **run_detection(detector, spec.optimizer, train, val, spec.recipe, spec.seed, dev, progress)}
    record["final_top1"], record["best_top1"] = record["final_map"], record["best_map"]
    if artifacts_dir is not None and record["status"] in ("done", "diverged"):
        detector = detector.to("cpu")
        path = Path(artifacts_dir) / spec.trial_id / "final.safetensors"
        checkpoint.save_weights(path, detector, metadata={"trial_id": spec.trial_id, "spec": json.dumps(spec_dict)},
                                fence=fence)
        record["artifacts"] = {"final_weights": str(path)}
        record["diagnostics"] = _snapshot(spec, path, lambda: detector, train)
    return record


def detection_snapshot(trial_id: str, path: str | Path, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The weight snapshot of a detection trial's kept weights (for ``bocb diagnose``)."""
    spec = DetectionTrialSpec.from_dict(spec_dict)

    def load() -> torch.nn.Module:
        detector = starting_detector(spec, _data(spec.data)[0])
        detector.load_state_dict(load_file(str(path), device="cpu"))
        return detector

    return _snapshot(spec, Path(path), load, None)


def _snapshot(spec: DetectionTrialSpec, path: Path, trained, train: DetectionSet | None) -> dict[str, Any]:
    """The backbone's layers inside the detector, ``moved`` against the pre-trained weights."""
    from bocb.diagnostics.snapshot import measure, settings

    snap = {"snapshot_id": spec.trial_id, "source": "final", "backbone": spec.backbone.short,
            "trial_id": spec.trial_id, "seed": spec.seed, "path": str(path), "settings": settings(),
            "layers": [], "error": None, "seconds": None}
    try:
        reference = starting_detector(spec, train if train is not None else _data(spec.data)[0])
        snap["layers"], snap["seconds"] = measure(trained().backbone.body, reference.backbone.body)
    except Exception as exc:  # noqa: BLE001 - diagnostics never fail a trial
        snap["error"] = f"{type(exc).__name__}: {exc}"
    return snap
