"""The paper's primary and classical CNNs: AlexNet, VGG-13-BN, ResNet-50, DenseNet-121,
MobileNetV2, EfficientNet-B0, RepVGG-A1 — all from torchvision or timm — and ResNet-18, outside
the paper's grid but the standard CIFAR speed benchmark.

CIFAR policy (stem down-sampling removed, so the last stage runs at 4x4 for 32x32 input like a
ResNet CIFAR stem gives): ResNet/DenseNet get a 3x3 stride-1 stem conv and no max-pool; MobileNetV2,
EfficientNet-B0 and RepVGG-A1 get their stride-2 stem and first stride-2 block set to stride 1;
AlexNet gets a 3x3 stride-1 first conv and loses its first max-pool; VGG loses its first max-pool.
The plain nets keep their classifier, which sees an adaptively pooled 6x6 (AlexNet) or 7x7 (VGG) map.
"""

from __future__ import annotations

import dataclasses

from bocb.lazy import lazy_module
from bocb.zoo.backbones import register_backbone
from bocb.zoo.surgery import first_strided, narrow_plain, replace_conv, unstride

# Imported when a model is first built (bocb.lazy): registering the zoo needs none of them.
nn = lazy_module("torch.nn")
timm = lazy_module("timm")
torchvision = lazy_module("torchvision")
byobnet = lazy_module("timm.models.byobnet")
densenet = lazy_module("timm.models.densenet")
efficientnet = lazy_module("timm.models.efficientnet")
resnet = lazy_module("timm.models.resnet")

TINY_FACTOR = 8  # plain nets: every width divided by this for the tiny scale


@register_backbone(
    "alexnet", recipe="pytorch", short="AlexNet", model="AlexNet", group="primary CNN", stages="plain",
    block="plain", token_mixer="conv", residual_norm="none", default_policy="upsample",
    source="torchvision", published_params_m=61.10, supports_drop_path=False,
    cifar_stem="first conv 3x3 stride 1, first max-pool removed",
    reference="Krizhevsky et al., NeurIPS 2012",
)
def alexnet(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    model = torchvision.models.AlexNet(num_classes=num_classes)
    if scale == "tiny":
        model.features, model.classifier = narrow_plain(
            model.features, model.classifier, TINY_FACTOR, 6 * 6, num_classes
        )
    if policy == "cifar":
        replace_conv(model.features, "0", kernel=3, stride=1)
        model.features[2] = nn.Identity()
    return model


@register_backbone(
    "vgg13_bn", recipe="pytorch", short="VGG-13", model="VGG-13-BN", group="primary CNN", stages="plain",
    block="plain", token_mixer="conv", residual_norm="none", default_policy="upsample",
    source="torchvision", published_params_m=133.05, supports_drop_path=False,
    cifar_stem="first max-pool removed", reference="Simonyan & Zisserman, ICLR 2015",
)
def vgg13_bn(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    model = torchvision.models.vgg13_bn(num_classes=num_classes)
    if scale == "tiny":
        model.features, model.classifier = narrow_plain(
            model.features, model.classifier, TINY_FACTOR, 7 * 7, num_classes
        )
    if policy == "cifar":
        first_pool = next(i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d))
        model.features[first_pool] = nn.Identity()
    return model


@register_backbone(
    "resnet50", recipe="pytorch", short="R-50", model="ResNet-50", group="classical CNN", stages="hierarchical",
    block="bottleneck", token_mixer="conv", residual_norm="add", source="timm", default_policy="cifar",
    published_params_m=25.56, cifar_stem="3x3 stride-1 stem conv, no max-pool",
    reference="He et al., CVPR 2016",
    recipe_source="released: Westlake-AI/openmixup configs/classification/cifar100/optimizers/basic/r50_CE_none_bs100.py",
)
def resnet50(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return _resnet("resnet50", resnet.Bottleneck, num_classes, policy, scale, drop_path_rate)


def _resnet(variant: str, block: type, num_classes: int, policy: str, scale: str,
            drop_path_rate: float) -> nn.Module:
    if scale == "tiny":
        model = resnet.ResNet(
            block, (1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16,
            num_classes=num_classes, drop_path_rate=drop_path_rate,
        )
    else:
        model = timm.create_model(variant, num_classes=num_classes, drop_path_rate=drop_path_rate)
    if policy == "cifar":
        replace_conv(model, "conv1", kernel=3, stride=1)
        model.maxpool = nn.Identity()
    return model


@register_backbone(
    "densenet121", recipe="pytorch", short="DN-121", model="DenseNet-121", group="classical CNN",
    stages="hierarchical", block="bottleneck", token_mixer="conv", residual_norm="concat",
    source="timm", default_policy="cifar", published_params_m=7.98, supports_drop_path=False,
    cifar_stem="3x3 stride-1 stem conv, no max-pool", reference="Huang et al., CVPR 2017",
)
def densenet121(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    if scale == "tiny":
        model = densenet.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_classes=num_classes)
    else:
        model = timm.create_model("densenet121", num_classes=num_classes)
    if policy == "cifar":
        replace_conv(model.features, "conv0", kernel=3, stride=1)
        model.features.pool0 = nn.Identity()
    return model


def _unstride_stem_and_first_block(model: nn.Module, stem: nn.Module, blocks: nn.Module) -> None:
    unstride(stem)
    unstride(first_strided(blocks))


@register_backbone(
    "mobilenetv2", recipe="pytorch", short="MobV2", model="MobileNetV2", group="classical CNN",
    stages="hierarchical", block="inverted bottleneck", token_mixer="sep-conv",
    residual_norm="add", source="timm", default_policy="upsample", published_params_m=3.50,
    cifar_stem="stem and first stride-2 block at stride 1", reference="Sandler et al., CVPR 2018",
)
def mobilenetv2(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    mult = (0.25, 0.34) if scale == "tiny" else (1.0, 1.0)
    model = efficientnet._gen_mobilenet_v2(
        "mobilenetv2_100", channel_multiplier=mult[0], depth_multiplier=mult[1],
        num_classes=num_classes, drop_path_rate=drop_path_rate,
    )
    if policy == "cifar":
        _unstride_stem_and_first_block(model, model.conv_stem, model.blocks)
    return model


@register_backbone(
    "efficientnet_b0", recipe="rsb-a2", short="Eff-B0", model="EfficientNet-B0", group="classical CNN",
    stages="hierarchical", block="inverted bottleneck", token_mixer="conv + SE",
    residual_norm="add", source="timm", default_policy="upsample", published_params_m=5.29,
    cifar_stem="stem and first stride-2 block at stride 1", reference="Tan & Le, ICML 2019",
)
def efficientnet_b0(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    mult = (0.25, 0.25) if scale == "tiny" else (1.0, 1.0)
    model = efficientnet._gen_efficientnet(
        "efficientnet_b0", channel_multiplier=mult[0], depth_multiplier=mult[1],
        num_classes=num_classes, drop_path_rate=drop_path_rate,
    )
    if policy == "cifar":
        _unstride_stem_and_first_block(model, model.conv_stem, model.blocks)
    return model


@register_backbone(
    "repvgg_a1", recipe="pytorch", short="RVGG-A1", model="RepVGG-A1", group="classical CNN",
    stages="hierarchical", block="plain (re-param)", token_mixer="conv", residual_norm="add",
    source="timm", default_policy="upsample", published_params_m=12.78,
    cifar_stem="stem and first stage's stride-2 block at stride 1",
    reference="Ding et al., CVPR 2021 (published count is the re-parameterised model)",
)
def repvgg_a1(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    cfg = byobnet.model_cfgs["repvgg_a1"]
    if scale == "tiny":
        widths = (16, 32, 64, 128)
        blocks = tuple(dataclasses.replace(b, d=1, c=w) for b, w in zip(cfg.blocks, widths))
        cfg = dataclasses.replace(cfg, blocks=blocks, stem_chs=16)
    model = byobnet.ByobNet(cfg, num_classes=num_classes, drop_path_rate=drop_path_rate)
    if policy == "cifar":
        unstride(model.stem)
        unstride(model.stages[0][0])
    return model


@register_backbone(
    "resnet18", recipe="pytorch", short="R-18", model="ResNet-18", group="classical CNN",
    stages="hierarchical", block="basic", token_mixer="conv", residual_norm="add",
    source="timm", default_policy="cifar", published_params_m=11.69, paper=False,
    cifar_stem="3x3 stride-1 stem conv, no max-pool",
    reference="He et al., CVPR 2016 (not in the BOCB grid; the standard CIFAR speed benchmark)",
)
def resnet18(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return _resnet("resnet18", resnet.BasicBlock, num_classes, policy, scale, drop_path_rate)
