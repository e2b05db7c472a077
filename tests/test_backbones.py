"""Contract tests over every registered backbone: builds, trains one step, has the right size."""

import sys
import textwrap

import pytest
import torch
from timm.utils.model import reparameterize_model
from torch import nn

from bocb import paper
from bocb.zoo import (
    BACKBONES,
    build_backbone,
    count_params,
    list_backbones,
    load_entry_points,
    register_backbone,
    resolve_backbone,
)

PAPER_BACKBONES = [b.name for b in list_backbones(paper=True)]
ALL_BACKBONES = [b.name for b in list_backbones()]

# Published ImageNet-1k parameter counts (millions) at 224x224, from each model's paper or its
# reference implementation's model card. ConvFormer/AttentionFormer/CAFormer-S12 have none: the
# smallest published ConvFormer/CAFormer is S18, so they are not checked here.
PUBLISHED_M = {
    "alexnet": 61.10,  # torchvision model card
    "vgg13_bn": 133.05,  # torchvision model card
    "resnet18": 11.69,  # He et al. 2016 / torchvision (extra, not in the paper's grid)
    "resnet50": 25.56,  # He et al. 2016 / torchvision
    "densenet121": 7.98,  # Huang et al. 2017
    "mobilenetv2": 3.50,  # torchvision model card (Sandler et al. 2018 round to 3.4M)
    "efficientnet_b0": 5.29,  # Tan & Le 2019 (5.3M)
    "repvgg_a1": 12.78,  # Ding et al. 2021, deploy-time (re-parameterised) model
    "deit_small": 22.05,  # Touvron et al. 2021 (22M)
    "mixer_s16": 18.5,  # Tolstikhin et al. 2021 (18M)
    "swin_tiny": 28.29,  # Liu et al. 2021 (28M)
    "convnext_tiny": 28.59,  # Liu et al. 2022 (28M)
    "convnextv2_tiny": 28.6,  # Woo et al. 2023
    "moganet_small": 25.3,  # Li et al. 2024
    "unireplknet_tiny": 31.0,  # Ding et al. 2024
    "transnext_tiny": 28.2,  # Shi 2024
    "identityformer_s12": 11.9,  # Yu et al. 2024 (MetaFormer baselines)
    "poolformerv2_s12": 11.9,  # Yu et al. 2024
}


def test_the_twenty_paper_backbones_use_the_papers_short_names():
    assert len(PAPER_BACKBONES) == 20
    shorts = [BACKBONES.get(n).short for n in PAPER_BACKBONES]
    assert shorts == paper.backbone_order()


def test_metadata_is_complete():
    from bocb.zoo.external import is_external

    # Models named by source (timm:NAME), resolved by other tests in this process, infer theirs.
    for b in (b for b in list_backbones() if not is_external(b.name)):
        for field in ("group", "stages", "block", "token_mixer", "residual_norm", "cifar_stem"):
            assert getattr(b, field) not in ("", "unknown"), (b.name, field)
        assert b.published_params_m == PUBLISHED_M.get(b.name), b.name


def _train_step(model: nn.Module, size: int, num_classes: int) -> None:
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.float().logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "a parameter got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)


# Every backbone at the tiny scale in the fast lane; the paper-sized models (seconds each) are slow.
@pytest.mark.parametrize("scale", [pytest.param("paper", marks=pytest.mark.slow), "tiny"])
@pytest.mark.parametrize("policy", ["cifar", "upsample"])
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_builds_and_backprops(name, policy, scale):
    spec = resolve_backbone(name, num_classes=10, policy=policy, scale=scale)
    model = build_backbone(spec)
    _train_step(model, spec.input_size, 10)


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_paper_size_matches_published_parameter_count(name):
    spec = resolve_backbone(name, num_classes=1000, policy="upsample")
    if name == "repvgg_a1":
        # Published at deploy time: count after merging the branches, as the paper does.
        model = reparameterize_model(build_backbone(spec))
        count = sum(p.numel() for p in model.parameters())
    else:
        count = count_params(spec)
    assert abs(count / 1e6 - PUBLISHED_M[name]) / PUBLISHED_M[name] < 0.10, count


def test_meta_count_equals_real_count():
    for name in ("resnet50", "transnext_tiny", "caformer_s12"):
        spec = resolve_backbone(name, num_classes=100, scale="tiny")
        real = sum(p.numel() for p in build_backbone(spec).parameters())
        assert count_params(spec) == real


def test_cifar_policy_removes_stem_downsampling():
    # The last feature map of a hierarchical CNN is 4x4 for a 32x32 input under the cifar policy.
    for name in ("resnet50", "convnext_tiny", "moganet_small", "mobilenetv2", "repvgg_a1"):
        model = build_backbone(name, num_classes=10, policy="cifar", scale="tiny")
        feats = model.forward_features(torch.randn(1, 3, 32, 32))
        assert feats.shape[-2:] == (4, 4), (name, feats.shape)


def test_bad_choices_fail_with_valid_options():
    with pytest.raises(ValueError, match="valid: cifar, upsample"):
        resolve_backbone("resnet50", policy="native")
    with pytest.raises(ValueError, match="valid: paper, tiny"):
        resolve_backbone("resnet50", scale="huge")
    with pytest.raises(ValueError, match="no stochastic depth"):
        resolve_backbone("alexnet", drop_path_rate=0.1)


def test_spec_round_trips_through_json():
    import json

    from bocb.zoo import BackboneSpec

    spec = resolve_backbone("DeiT-S", num_classes=100, policy="cifar", drop_path_rate=0.1)
    again = BackboneSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec
    assert spec.input_size == 32 and spec.source == "timm" and spec.source_version != "unknown"


@pytest.mark.slow
def test_user_backbone_by_decorator_appears_in_the_zoo():
    from bocb import views

    @register_backbone("user_mlp", short="uMLP", group="user", default_policy="cifar")
    def user_mlp(num_classes, policy, scale, drop_path_rate):
        width = 8 if scale == "tiny" else 64
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, width), nn.ReLU(), nn.Linear(width, num_classes))

    try:
        assert "uMLP" in BACKBONES
        model = build_backbone("uMLP", num_classes=5, scale="tiny")
        _train_step(model, 32, 5)
        frame = views.backbone_frame()
        assert "user_mlp" in set(frame["name"])
    finally:
        BACKBONES.remove("user_mlp")


def test_user_backbone_by_entry_point(tmp_path, monkeypatch):
    # A real installed-distribution layout on sys.path, found by importlib.metadata.
    (tmp_path / "bocb_demo_plugin.py").write_text(textwrap.dedent("""
        from torch import nn
        from bocb.zoo import register_backbone

        @register_backbone("plugin_net", short="PlugNet", source="bocb-demo-plugin")
        def plugin_net(num_classes, policy, scale, drop_path_rate):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
    """))
    dist = tmp_path / "bocb_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bocb-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[bocb.backbones]\ndemo = bocb_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "demo" in load_entry_points()
        spec = resolve_backbone("PlugNet", num_classes=3)
        assert spec.source_version == "0.1"
        assert build_backbone(spec)(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    finally:
        if "plugin_net" in BACKBONES:
            BACKBONES.remove("plugin_net")
        sys.modules.pop("bocb_demo_plugin", None)
