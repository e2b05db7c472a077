"""Backbones named by source: ``timm:NAME`` and ``package.module:builder`` (bocb.zoo.external)."""

import re

import pytest
import torch
from cli_inproc import bocb

from bocb.registry import UnknownNameError
from bocb.zoo import BACKBONES, build_backbone, get_backbone_info, list_backbones, resolve_backbone
from bocb.zoo.external import infer_family, recipe_of

# The paper's own taxonomy (Table 1, as the zoo records it by hand) is the reference the inference
# rule must reproduce from the built networks alone.
PAPER_GROUPS = {
    "R-50": "classical CNN", "DN-121": "classical CNN", "MobV2": "classical CNN", "Eff-B0": "classical CNN",
    "R-18": "classical CNN", "DeiT-S": "modern: transformer", "Swin-T": "modern: transformer",
    "MLP-S": "modern: MLP", "CNX-T": "modern CNN", "CNXV2-T": "modern CNN", "Moga-S": "modern CNN",
    "URLK-T": "modern CNN",
}


@pytest.mark.parametrize("short", sorted(PAPER_GROUPS))
def test_the_family_rule_gives_the_papers_group_for_its_own_backbones(short):
    info = get_backbone_info(short)
    with torch.device("meta"):
        model = build_backbone(resolve_backbone(info.name, num_classes=10, policy="upsample"))
    family = infer_family(model)
    assert family["group"] == PAPER_GROUPS[short] == info.group
    # The recipe rule matches the paper's for these groups (EfficientNet's RSB A2 is its own choice).
    if short != "Eff-B0":
        assert recipe_of(family) == info.recipe


def test_a_timm_cnn_keeps_32px_by_losing_its_stem_down_sampling():
    info = get_backbone_info("timm:test_resnet")
    assert (info.paper, info.source, info.group, info.default_policy, info.recipe) == (
        False, "timm", "classical CNN", "cifar", "pytorch")
    spec = resolve_backbone("timm:test_resnet", num_classes=10, scale="tiny")
    assert (spec.policy, spec.scale, spec.input_size) == ("cifar", "paper", 32)  # one size: as named
    model = build_backbone(spec)
    # As the CIFAR ResNet: 32 px in, 4 x 4 after a total reduction of 8 (32 without the edit: 1 x 1).
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    native = build_backbone(resolve_backbone("timm:test_resnet", num_classes=10, policy="upsample"))
    assert native.forward_features(torch.zeros(1, 3, 160, 160)).shape[-2:] == (5, 5)  # unchanged: 160 / 32


def test_a_timm_vit_takes_32px_in_4px_patches():
    info = get_backbone_info("timm:test_vit")
    assert (info.group, info.stages, info.token_mixer, info.recipe) == ("modern: transformer", "isotropic",
                                                                         "attention", "deit")
    model = build_backbone(resolve_backbone("timm:test_vit", num_classes=10))
    assert model.patch_embed.grid_size == (8, 8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_timm_names_ignore_case_and_separators_as_zoo_names_do():
    assert get_backbone_info("timm:ResNet-10t").name == "timm:resnet10t"


def test_an_unknown_timm_model_is_one_line_with_timms_closest_names():
    with pytest.raises(UnknownNameError) as err:
        get_backbone_info("timm:resnet10x")
    assert "unknown timm model 'resnet10x'" in str(err.value) and "'resnet10t'" in str(err.value)
    assert "timm:resnet10x" not in BACKBONES
    proc = bocb("train", "--backbone", "timm:resnet10x")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_user_builder_is_a_backbone_never_marked_paper():
    paper_before = len(list_backbones(paper=True))
    info = get_backbone_info("user_models:tiny_cnn")
    assert (info.paper, info.group, info.default_policy) == (False, "classical CNN", "cifar")
    model = build_backbone(resolve_backbone("user_models:tiny_cnn", num_classes=7))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert len(list_backbones(paper=True)) == paper_before == 20


@pytest.mark.parametrize("name, expected", [
    ("user_models:not_a_model", "returned str, not a torch nn.Module"),
    ("user_models:NOT_CALLABLE", "is not callable"),
    ("user_models:missing", "has no 'missing'"),
    ("no_such_package.models:net", "cannot import 'no_such_package.models'"),
    ("user_models:no_num_classes", r"no_num_classes\(num_classes=10\) raised TypeError"),
])
def test_a_bad_builder_is_one_line(name, expected):
    with pytest.raises(ValueError, match=expected):
        get_backbone_info(name)
    proc = bocb("train", "--backbone", name)
    assert proc.returncode == 2 and re.search(expected, proc.stderr) and len(proc.stderr.strip().splitlines()) == 1


def test_train_runs_a_timm_model_on_a_few_images_per_class(tmp_path):
    proc = bocb("train", "--backbone", "timm:test_resnet", "--data", "sample", "--tier", "smoke", "--epochs", "1",
                "--train-per-class", "5", "--test-per-class", "3", "--batch-size", "10", "--device", "cpu", "--json", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["spec"]["backbone"]["name"] == "timm:test_resnet"
    assert record["spec"]["recipe"]["train_per_class"] == 5
    assert len(record["epochs"]) == 1


@pytest.mark.slow
def test_a_study_names_a_timm_model_and_a_worker_rebuilds_it(tmp_path):
    study = tmp_path / "timm.toml"
    study.write_text("""
[study]
name = "timm-model"
data = "sample"
tier = "smoke"
tuning = "fixed"
seeds = [0]
epochs = 1
batch_size = 10
train_per_class = 5
test_per_class = 3

[[backbones]]
name = "timm:test_vit"

[[optimizers]]
name = "AdamW"
""")
    store = tmp_path / "store.sqlite"
    proc = bocb("run", study, "--store", store, "--slots", "1", "--device", "cpu", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from bocb.store import SQLiteStore

    with SQLiteStore(store) as s:
        (row,) = s.trials()
    assert row["status"] == "done" and row["backbone"] == "timm:test_vit", row["error"]


def test_recommend_answers_for_a_timm_model_from_the_papers_nearest_family():
    proc = bocb("recommend", "--backbone", "timm:test_convnext")
    assert proc.returncode == 0, proc.stderr
    assert "modern CNN" in proc.stdout and "CNX-T" in proc.stdout, proc.stdout


def test_a_bare_timm_name_is_the_timm_model_and_zoo_names_come_first():
    assert get_backbone_info("test_vit").name == "timm:test_vit"
    assert get_backbone_info("convnext_tiny").paper  # also a timm name: the zoo's ConvNeXt-T wins
    assert "hierarchical attention" not in BACKBONES


def test_a_study_corrects_an_inferred_family_for_the_tuners_start(tmp_path):
    from bocb.study import StudyError, load_study
    from bocb.tuning.space import family_centre, pair_space

    inferred = pair_space("timm:test_resnet", "AdamW")  # classical CNN, as inferred
    corrected = pair_space("timm:test_resnet", "AdamW", group="modern CNN")
    assert (inferred.source, corrected.source) == ("family", "family")
    assert inferred.start == family_centre("AdamW", "classical CNN")
    assert corrected.start == family_centre("AdamW", "modern CNN") != inferred.start
    body = ('[study]\nname = "g"\ndata = "sample"\ntuning = "adaptive"\nseeds = [0]\n'
            '[[backbones]]\nname = "timm:test_resnet"\ngroup = "{}"\n[[optimizers]]\nname = "AdamW"\n')
    (tmp_path / "ok.toml").write_text(body.format("modern CNN"))
    assert load_study(tmp_path / "ok.toml").backbones[0]["group"] == "modern CNN"
    (tmp_path / "bad.toml").write_text(body.format("modern cnn"))
    with pytest.raises(StudyError, match=r"backbones\[1\]\.group: unknown value 'modern cnn': valid: .*modern CNN"):
        load_study(tmp_path / "bad.toml")
