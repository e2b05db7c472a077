"""COCO-format detection data: validate an annotation file, decode its images, index it.

:func:`load_coco` reads ``annotation_file`` (COCO's JSON layout: ``images``, ``annotations``,
``categories``) and the image files it names under ``images_dir``, and returns a
:class:`DetectionSet`. Every problem with the file is a one-line :class:`CocoFormatError` (a
``ValueError``) that starts with the file's path and names the problem and the offending entry,
so a study fails up front with a message instead of deep inside training or COCOeval.

Choices, all recorded here:

- **Validation.** The file must be a JSON object with lists ``images``, ``annotations`` and
  ``categories``. Images need a unique integer ``id``, a ``file_name`` and positive integer
  ``width``/``height`` that match the decoded file. Categories need a unique integer ``id`` and a
  ``name``. Annotations need a unique integer ``id``, an ``image_id`` and ``category_id`` that
  exist, and a ``bbox`` of 4 finite, non-negative numbers ``[x, y, w, h]`` with ``w > 0`` and
  ``h > 0``. ``iscrowd`` (default 0) must be 0 or 1; ``area`` (default ``w * h``) a non-negative
  number. Boxes reaching past the image border are clipped to it (COCO has a few by a fraction of a
  pixel); one lying wholly outside is an error. After validation, pycocotools' ``COCO`` indexes the
  data (its ``imgToAnns``/``getCatIds``), and the same object scores predictions with COCOeval.
- **Labels.** Category ids (any integers, in any order) map to contiguous labels ``1..K`` in
  ascending id order: ``label = rank of category id + 1``. Label 0 is never a target; it is the
  reserved background slot of torchvision's detection models (their COCO RetinaNet has
  ``num_classes=91`` with ids used directly), so :func:`bocb.transfer.detection.build_detector`
  gives the classifier ``K + 1`` outputs and column 0 is only ever trained as negative.
- **Resizing (``image_size``).** ``None`` keeps every image at its own size, which must then be
  the same for all (they are stacked into one tensor). An integer letterboxes: the image is scaled
  by ``s = image_size / max(width, height)`` (bilinear, antialiased; aspect ratio kept, as mmdet's
  ``keep_ratio=True``), placed at the top-left of an ``image_size`` square, and the rest is padded
  with :data:`PAD_COLOUR`, the mean colour of bocb's default normalisation (CIFAR-100's), so it
  normalises to 0 as mmdet's padding of the normalised image does.
  Boxes are multiplied by the same ``s`` (``DetectionSet.scales`` keeps it per image).
- **Evaluation frame.** The ``coco`` object of a DetectionSet holds the ground truth *in the
  resized frame* (boxes and ``area`` scaled by ``s`` and ``s**2``); predictions are scored there
  without mapping back. IoU, and so AP and AP50, do not change under this scaling; only COCO's
  small/medium/large area ranges would, which is why bocb reports AP and AP50 only.
- **Crowd boxes** (``iscrowd=1``) are left out of the training targets (torchvision's RetinaNet
  has no "ignore" region) and kept in ``coco``, where COCOeval treats them as ignore regions.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pycocotools.coco import COCO
from torchvision.io import ImageReadMode, decode_image

from bocb.data.augment import CIFAR100_MEAN

# Letterbox padding: the mean colour of bocb's default normalisation (CIFAR-100's, which
# bocb.transfer.detection's detectors use too), so padding becomes 0 once normalised.
PAD_COLOUR: tuple[int, int, int] = tuple(round(255 * m) for m in CIFAR100_MEAN)  # type: ignore[assignment]
# torchvision 0.29 deprecates its image codecs for TorchCodec and warns on every call; they stay
# the pinned decoder (bocb.data.readers does the same).
_CODEC_DEPRECATION = "The image decoding and encoding capabilities of "


class CocoFormatError(ValueError):
    """A COCO annotation file or one of its images is unusable; the message is one line."""


@dataclass(frozen=True, eq=False, repr=False)
class DetectionSet:
    """A detection data set in memory, ready for training and COCO evaluation.

    ``images``: ``uint8`` ``(N, 3, S, S)`` on the CPU (or ``(N, 3, H, W)`` when loaded without
    ``image_size``). ``targets[i]``: ``boxes`` ``float32`` ``(n, 4)`` as ``x1, y1, x2, y2`` in
    pixels of ``images[i]``, ``labels`` ``int64`` ``(n,)`` in ``1..K`` (crowd boxes excluded).
    ``image_ids[i]``: the COCO image id of ``images[i]``. ``category_ids[k - 1]`` and
    ``category_names[k - 1]``: the COCO category of label ``k``. ``coco``: pycocotools' COCO with
    the ground truth in the frame of ``images``. ``scales[i]``: resized = original x scale.
    ``source``: the annotation file.
    """

    images: torch.Tensor
    targets: tuple[dict[str, torch.Tensor], ...]
    image_ids: tuple[int, ...]
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    coco: COCO
    scales: tuple[float, ...]
    source: str

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        """K, the number of object categories (the background slot 0 not counted)."""
        return len(self.category_ids)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def num_boxes(self) -> int:
        return sum(len(t["labels"]) for t in self.targets)

    def __repr__(self) -> str:
        return (f"DetectionSet(source={self.source!r}, images={len(self)}, boxes={self.num_boxes}, "
                f"classes={self.num_classes}, image_size={self.image_size})")

    def subset(self, n: int | None, seed: int) -> DetectionSet:
        """``n`` images picked by a ``seed``-ed permutation (CPU generator: the same on every
        machine), kept in their original order, with ``coco`` restricted to them. ``None`` or
        ``n >= len(self)`` returns this set."""
        if n is None or n >= len(self):
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"subset size must be a positive int or None, got {n!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        keep = order[:n].sort().values.tolist()
        ids = {self.image_ids[i] for i in keep}
        data = self.coco.dataset
        sub = {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": [im for im in data["images"] if im["id"] in ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        }
        return DetectionSet(
            images=self.images[keep].contiguous(),
            targets=tuple(self.targets[i] for i in keep),
            image_ids=tuple(self.image_ids[i] for i in keep),
            category_ids=self.category_ids,
            category_names=self.category_names,
            coco=coco_from_dict(sub),
            scales=tuple(self.scales[i] for i in keep),
            source=self.source,
        )


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """pycocotools' COCO indexed from an in-memory dict (its progress prints silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(annotation_file: str | Path, images_dir: str | Path, image_size: int | None) -> DetectionSet:
    """Validate ``annotation_file``, decode its images from ``images_dir``, and index them.

    See the module docstring for the rules; any problem raises :class:`CocoFormatError` whose
    one-line message starts with ``annotation_file``.
    """
    path = Path(annotation_file)
    images_dir = Path(images_dir)

    def fail(problem: str) -> CocoFormatError:
        return CocoFormatError(f"{path}: {problem}".replace("\n", " "))

    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    data = _read_json(path, fail)
    images, categories, annotations = _validate(data, fail)

    # Label k (1..K) <-> k-th smallest category id.
    cat_ids = sorted(categories)
    label_of = {cid: k + 1 for k, cid in enumerate(cat_ids)}
    coco_raw = coco_from_dict(
        {"images": list(images.values()), "annotations": annotations,
         "categories": [categories[c] for c in cat_ids]}
    )

    decoded: list[torch.Tensor] = []
    scales: list[float] = []
    image_ids = sorted(coco_raw.getImgIds())
    for image_id in image_ids:
        info = coco_raw.imgs[image_id]
        pixels = _decode(images_dir / info["file_name"], info, fail)
        if image_size is None:
            decoded.append(pixels)
            scales.append(1.0)
        else:
            img, scale = letterbox(pixels, image_size)
            decoded.append(img)
            scales.append(scale)
    if not decoded:
        raise fail("'images' is empty")
    if image_size is None:
        sizes = {tuple(im.shape[-2:]) for im in decoded}
        if len(sizes) > 1:
            raise fail(f"images have {len(sizes)} different sizes (e.g. {sorted(sizes)[:3]}); "
                       "pass image_size to letterbox them to one square size")

    # Ground truth in the resized frame, for targets and for COCOeval.
    scale_of = dict(zip(image_ids, scales, strict=True))
    out_images = []
    for image_id, pixels in zip(image_ids, decoded, strict=True):
        original = coco_raw.imgs[image_id]
        h, w = pixels.shape[-2:]
        out_images.append({**original, "width": int(w), "height": int(h),
                           "original_width": original["width"], "original_height": original["height"]})
    out_anns = []
    for ann in annotations:
        s = scale_of[ann["image_id"]]
        scaled = dict(ann, bbox=[v * s for v in ann["bbox"]], area=ann["area"] * s * s)
        out_anns.append(scaled)
    coco = coco_from_dict({"images": out_images, "annotations": out_anns,
                           "categories": [categories[c] for c in cat_ids]})

    targets = []
    for image_id in image_ids:
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a["iscrowd"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})

    return DetectionSet(
        images=torch.stack(decoded).contiguous(),
        targets=tuple(targets),
        image_ids=tuple(image_ids),
        category_ids=tuple(cat_ids),
        category_names=tuple(str(categories[c]["name"]) for c in cat_ids),
        coco=coco,
        scales=tuple(scales),
        source=str(path),
    )


def letterbox(pixels: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """``uint8 (3, H, W)`` -> ``uint8 (3, size, size)`` and the scale (see module docstring)."""
    h, w = pixels.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = torch.tensor(PAD_COLOUR, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size).clone()
    if (nh, nw) == (h, w):
        resized = pixels
    else:
        resized = F.interpolate(pixels[None].float(), size=(nh, nw), mode="bilinear",
                                align_corners=False, antialias=True)[0]
        resized = resized.round().clamp(0, 255).to(torch.uint8)
    out[:, :nh, :nw] = resized
    return out, scale


# -- validation ---------------------------------------------------------------------------------


def _read_json(path: Path, fail: Any) -> Any:
    if not path.is_file():
        raise fail("no such annotation file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not valid JSON (not UTF-8 text: {exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _with_ids(data: dict[str, Any], key: str, kind: str, fail: Any):
    """``(where, entry)`` for each entry of ``data[key]``: an object with a unique integer ``id``.
    ``where`` names it for messages, e.g. ``image 7 (images[3])``."""
    seen: set[int] = set()
    for i, entry in enumerate(data[key]):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be an object, got a {type(entry).__name__}")
        if not _is_int(entry.get("id")):
            raise fail(f"{where} has no integer 'id' (got {entry.get('id')!r})")
        if entry["id"] in seen:
            raise fail(f"{kind} {entry['id']} ({where}): duplicate {kind} id {entry['id']}")
        seen.add(entry["id"])
        yield f"{kind} {entry['id']} ({where})", entry


def _validate(data: Any, fail: Any) -> tuple[dict[int, dict], dict[int, dict], list[dict]]:
    """Check the layout; returns images and categories by id, and normalised annotations."""
    if not isinstance(data, dict):
        raise fail(f"top level must be a JSON object with 'images', 'annotations' and 'categories', "
                   f"got a {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise fail(f"missing key(s) {', '.join(repr(k) for k in missing)}: a COCO detection file needs "
                   "'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise fail(f"'{key}' must be a list, got a {type(data[key]).__name__}")

    images: dict[int, dict] = {}
    for where, im in _with_ids(data, "images", "image", fail):
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise fail(f"{where} has no 'file_name'")
        for dim in ("width", "height"):
            if not _is_int(im.get(dim)) or im[dim] < 1:
                raise fail(f"{where} has no positive integer '{dim}' (got {im.get(dim)!r})")
        images[im["id"]] = im

    categories: dict[int, dict] = {}
    for where, cat in _with_ids(data, "categories", "category", fail):
        if not isinstance(cat.get("name"), str):
            raise fail(f"{where} has no 'name'")
        categories[cat["id"]] = cat
    if not categories:
        raise fail("'categories' is empty")

    annotations: list[dict] = []
    for where, ann in _with_ids(data, "annotations", "annotation", fail):
        image_id, cat_id = ann.get("image_id"), ann.get("category_id")
        if not _is_int(image_id) or image_id not in images:
            raise fail(f"{where} refers to unknown image_id {image_id!r}")
        if not _is_int(cat_id) or cat_id not in categories:
            raise fail(f"{where} refers to unknown category_id {cat_id!r}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise fail(f"{where}: bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if min(x, y, w, h) < 0:
            raise fail(f"{where}: bbox has a negative value: {bbox!r}")
        if w == 0 or h == 0:
            raise fail(f"{where}: bbox has zero width or height: {bbox!r}")
        width, height = images[image_id]["width"], images[image_id]["height"]
        if x >= width or y >= height:
            raise fail(f"{where}: bbox {bbox!r} lies outside its {width}x{height} image {image_id}")
        w, h = min(w, width - x), min(h, height - y)  # clip to the image
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            raise fail(f"{where}: iscrowd must be 0 or 1, got {iscrowd!r}")
        area = ann.get("area", w * h)
        if not _is_number(area) or area < 0:
            raise fail(f"{where}: area must be a non-negative number, got {area!r}")
        annotations.append({**ann, "bbox": [x, y, w, h], "iscrowd": iscrowd, "area": float(area)})
    return images, categories, annotations


def _decode(file: Path, info: dict, fail: Any) -> torch.Tensor:
    where = f"image {info['id']}"
    if not file.is_file():
        raise fail(f"{where}: image file {info['file_name']!r} not found in {file.parent}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CODEC_DEPRECATION)  # as bocb.data.readers
            pixels = decode_image(str(file), mode=ImageReadMode.RGB)
    except Exception as exc:  # noqa: BLE001 - any decoder error is the same problem to the user
        raise fail(f"{where}: cannot decode {file} ({type(exc).__name__}: {exc})") from None
    h, w = pixels.shape[-2:]
    if (w, h) != (info["width"], info["height"]):
        raise fail(f"{where}: {file.name} is {w}x{h} but the file says "
                   f"width={info['width']} height={info['height']}")
    return pixels.contiguous()
