"""The detection downstream path: COCO-format loading and validation, the synthetic shapes set,
RetinaNet + FPN on zoo backbones, and a full fine-tuning run scored by COCOeval."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torchvision
from torchvision.io import decode_image, write_png

from bocb.data import DatasetSpec, load_dataset
from bocb.optim import resolve_optimizer
from bocb.transfer.coco import PAD_COLOUR, CocoFormatError, load_coco
from bocb.transfer.detection import (
    DETECTION_RECIPES,
    DetectionRecipe,
    _flip,
    evaluate,
    get_detection_recipe,
    run_detection,
)
from bocb.transfer.retinanet import build_detector
from bocb.transfer.synthetic import make_synthetic_coco
from bocb.zoo import build_backbone, init_backbone, resolve_backbone

# torchvision 0.29 deprecates its image codecs (TorchCodec); they stay the pinned ones here.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SIZE = 32  # CIFAR's own size: the backgrounds are not upsampled, and a tiny R-50 trains in seconds


@pytest.fixture(scope="module")
def backgrounds() -> torch.Tensor:
    images = load_dataset(DatasetSpec("sample")).train.images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[:300]].contiguous()  # all ten classes, not the first class's planes


@pytest.fixture(scope="module")
def shapes_sets(tmp_path_factory, backgrounds):
    root = tmp_path_factory.mktemp("shapes")
    train = make_synthetic_coco(root / "train", backgrounds[:200], 128, image_size=SIZE, seed=1)
    val = make_synthetic_coco(root / "val", backgrounds[200:], 48, image_size=SIZE, seed=2)
    return train, val


# -- COCO files ------------------------------------------------------------------------------------


def _small_coco(tmp_path, backgrounds):
    images_dir, ann = make_synthetic_coco(tmp_path / "small", backgrounds[:4], 3, image_size=SIZE, seed=5)
    return images_dir, ann, json.loads(ann.read_text())


def _break(data, case):
    if case == "unknown image":
        data["annotations"][0]["image_id"] = 999
    elif case == "unknown category":
        data["annotations"][0]["category_id"] = 77
    elif case == "bbox of 3":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif case == "bbox text":
        data["annotations"][0]["bbox"] = [1, 2, "3", 4]
    elif case == "bbox negative":
        data["annotations"][0]["bbox"] = [-1, 2, 3, 4]
    elif case == "bbox zero size":
        data["annotations"][0]["bbox"] = [1, 2, 0, 4]
    elif case == "missing key":
        del data["categories"]
    elif case == "duplicate annotation id":
        data["annotations"][1]["id"] = data["annotations"][0]["id"]
    elif case == "missing image file":
        data["images"][0]["file_name"] = "nowhere.png"
    elif case == "wrong image size":
        data["images"][0]["width"] = 40
    elif case == "not a list":
        data["images"] = {"id": 1}
    return data


MALFORMED = {
    "unknown image": "refers to unknown image_id 999",
    "unknown category": "refers to unknown category_id 77",
    "bbox of 3": "bbox must be 4 finite numbers",
    "bbox text": "bbox must be 4 finite numbers",
    "bbox negative": "bbox has a negative value",
    "bbox zero size": "bbox has zero width or height",
    "missing key": "missing key(s) 'categories'",
    "duplicate annotation id": "duplicate annotation id",
    "missing image file": "image file 'nowhere.png' not found",
    "wrong image size": "but the file says width=40",
    "not a list": "'images' must be a list",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotation_file_names_file_and_problem(tmp_path, backgrounds, case):
    images_dir, ann, data = _small_coco(tmp_path, backgrounds)
    ann.write_text(json.dumps(_break(data, case)))
    with pytest.raises(CocoFormatError) as err:
        load_coco(ann, images_dir, SIZE)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert message.startswith(f"{ann}: "), message
    assert MALFORMED[case] in message, message
    assert "\n" not in message


def test_unreadable_annotation_files(tmp_path, backgrounds):
    images_dir, ann, _ = _small_coco(tmp_path, backgrounds)
    ann.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"annotations\.json: not valid JSON \(.* line 1 column 13\)$"):
        load_coco(ann, images_dir, None)
    ann.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"annotations\.json: top level must be a JSON object"):
        load_coco(ann, images_dir, None)
    with pytest.raises(ValueError, match=r"nothing\.json: no such annotation file"):
        load_coco(tmp_path / "nothing.json", images_dir, None)


# -- the synthetic set and load_coco ---------------------------------------------------------------


def test_synthetic_set_is_deterministic_and_round_trips(tmp_path, backgrounds):
    images_dir, ann = make_synthetic_coco(tmp_path / "a", backgrounds[:10], 6, image_size=SIZE, seed=3)
    again_dir, again = make_synthetic_coco(tmp_path / "b", backgrounds[:10], 6, image_size=SIZE, seed=3)
    other_dir, other = make_synthetic_coco(tmp_path / "c", backgrounds[:10], 6, image_size=SIZE, seed=4)
    assert ann.read_text() == again.read_text()
    assert all((images_dir / p.name).read_bytes() == p.read_bytes() for p in again_dir.iterdir())
    assert ann.read_text() != other.read_text()

    data = json.loads(ann.read_text())
    loaded = load_coco(ann, images_dir, None)
    assert len(loaded) == 6 and loaded.image_size == (SIZE, SIZE)
    assert loaded.category_names == ("square", "disk", "triangle")
    assert loaded.category_ids == (1, 2, 3)
    assert loaded.num_boxes == len(data["annotations"]) >= 6  # 1 to 3 shapes an image
    for i, info in enumerate(data["images"]):
        assert loaded.image_ids[i] == info["id"]
        assert torch.equal(loaded.images[i], decode_image(str(images_dir / info["file_name"])))
        anns = [a for a in data["annotations"] if a["image_id"] == info["id"]]
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        assert torch.equal(loaded.targets[i]["boxes"], expected.float())
        assert loaded.targets[i]["labels"].tolist() == [a["category_id"] for a in anns]
    assert len(loaded.coco.getAnnIds()) == len(data["annotations"])

    # Category ids need not be contiguous: labels are their ranks + 1.
    for a in data["annotations"]:
        a["category_id"] *= 10
    for c in data["categories"]:
        c["id"] *= 10
    ann.write_text(json.dumps(data))
    scaled = load_coco(ann, images_dir, 2 * SIZE)
    assert scaled.category_ids == (10, 20, 30) and scaled.scales == (2.0,) * 6
    assert scaled.images.shape == (6, 3, 2 * SIZE, 2 * SIZE)
    for i in range(6):
        assert torch.equal(scaled.targets[i]["boxes"], 2 * loaded.targets[i]["boxes"])
        assert torch.equal(scaled.targets[i]["labels"], loaded.targets[i]["labels"])
    first = data["annotations"][0]
    assert scaled.coco.anns[first["id"]]["bbox"] == [2 * v for v in first["bbox"]]
    assert scaled.coco.anns[first["id"]]["area"] == 4 * first["area"]


def test_letterbox_keeps_aspect_ratio_and_pads(tmp_path):
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, 5:15, 10:30] = 255
    (tmp_path / "img").mkdir()
    write_png(image, str(tmp_path / "img" / "wide.png"))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "wide.png", "width": 40, "height": 20}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1}],
        "categories": [{"id": 3, "name": "block"}],
    }))
    data = load_coco(ann, tmp_path / "img", 20)
    assert data.scales == (0.5,)
    assert data.images.shape == (1, 3, 20, 20)
    assert data.images[0, :, 10:, :].eq(torch.tensor(PAD_COLOUR, dtype=torch.uint8)[:, None, None]).all()
    assert data.targets[0]["boxes"].tolist() == [[5.0, 2.5, 15.0, 7.5]]  # the crowd box is not a target
    assert data.targets[0]["labels"].tolist() == [1]
    assert data.coco.anns[2]["iscrowd"] == 1 and data.coco.anns[1]["area"] == 50.0


def test_flip_mirrors_boxes_with_the_image():
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[:, :, 2:6, 1:5] = 255
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "labels": torch.tensor([1])}] * 2
    flipped, new = _flip(images, targets, 1.0, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = (int(v) for v in new[0]["boxes"][0])
    assert (x1, y1, x2, y2) == (11, 2, 15, 6)
    assert flipped[0, :, y1:y2, x1:x2].eq(255).all() and flipped[0].sum() == images[0].sum()
    same, kept = _flip(images, targets, 0.0, torch.Generator().manual_seed(0))
    assert same is images and kept is targets


# -- recipes ---------------------------------------------------------------------------------------


def test_recipes_serialise_and_follow_the_1x_schedule():
    full = get_detection_recipe("retinanet-1x")
    assert (full.epochs, full.batch_size, full.milestones, full.warmup_iters) == (12, 16, (8, 11), 500)
    assert DetectionRecipe.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    smoke = DETECTION_RECIPES["smoke"]
    assert DetectionRecipe.from_dict(smoke.to_dict()) == smoke and smoke.tier == "smoke"
    steps = 100
    assert full.lr_factor(0, steps) == pytest.approx(0.001)
    assert full.lr_factor(250, steps) == pytest.approx(1 - 0.5 * 0.999)
    assert full.lr_factor(500, steps) == 1.0
    assert full.lr_factor(8 * steps - 1, steps) == 1.0
    assert full.lr_factor(8 * steps, steps) == pytest.approx(0.1)
    assert full.lr_factor(11 * steps, steps) == pytest.approx(0.01)
    assert full.lr_factor(11 * steps, steps, schedule_free=True) == 1.0
    with pytest.raises(ValueError, match="unknown detection recipe 'x': valid: retinanet-1x, smoke"):
        get_detection_recipe("x")
    with pytest.raises(ValueError, match="has no field lr"):
        full.with_changes(lr=1.0)


# -- detectors on zoo backbones --------------------------------------------------------------------


def _tiny(name: str, **kwargs):
    return build_backbone(resolve_backbone(name, num_classes=10, scale="tiny", **kwargs))


def _check_forward(detector, size, n=2):
    detector.eval()
    with torch.no_grad():
        out = detector(torch.rand(n, 3, size, size))
    assert len(out) == n
    for det in out:
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"])


def _check_every_parameter_learns(detector, size):
    detector.train()
    target = {"boxes": torch.tensor([[2.0, 3.0, 20.0, 18.0]]), "labels": torch.tensor([2])}
    losses = detector(torch.rand(2, 3, size, size), [target, target])
    sum(losses.values()).backward()
    assert [n for n, p in detector.named_parameters() if p.grad is None] == []


def test_build_detector_on_hierarchical_backbones():
    backbone = _tiny("CNX-T")  # timm ConvNeXt, CIFAR policy: stages at strides 1, 2, 4, 8
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    detector = build_detector(backbone, num_classes=3, image_size=SIZE, fpn_channels=32)
    info = detector.bocb_info
    assert info["feature_source"].startswith("forward_intermediates")
    assert info["in_channels"] == [32, 64, 128] and info["strides"] == [2, 4, 8]
    assert info["anchor_sizes"][0][0] == 8 and len(info["anchor_sizes"]) == 5
    assert info["classifier_outputs"] == 4
    assert not any(n.startswith("backbone.body.body.head") for n, _ in detector.named_parameters())
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # not modified
    _check_forward(detector, SIZE)
    _check_every_parameter_learns(detector, SIZE)

    # No forward_intermediates: forward hooks on its stages; the unused head norm is dropped.
    hooked = build_detector(_tiny("URLK-T", policy="cifar"), 3, SIZE, fpn_channels=32)
    assert hooked.bocb_info["feature_source"].startswith("hooks['stages.1', 'stages.2', 'stages.3']")
    _check_every_parameter_learns(hooked, SIZE)

    # A torchvision ResNet goes through create_feature_extractor.
    tv = build_detector(torchvision.models.resnet18(weights=None), 3, 64, fpn_channels=32)
    assert tv.bocb_info["feature_source"].startswith("create_feature_extractor")
    assert tv.bocb_info["strides"] == [8, 16, 32] and tv.bocb_info["in_channels"] == [128, 256, 512]
    _check_forward(tv, 64, n=1)


def test_build_detector_on_single_scale_and_unsupported_backbones():
    deit = _tiny("DeiT-S", policy="cifar")  # 4x4 patches: one map at stride 4
    detector = build_detector(deit, num_classes=3, image_size=SIZE, fpn_channels=32)
    assert detector.bocb_info["simple_pyramid"] is True
    assert detector.bocb_info["strides"] == [2, 4, 8]
    assert "backbone.body.body.pos_embed" in detector.no_weight_decay()
    _check_forward(detector, SIZE)
    # A fixed-size ViT is resized to the detector's input through timm's set_input_size.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _check_forward(build_detector(deit, 3, 2 * SIZE, fpn_channels=32), 2 * SIZE, n=1)

    with pytest.raises(ValueError) as err:
        build_detector(_tiny("MLP-S", policy="cifar"), 3, 2 * SIZE)
    assert str(err.value) == ("cannot build a detector on MlpMixer: it takes 32px input only and has no "
                              "set_input_size; build it for image_size=64")
    with pytest.raises(ValueError, match="cannot build a detector on TransNeXt: .*token sequences"):
        build_detector(_tiny("TNX-T", policy="cifar"), 3, SIZE)


# -- the whole path --------------------------------------------------------------------------------


@pytest.mark.slow
def test_detection_fine_tuning_learns_the_shapes(shapes_sets):
    """A tiny R-50 (random init) fine-tuned with AdamW on 128 synthetic images.

    Measured on 2 CPU cores (seeds 0 and 1 of this run): train loss 1.77 -> 0.77 and 1.79 -> 0.79;
    final AP 5.6 / 4.9 and AP50 12.6 / 13.2 on the 48 validation images. The untrained detector
    (classifier prior 0.01 < score threshold 0.05) finds nothing: AP = AP50 = 0.0. Floors: AP50 > 4,
    AP > 1, a third or less of what was measured and well clear of the untrained 0.
    """
    (train_dir, train_ann), (val_dir, val_ann) = shapes_sets
    train, val = load_coco(train_ann, train_dir, SIZE), load_coco(val_ann, val_dir, SIZE)
    recipe = DETECTION_RECIPES["smoke"]
    backbone = init_backbone(resolve_backbone("R-50", num_classes=10, scale="tiny"), 0)

    torch.manual_seed(0)
    untrained = build_detector(backbone, train.num_classes, SIZE, recipe.fpn_channels)
    assert evaluate(untrained, val) == (0.0, 0.0, 0)  # no detections: zeros, not an exception

    spec = resolve_optimizer("adamw", lr=1e-3, weight_decay=0.05)
    record = run_detection(backbone, spec, train, val, recipe, seed=0)
    assert record["status"] == "done", record.get("traceback")
    rows = record["epochs"]
    assert [r["epoch"] for r in rows] == list(range(1, 13))
    assert rows[-1]["train_loss"] < 0.75 * rows[0]["train_loss"]
    for r in rows:
        assert math.isfinite(r["map"]) and math.isfinite(r["ap50"]) and 0 <= r["map"] <= r["ap50"] <= 100
        assert r["images"] == 128 and r["seconds_train"] > 0
    assert [r["lr"] for r in rows][7:] == pytest.approx([1e-3] + [1e-4] * 3 + [1e-5])  # x0.1 after 8, 11
    assert record["final_ap50"] > 4.0 and record["final_map"] > 1.0, [(r["map"], r["ap50"]) for r in rows]
    assert record["best_map"] >= record["final_map"]
    assert record["train_images_per_second"] > 0
    assert record["detector"]["strides"] == [2, 4, 8] and record["dataset"]["train_images"] == 128
    assert record["optimizer"]["param_groups"]  # no weight decay on 1-d params, from build_optimizer


def test_detection_statuses(shapes_sets):
    (train_dir, train_ann), (val_dir, val_ann) = shapes_sets
    train, val = load_coco(train_ann, train_dir, SIZE), load_coco(val_ann, val_dir, SIZE)
    backbone = _tiny("R-18")
    quick = DETECTION_RECIPES["smoke"].with_changes(epochs=1, train_images=16, val_images=8)

    exploded = run_detection(backbone, resolve_optimizer("adamw", lr=10.0), train, val,
                             quick.with_changes(warmup_iters=0), seed=0)
    assert exploded["status"] == "diverged" and exploded["diverged_epoch"] == 1
    # Scored on the weights it ended with (AP 0: they are not finite, or find nothing).
    assert exploded["final_map"] == exploded["epochs"][-1]["map"] == 0.0

    sophia = run_detection(backbone, resolve_optimizer("sophia_g"), train, val, quick, seed=0)
    assert sophia["status"] == "failed" and "Gauss-Newton-Bartlett" in sophia["error"]
    too_few = run_detection(backbone, resolve_optimizer("adamw"), train, val,
                            quick.with_changes(batch_size=32), seed=0)
    assert too_few["status"] == "failed" and "fewer than one batch of 32" in too_few["error"]
