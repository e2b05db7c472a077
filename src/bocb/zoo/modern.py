"""The paper's modern backbones: DeiT-S, MLP-Mixer-S/16, Swin-T, ConvNeXt-T, ConvNeXt-V2-T
(timm) and MogaNet-S, UniRepLKNet-T, TransNeXt-T (implemented in :mod:`bocb.zoo.models`, since
neither timm nor torchvision ships them).

CIFAR policy: ViT and Mixer take 4x4 patches of the 32x32 image (64 tokens; the "/4" models of
CIFAR work); Swin takes 2x2 patches with 4x4 windows (stages at 16, 8, 4, 2); ConvNeXt(-V2) gets a
3x3 stride-1 conv + its LayerNorm in place of the 4x4 patchify; MogaNet, UniRepLKNet and TransNeXt
get stride-1 stems. Stages then run at 32, 16, 8, 4 for the convolutional models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bocb.lazy import lazy_module
from bocb.zoo.backbones import CIFAR_SIZE, register_backbone
from bocb.zoo.surgery import replace_conv

if TYPE_CHECKING:
    from torch import nn

# Imported when a model is first built (bocb.lazy): registering the zoo needs none of them.
timm = lazy_module("timm")
mlp_mixer = lazy_module("timm.models.mlp_mixer")
moganet = lazy_module("bocb.zoo.models.moganet")
transnext = lazy_module("bocb.zoo.models.transnext")
unireplknet = lazy_module("bocb.zoo.models.unireplknet")

# The authors' released CIFAR-100 configs (repository Westlake-AI/openmixup); each backbone below
# that has one names it as its recipe source and lists its departures from the family recipe.
_RELEASED = "released: Westlake-AI/openmixup configs/classification/cifar100/advanced/"


def _size(policy: str) -> int:
    return CIFAR_SIZE if policy == "cifar" else 224


@register_backbone(
    "deit_small", recipe="deit", short="DeiT-S", model="DeiT-S (ViT-S/16)", group="modern: transformer",
    stages="isotropic", block="MetaFormer", token_mixer="attention", residual_norm="pre-norm",
    source="timm", default_policy="upsample", published_params_m=22.05,
    cifar_stem="4x4 patches at 32x32 (64 tokens)", reference="Touvron et al., ICML 2021",
    recipe_source=_RELEASED + "deit_s_adamw_sz224_bs100_ep200.py",
)
def deit_small(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    kwargs = dict(embed_dim=64, depth=2, num_heads=2) if scale == "tiny" else {}
    if policy == "cifar":
        kwargs.update(img_size=CIFAR_SIZE, patch_size=4)
    return timm.create_model(
        "deit_small_patch16_224", num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs
    )


@register_backbone(
    "mixer_s16", recipe="deit", short="MLP-S", model="MLP-Mixer-S/16", group="modern: MLP", stages="isotropic",
    block="MetaFormer", token_mixer="MLP", residual_norm="pre-norm", source="timm", default_policy="upsample",
    published_params_m=18.5, cifar_stem="4x4 patches at 32x32 (64 tokens)",
    reference="Tolstikhin et al., NeurIPS 2021", supports_dropout=True,
    recipe_source=_RELEASED + "mlpmixer_s_adamw_sz224_bs100_ep200.py",
    # The released config trains Mixer with dropout 0.1 in its MLPs and no stochastic depth.
    recipe_overrides={"drop_path_rate": 0.0, "drop_rate": 0.1},
)
def mixer_s16(num_classes: int, policy: str, scale: str, drop_path_rate: float, drop_rate: float = 0.0) -> nn.Module:
    # timm's mixer_s16_224 fixes its arguments, so the class is built directly with S/16's values.
    # drop_rate is dropout inside the token- and channel-mixing MLPs (timm's proj_drop_rate), what
    # the released config's MlpMixer(drop_rate=0.1) does; timm's own drop_rate is head dropout.
    size = dict(num_blocks=2, embed_dim=64) if scale == "tiny" else dict(num_blocks=8, embed_dim=512)
    return mlp_mixer.MlpMixer(
        num_classes=num_classes, img_size=_size(policy), patch_size=4 if policy == "cifar" else 16,
        drop_path_rate=drop_path_rate, proj_drop_rate=drop_rate, **size,
    )


@register_backbone(
    "swin_tiny", recipe="convnext", short="Swin-T", model="Swin-T", group="modern: transformer",
    stages="hierarchical", block="MetaFormer", token_mixer="window attention",
    residual_norm="pre-norm", source="timm", default_policy="upsample", published_params_m=28.29,
    cifar_stem="2x2 patches, 4x4 windows (stages at 16, 8, 4, 2)", reference="Liu et al., ICCV 2021",
    recipe_source=_RELEASED + "swin_t_adamw_sz224_bs100_ep200.py",
    # The released Swin-T config: base lr 5e-4 (the default AdamW lr here; tuning still searches),
    # DeiT's 20 warm-up epochs and 1e-6 floor, drop-path 0.2, and the sz224_randaug pipeline
    # (RandAugment m7, no random erasing).
    recipe_overrides={"lr": 5e-4, "warmup_epochs": 20, "drop_path_rate": 0.2, "augment.randaugment": (2, 7),
                      "augment.random_erasing": 0.0, "min_lr": 1e-6},
)
def swin_tiny(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    kwargs = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4)) if scale == "tiny" else {}
    if policy == "cifar":
        kwargs.update(img_size=CIFAR_SIZE, patch_size=2, window_size=4)
    return timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs
    )


def _convnext(variant: str, num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    kwargs = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)) if scale == "tiny" else {}
    model = timm.create_model(variant, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs)
    if policy == "cifar":
        replace_conv(model.stem, "0", kernel=3, stride=1)  # stem[1] (LayerNorm2d) stays
    return model


@register_backbone(
    "convnext_tiny", recipe="convnext", short="CNX-T", model="ConvNeXt-T", group="modern CNN", stages="hierarchical",
    block="MetaNeXt", token_mixer="dw-conv", residual_norm="pre-norm + LayerScale",
    source="timm", default_policy="cifar", published_params_m=28.59,
    cifar_stem="3x3 stride-1 conv + LayerNorm instead of 4x4 patchify",
    reference="Liu et al., CVPR 2022",
    recipe_source=_RELEASED + "convext_t_adamw_bs100_ep200.py",
    recipe_overrides={"drop_path_rate": 0.3, "grad_clip": None},
)
def convnext_tiny(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return _convnext("convnext_tiny", num_classes, policy, scale, drop_path_rate)


@register_backbone(
    "convnextv2_tiny", recipe="convnext", short="CNXV2-T", model="ConvNeXt-V2-T", group="modern CNN",
    stages="hierarchical", block="MetaNeXt", token_mixer="dw-conv + GRN",
    residual_norm="pre-norm + LayerScale", source="timm", default_policy="cifar", published_params_m=28.6,
    cifar_stem="3x3 stride-1 conv + LayerNorm instead of 4x4 patchify",
    reference="Woo et al., CVPR 2023",
)
def convnextv2_tiny(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return _convnext("convnextv2_tiny", num_classes, policy, scale, drop_path_rate)


@register_backbone(
    "moganet_small", recipe="convnext", short="Moga-S", model="MogaNet-S", group="modern CNN", stages="hierarchical",
    block="MetaFormer", token_mixer="dw-conv + gating", residual_norm="pre-norm + LayerScale",
    default_policy="cifar", source="bocb", published_params_m=25.3,  # MogaNet-S, ImageNet-1k, 224x224 (paper Table 2)
   
    cifar_stem="stride-1 conv stem", reference="Li et al., ICLR 2024 (arXiv 2211.03295)",
    recipe_source=_RELEASED + "moganet_s_adamw_bs100_ep200.py",
    recipe_overrides={"drop_path_rate": 0.1, "grad_clip": 5.0},
)
def moganet_small(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return moganet.MogaNet(
        num_classes=num_classes, drop_path_rate=drop_path_rate, cifar_stem=policy == "cifar",
        **moganet.VARIANTS[scale],
    )


@register_backbone(
    "unireplknet_tiny", recipe="convnext", short="URLK-T", model="UniRepLKNet-T", group="modern CNN",
    stages="hierarchical", block="MetaFormer", token_mixer="large dw-conv + SE",
    residual_norm="pre-norm + LayerScale", default_policy="upsample", source="bocb",
    published_params_m=31.0,  # UniRepLKNet-T, ImageNet-1k, 224x224
    cifar_stem="stride-1 conv stem",
    reference="Ding et al., CVPR 2024 (arXiv 2311.15599)",
)
def unireplknet_tiny(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return unireplknet.UniRepLKNet(
        num_classes=num_classes, drop_path_rate=drop_path_rate, cifar_stem=policy == "cifar",
        **unireplknet.VARIANTS[scale],
    )


@register_backbone(
    "transnext_tiny", recipe="deit", short="TNX-T", model="TransNeXt-T", group="modern", stages="hierarchical",
    block="MetaFormer", token_mixer="aggregated attention + gating",
    residual_norm="pre-norm + LayerScale", default_policy="upsample", source="bocb",
    published_params_m=28.2,  # TransNeXt-Tiny, ImageNet-1k, 224x224
    cifar_stem="stride-1 patch-embedding stem",
    reference="Shi, CVPR 2024 (arXiv 2311.17132)",
)
def transnext_tiny(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    return transnext.TransNeXt(
        num_classes=num_classes, drop_path_rate=drop_path_rate, cifar_stem=policy == "cifar",
        img_size=_size(policy), **transnext.VARIANTS[scale],
    )
