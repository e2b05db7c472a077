"""A small synthetic COCO-format detection set: solid shapes pasted on real photographs.

:func:`make_synthetic_coco` writes PNG images and a valid COCO annotation file, so the detection
path (:func:`bocb.transfer.coco.load_coco`, :mod:`bocb.transfer.detection`) can be exercised end
to end without COCO. How an image is made:

- **Background**: one of ``backgrounds`` (e.g. the bundled real CIFAR-10 sample), picked at
  random, upsampled bilinearly to ``image_size`` square.
- **Objects**: 1 to 3, each a shape from ``shapes`` (``square``: fills its box; ``disk``: the
  disk inscribed in its box; ``triangle``: apex at the top centre, base on the bottom edge), of
  side ``U[0.25, 0.5] x image_size`` pixels, at a random position wholly inside the image, in one
  random solid colour (each channel ``U{0..255}``, redrawn until the colour is at least 96 away, in
  max-channel distance, from the background's mean under the shape so it stands out). Colour says
  nothing about the class; the shape does. Boxes do not overlap one another (rejection sampling;
  an object that finds no free place in 50 tries is left out, so an image has at least one),
  which keeps every ground-truth box fully visible.
- **Annotations**: ``bbox`` is the tight pixel box ``[x, y, w, h]`` (pixel ``i`` spans
  ``[i, i + 1)``), ``area`` the number of pixels the shape covers, ``iscrowd`` 0. Category ids are
  ``1..len(shapes)`` in the order of ``shapes``, named after them; image ids are ``1..n_images``
  and files ``000001.png``...

Everything is drawn from one ``torch.Generator`` seeded with ``seed``, so the same arguments
give byte-identical files on every machine.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import write_png

SHAPES = ("square", "disk", "triangle")
_MIN_CONTRAST = 96
_PLACEMENT_TRIES = 50


def make_synthetic_coco(
    out_dir: str | Path,
    backgrounds: torch.Tensor,
    n_images: int,
    image_size: int = 64,
    shapes: tuple[str, ...] = SHAPES,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``n_images`` PNGs under ``out_dir/images`` and ``out_dir/annotations.json``.

    ``backgrounds``: ``uint8`` ``(N, 3, H, W)``. Returns ``(images_dir, annotation_file)``.
    """
    _check_backgrounds(backgrounds)
    bad = [s for s in shapes if s not in SHAPES]
    if bad or not shapes or len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes must be distinct names from {', '.join(SHAPES)}, got {shapes!r}")
    paint = _Painter.start(out_dir, backgrounds, n_images, image_size, seed)
    randint = paint.randint
    images, annotations = [], []
    for index in range(n_images):
        image_id = index + 1
        canvas = paint.canvas()
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(randint(1, 3)):
            label = randint(0, len(shapes) - 1)
            for _try in range(_PLACEMENT_TRIES):
                side = randint(round(0.25 * image_size), round(0.5 * image_size))
                box = paint.place(side, side, placed)
                if box is not None:
                    break
            else:
                continue
            mask = _mask(shapes[label], box, paint.xx, paint.yy)
            paint.paint(canvas, mask)
            placed.append(box)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(mask.sum()), "iscrowd": 0,
            })
        images.append(paint.save(canvas, image_id))

    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(shapes)]
    annotation_file = Path(out_dir) / "annotations.json"
    annotation_file.write_text(json.dumps(
        {"info": {"description": f"bocb synthetic shapes, seed {seed}"}, "images": images,
         "annotations": annotations, "categories": categories}, indent=1))
    return paint.images_dir, annotation_file


def _check_backgrounds(backgrounds: torch.Tensor) -> None:
    if not (isinstance(backgrounds, torch.Tensor) and backgrounds.dtype == torch.uint8
            and backgrounds.dim() == 4 and backgrounds.shape[1] == 3 and len(backgrounds)):
        raise ValueError("backgrounds must be a non-empty uint8 tensor (N, 3, H, W)")


class _Painter:
    """What both synthetic sets share: seeded draws, a real background per image, a solid colour
    that stands out from what it covers, PNG files."""

    @classmethod
    def start(cls, out_dir: str | Path, backgrounds: torch.Tensor, n_images: int, image_size: int,
              seed: int) -> _Painter:
        """Check the arguments both sets share and make ``out_dir/images``."""
        _check_backgrounds(backgrounds)
        if n_images < 1 or image_size < 16:
            raise ValueError(f"need n_images >= 1 and image_size >= 16, got {n_images} and {image_size}")
        images_dir = Path(out_dir) / "images"
        images_dir.mkdir(parents=True, exist_ok=True)
        return cls(backgrounds, image_size, seed, images_dir)

    def __init__(self, backgrounds: torch.Tensor, image_size: int, seed: int, images_dir: Path):
        self.backgrounds, self.size, self.images_dir = backgrounds, image_size, images_dir
        self.gen = torch.Generator().manual_seed(seed)
        self.yy, self.xx = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")

    def randint(self, low: int, high: int) -> int:  # inclusive bounds
        return int(torch.randint(low, high + 1, (), generator=self.gen))

    def place(self, w: int, h: int, placed: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
        """A ``w`` x ``h`` box wholly inside the image and clear of ``placed``, or None after
        :data:`_PLACEMENT_TRIES` tries; ``w``/``h`` are redrawn by the caller's ``size`` per try."""
        x0, y0 = self.randint(0, self.size - w), self.randint(0, self.size - h)
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1] for p in placed):
            return box
        return None

    def canvas(self) -> torch.Tensor:
        bg = self.backgrounds[self.randint(0, len(self.backgrounds) - 1)]
        return F.interpolate(bg[None].float(), size=(self.size, self.size), mode="bilinear",
                             align_corners=False)[0].round().clamp(0, 255)

    def paint(self, canvas: torch.Tensor, mask: torch.Tensor) -> None:
        under = canvas[:, mask].mean(dim=1)
        colour = torch.randint(0, 256, (3,), generator=self.gen).float()
        while (colour - under).abs().max() < _MIN_CONTRAST:
            colour = torch.randint(0, 256, (3,), generator=self.gen).float()
        canvas[:, mask] = colour[:, None]

    def save(self, canvas: torch.Tensor, image_id: int) -> dict:
        file_name = f"{image_id:06d}.png"
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its codecs (TorchCodec); still the pinned one (bocb.data.readers).
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of ")
            write_png(canvas.to(torch.uint8), str(self.images_dir / file_name))
        return {"id": image_id, "file_name": file_name, "width": self.size, "height": self.size}


def _mask(shape: str, box: tuple[int, int, int, int], xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    x0, y0, x1, y1 = box
    side = x1 - x0
    # Pixel centres, relative to the box.
    u, v = xx + 0.5 - x0, yy + 0.5 - y0
    inside = (u >= 0) & (u < side) & (v >= 0) & (v < side)
    if shape == "square":
        return inside
    if shape == "disk":
        r = side / 2
        return inside & ((u - r) ** 2 + (v - r) ** 2 <= r * r)
    # triangle: apex (side/2, 0), base from (0, side) to (side, side); half-width grows with v.
    return inside & ((u - side / 2).abs() <= v / 2 + 0.5)


KEYPOINTS = ("apex", "left_base", "right_base", "centroid")
KEYPOINT_SIGMA = 0.05  # OKS sigma for every keypoint of the synthetic set (COCO's range: 0.025-0.107)


def make_synthetic_keypoints(
    out_dir: str | Path, backgrounds: torch.Tensor, n_images: int, image_size: int = 64, seed: int = 0,
) -> tuple[Path, Path]:
    """A COCO keypoints set: one or two triangles per image, each an annotated instance with four
    landmarks (:data:`KEYPOINTS`). A triangle's base spans the bottom of its box and its apex sits
    anywhere along the top edge (so the apex is not given by the box), drawn in one solid colour
    that stands out from the real background as in :func:`make_synthetic_coco`. Keypoints are in
    continuous pixel coordinates (``x`` from the left edge of pixel 0), all labelled visible (2);
    the category is named ``figure`` and carries ``sigmas`` (bocb's loader reads them for OKS).
    Writes ``out_dir/images/*.png`` and ``out_dir/annotations.json``; returns both paths."""
    paint = _Painter.start(out_dir, backgrounds, n_images, image_size, seed)
    randint = paint.randint
    images, annotations = [], []
    for index in range(n_images):
        image_id = index + 1
        canvas = paint.canvas()
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(randint(1, 2)):
            for _try in range(_PLACEMENT_TRIES):
                w, h = (randint(round(0.3 * image_size), round(0.6 * image_size)) for _ in range(2))
                box = paint.place(w, h, placed)
                if box is not None:
                    break
            else:
                continue
            x0, y0 = box[0], box[1]
            apex_x = x0 + float(torch.rand((), generator=paint.gen)) * w
            # Inside the triangle (apex_x, y0), (x0, y0 + h), (x0 + w, y0 + h), at pixel centres.
            u, v = paint.xx + 0.5, paint.yy + 0.5
            t = (v - y0) / h  # 0 at the apex row, 1 at the base
            left = apex_x + (x0 - apex_x) * t
            right = apex_x + (x0 + w - apex_x) * t
            mask = (t >= 0) & (t <= 1) & (u >= left) & (u <= right)
            if not mask.any():
                continue
            paint.paint(canvas, mask)
            placed.append(box)
            points = [(apex_x, y0), (x0, y0 + h), (x0 + w, y0 + h), ((apex_x + 2 * x0 + w) / 3, y0 + 2 * h / 3)]
            flat: list[float] = []
            for px, py in points:
                flat += [round(float(px), 3), round(float(py), 3), 2]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": [x0, y0, w, h],
                "area": int(mask.sum()), "iscrowd": 0, "keypoints": flat, "num_keypoints": len(points),
            })
        images.append(paint.save(canvas, image_id))
    category = {"id": 1, "name": "figure", "supercategory": "shape", "keypoints": list(KEYPOINTS),
                "skeleton": [[1, 2], [1, 3], [2, 3]], "sigmas": [KEYPOINT_SIGMA] * len(KEYPOINTS)}
    annotation_file = Path(out_dir) / "annotations.json"
    annotation_file.write_text(json.dumps(
        {"info": {"description": f"bocb synthetic keypoints, seed {seed}"}, "images": images,
         "annotations": annotations, "categories": [category]}, indent=1))
    return paint.images_dir, annotation_file
