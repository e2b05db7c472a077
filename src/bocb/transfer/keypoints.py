"""COCO-format keypoint data for top-down 2D pose: validate, crop every person box, index.

:func:`load_keypoints` reads a COCO keypoints annotation file (``images``, ``annotations`` with
``keypoints``, ``categories`` with ``keypoints`` names) and the images it names, and returns a
:class:`PoseSet` of one crop per annotated instance. Every problem with the file is a one-line
:class:`~bocb.transfer.coco.CocoFormatError` that starts with the file's path and names the entry.

Choices, all recorded here:

- **Validation.** The file must be a JSON object with lists ``images``, ``annotations`` and
  ``categories``; exactly one category has a non-empty ``keypoints`` list of distinct names (COCO's
  ``person``; its K names fix the keypoint order). Images need a unique integer ``id``, a
  ``file_name`` and positive integer ``width``/``height`` that match the decoded file.
  Annotations need a unique integer ``id``, an existing ``image_id``, the keypoint category's
  ``category_id``, a ``bbox`` of 4 finite non-negative numbers with ``w, h > 0``, and
  ``keypoints``: 3K finite numbers ``x, y, v`` with ``v`` in {0, 1, 2}. ``num_keypoints`` (default:
  the count of ``v > 0``), ``iscrowd`` (0 or 1) and ``area`` (default ``w * h``) are checked when
  present. Instances with no labelled keypoint, and crowd instances, get no crop (as in the
  SimpleBaseline code); COCOeval still sees them in ``coco``.
- **Top-down crops** (SimpleBaseline, Xiao et al. 2018): the box is widened or heightened to the
  input's aspect ratio about its centre, enlarged 1.25x, cropped (zero padding past the image
  border) and resized to ``input_size`` (bilinear, antialiased). Keypoints follow: pixel centres,
  ``x' = (x - left) * W / crop_w`` in the crop's pixel frame. The ground-truth box is the person
  box at test time too (the paper's numbers use a person detector's boxes; bocb has none, so its
  keypoint AP is the "GT boxes" number, higher than a detector-box one).
- **OKS sigmas.** COCO's 17 per-keypoint sigmas when the category's names are COCO's 17; else the
  category's own ``sigmas`` list when it has one (not a COCO field: bocb's synthetic set writes it);
  else 0.05 for every keypoint, stated in the record.
- **Flips.** Keypoints named ``left_*`` / ``right_*`` form the mirror pairs a horizontal flip
  swaps; unpaired names stay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO

from bocb.transfer.coco import CocoFormatError, _decode, _read_json, _validate, coco_from_dict

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107,
               0.107, 0.087, 0.087, 0.089, 0.089)
DEFAULT_SIGMA = 0.05
BOX_PADDING = 1.25


@dataclass(frozen=True, eq=False, repr=False)
class PoseSet:
    """One crop per annotated instance, ready for training and COCO keypoint evaluation.

    ``images``: ``uint8`` ``(N, 3, H, W)``; ``joints``: ``float32`` ``(N, K, 2)`` in crop pixels;
    ``visible``: ``float32`` ``(N, K)``, 1 where a keypoint is labelled (v > 0); ``crops``:
    ``float32`` ``(N, 4)`` as ``left, top, width, height`` of each crop in its image's frame;
    ``image_ids`` / ``category_id``: for COCO results; ``coco``: pycocotools' COCO of the file (the
    original frame); ``names``, ``flip_pairs``, ``sigmas``: the keypoints' order, mirror pairs and
    OKS sigmas.
    """

    images: torch.Tensor
    joints: torch.Tensor
    visible: torch.Tensor
    crops: torch.Tensor
    image_ids: tuple[int, ...]
    category_id: int
    coco: COCO
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, n: int | None, seed: int) -> PoseSet:
        """``n`` instances picked by a ``seed``-ed permutation, in their original order."""
        if n is None or n >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return PoseSet(self.images[index], self.joints[index], self.visible[index], self.crops[index],
                       tuple(self.image_ids[i] for i in index.tolist()), self.category_id, self.coco, self.names,
                       self.flip_pairs, self.sigmas, self.source)


def load_keypoints(annotation_file: str | Path, images_dir: str | Path, input_size: tuple[int, int]) -> PoseSet:
    """Validate ``annotation_file`` (COCO's detection layout checks, then the keypoint fields),
    decode its images and crop every annotated instance (see the module doc)."""
    path = Path(annotation_file)

    def fail(problem: str) -> CocoFormatError:
        return CocoFormatError(f"{path}: {problem}".replace("\n", " "))

    data = _read_json(path, fail)
    images, categories, annotations = _validate(data, fail)
    with_kp = [c for c in categories.values() if c.get("keypoints")]
    if len(with_kp) != 1:
        raise fail(f"expected exactly one category with a 'keypoints' list of names, found {len(with_kp)}")
    category = with_kp[0]
    names = category["keypoints"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
        raise fail(f"category {category['id']}: 'keypoints' must be a list of distinct names")
    k = len(names)
    for a in annotations:
        _check_keypoints(a, category["id"], k, fail)
    sigmas = _sigmas(category, names, fail)
    height, width = input_size
    crops_img, joints, visible, crops, ids = [], [], [], [], []
    decoded: dict[int, torch.Tensor] = {}
    for a in sorted(annotations, key=lambda a: a["id"]):
        kp = torch.tensor(a["keypoints"], dtype=torch.float32).view(k, 3)
        if a["iscrowd"] or not (kp[:, 2] > 0).any():
            continue
        info = images[a["image_id"]]
        if a["image_id"] not in decoded:
            decoded[a["image_id"]] = _decode(Path(images_dir) / info["file_name"], info, fail)
        left, top, cw, ch = _crop_box(a["bbox"], width / height)
        crops_img.append(_crop(decoded[a["image_id"]], left, top, cw, ch, input_size))
        joints.append(torch.stack([(kp[:, 0] - left) * width / cw, (kp[:, 1] - top) * height / ch], dim=1))
        visible.append((kp[:, 2] > 0).float())
        crops.append(torch.tensor([left, top, cw, ch], dtype=torch.float32))
        ids.append(int(a["image_id"]))
    if not crops_img:
        raise fail("no annotation has a labelled keypoint")
    coco = coco_from_dict({"images": list(images.values()), "annotations": annotations,
                           "categories": list(categories.values())})
    return PoseSet(torch.stack(crops_img), torch.stack(joints), torch.stack(visible), torch.stack(crops),
                   tuple(ids), int(category["id"]), coco, tuple(names), _flip_pairs(names), sigmas, str(path))


def _check_keypoints(a: dict[str, Any], category_id: int, k: int, fail: Any) -> None:
    place = f"annotation {a['id']}"
    if a["category_id"] != category_id:
        raise fail(f"{place}: category_id {a['category_id']} is not the keypoint category {category_id}")
    kp = a.get("keypoints")
    if not (isinstance(kp, list) and len(kp) == 3 * k and all(_finite(v) for v in kp)):
        got = len(kp) if isinstance(kp, list) else type(kp).__name__
        raise fail(f"{place}: keypoints must be {3 * k} finite numbers (x, y, v for {k} keypoints), got {got}")
    if any(v not in (0, 1, 2) for v in kp[2::3]):
        raise fail(f"{place}: keypoint visibility v must be 0, 1 or 2")
    labelled = sum(1 for v in kp[2::3] if v > 0)
    if a.setdefault("num_keypoints", labelled) != labelled:
        raise fail(f"{place}: num_keypoints is {a['num_keypoints']} but {labelled} keypoints are labelled")
    if a["area"] <= 0:
        raise fail(f"{place}: area must be positive (OKS divides by it), got {a['area']}")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sigmas(category: dict[str, Any], names: list[str], fail: Any) -> tuple[float, ...]:
    if tuple(names) == COCO_KEYPOINTS:
        return COCO_SIGMAS
    given = category.get("sigmas")
    if given is None:
        return (DEFAULT_SIGMA,) * len(names)
    if not (isinstance(given, list) and len(given) == len(names) and all(_finite(s) and s > 0 for s in given)):
        raise fail(f"category {category['id']}: sigmas must be {len(names)} positive numbers")
    return tuple(float(s) for s in given)


def _flip_pairs(names: list[str]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    return tuple((i, index["right_" + n[5:]]) for i, n in enumerate(names)
                 if n.startswith("left_") and "right_" + n[5:] in index)


def _crop_box(box: list[float], aspect: float) -> tuple[int, int, int, int]:
    """The integer crop (left, top, width, height): the box about its centre at the input's aspect
    ratio (width / height), enlarged by :data:`BOX_PADDING`."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * BOX_PADDING, h * BOX_PADDING
    cw, ch = max(1, round(w)), max(1, round(h))
    return round(cx - cw / 2), round(cy - ch / 2), cw, ch


def _crop(image: torch.Tensor, left: int, top: int, cw: int, ch: int, size: tuple[int, int]) -> torch.Tensor:
    _, h, w = image.shape
    canvas = torch.zeros((3, ch, cw), dtype=torch.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + cw, w), min(top + ch, h)
    if x1 > x0 and y1 > y0:
        canvas[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    out = F.interpolate(canvas[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def oks_sigmas(data: PoseSet) -> np.ndarray:
    return np.asarray(data.sigmas, dtype=np.float64)
