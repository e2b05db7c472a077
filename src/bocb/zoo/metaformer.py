"""The paper's MetaFormer S12 family, built with timm's generic ``MetaFormer`` class.

All five share the S12 macro design (depths 2-2-6-2, widths 64-128-320-512, ResScale in the last
two stages) and differ in the token mixer, which is the point of including them:

- IdentityFormer-S12 and PoolFormerV2-S12 follow the "MetaFormer Baselines for Vision" S12
  configurations (Yu et al., TPAMI 2024, arXiv 2210.13452): GroupNorm(1) without bias, linear head.
  timm ships PoolFormerV2-S12; IdentityFormer-S12 is the same network with an identity mixer.
- ConvFormer, CAFormer and "AttentionFormer" have no published S12 size (the smallest official
  ConvFormer/CAFormer is S18). bocb builds them at S12 depth with the ConvFormer/CAFormer recipe of
  that paper: LayerNorm without bias (channels-first for conv stages, channels-last for attention
  stages) and the MLP head. AttentionFormer-S12 is CAFormer-S12 with attention in all four stages.
  No published parameter counts exist for these three, so none is claimed.

CIFAR policy: the 7x7 stride-4 stem conv becomes 3x3 stride 1 (stages at 32, 16, 8, 4).
"""

from __future__ import annotations

from typing import Any

from bocb.lazy import lazy_module
from bocb.zoo.backbones import register_backbone
from bocb.zoo.surgery import replace_conv

S12 = dict(depths=(2, 2, 6, 2), dims=(64, 128, 320, 512))
# timm's Attention uses 32-channel heads and breaks below one full head, so tiny widths stay >= 32.
TINY = dict(depths=(1, 1, 1, 1), dims=(32, 32, 64, 128))

# Imported when a model is first built (bocb.lazy).
mf = lazy_module("timm.models.metaformer")
nn = lazy_module("torch.nn")


def configs() -> dict[str, dict[str, Any]]:
    """Each baseline's token mixers and norms (timm classes, so built on demand)."""
    baseline = dict(norm_layers=mf.GroupNorm1NoBias, use_mlp_head=False)
    conv_ln, attn_ln = mf.LayerNorm2dNoBias, mf.LayerNormNoBias
    return {
        "identityformer_s12": dict(token_mixers=nn.Identity, **baseline),
        "poolformerv2_s12": dict(token_mixers=mf.Pooling, **baseline),
        "convformer_s12": dict(token_mixers=mf.SepConv, norm_layers=conv_ln),
        "attentionformer_s12": dict(token_mixers=mf.Attention, norm_layers=attn_ln),
        "caformer_s12": dict(
            token_mixers=[mf.SepConv, mf.SepConv, mf.Attention, mf.Attention],
            norm_layers=[conv_ln, conv_ln, attn_ln, attn_ln],
        ),
    }


def _build(name: str, num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
    size = TINY if scale == "tiny" else S12
    model = mf.MetaFormer(num_classes=num_classes, drop_path_rate=drop_path_rate, **size, **configs()[name])
    if policy == "cifar":
        replace_conv(model.stem, "conv", kernel=3, stride=1)
    return model


_COMMON = dict(
    group="MetaFormer baseline", stages="hierarchical", block="MetaFormer",
    residual_norm="pre-norm + ResScale", default_policy="upsample", source="timm", recipe="rsb-a2",
    cifar_stem="3x3 stride-1 stem conv instead of 7x7 stride 4",
)

_ENTRIES = [
    ("identityformer_s12", "IF-12", "IdentityFormer-S12", "identity", 11.9),
    ("poolformerv2_s12", "PFV2-12", "PoolFormerV2-S12", "pooling", 11.9),
    ("convformer_s12", "CF-12", "ConvFormer-S12", "sep-conv", None),
    ("attentionformer_s12", "AF-12", "AttentionFormer-S12", "attention", None),
    ("caformer_s12", "CAF-12", "CAFormer-S12", "sep-conv + attention", None),
]


def _register(name: str, short: str, model: str, mixer: str, params: float | None) -> None:
    def builder(num_classes: int, policy: str, scale: str, drop_path_rate: float) -> nn.Module:
        return _build(name, num_classes, policy, scale, drop_path_rate)

    register_backbone(
        name, short=short, model=model, token_mixer=mixer, published_params_m=params,
        reference="Yu et al., MetaFormer Baselines for Vision, TPAMI 2024", **_COMMON,
    )(builder)


for _entry in _ENTRIES:
    _register(*_entry)
