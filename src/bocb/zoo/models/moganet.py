"""MogaNet backbone.

Paper: "MogaNet: Multi-order Gated Aggregation Network", Siyuan Li, Zedong Wang, Zicheng Liu,
Cheng Tan, Haitao Lin, Di Wu, Zhiyuan Chen, Jiangbin Zheng, Stan Z. Li. ICLR 2024,
arXiv:2211.03295.

Reference implementation followed: Westlake-AI/MogaNet, ``models/moganet.py`` (the timm-style
ImageNet classifier). Module and parameter names match it (``patch_embed{i}``, ``blocks{i}``,
``norm{i}``, ``attn.value.DW_conv0``, ``layer_scale_1``, ...), so an official ImageNet state dict
loads into ``MogaNet(**VARIANTS["paper"])`` unchanged; with ``cifar_stem=True`` only conv strides
change, so the same state dict still loads.

Design, per block (all convolutions are 2-D, all norms BatchNorm):

* spatial branch  ``x + ls1 * Moga(BN(x))`` where Moga projects with a 1x1 conv, applies the
  feature decomposition ``y + sigma * (y - GAP(y))`` and SiLU, then gates ``SiLU(1x1(y))`` against
  the multi-order context ``SiLU(MultiOrderDWConv(y))`` (5x5 DW conv, then 5x5 dil-2 / 7x7 dil-3
  DW convs on 3/8 and 4/8 of the channels, a 1x1 conv), projects with a 1x1 conv and adds its input;
* channel branch  ``x + ls2 * CA-FFN(BN(x))``: 1x1 expand, 3x3 DW conv, GELU, channel aggregation
  ``z + sigma * (z - GELU(1x1_{C->1}(z)))``, 1x1 reduce.

Stages are entered by a patch embedding: a two-conv stride-2+2 stem ("StackConvPatchEmbed") for
stage 1 and a 3x3 stride-2 conv + BN for stages 2-4; every stage ends with its own BatchNorm
(``norm{i}``), also the intermediate ones, as in the reference. The classifier averages the final
map and applies one Linear layer.

Deviations from the reference implementation:

* ``cifar_stem=True`` (not in the reference) makes both stem convolutions stride 1, so a 32x32
  input keeps 32x32 in stage 1 and the stages run at 32/16/8/4; nothing else changes.
* The stochastic-depth schedule is computed in Python floats instead of ``torch.linspace(...)
  .item()`` so the model can be built on the ``meta`` device; values agree to float32 rounding.
* Patch embeddings return only the tensor (the reference also returns the spatial size, used
  there only for an unused LayerNorm path); the reference's ``fork_feat`` (dense-prediction
  outputs), ``head_init_scale`` (1.0 by default, a no-op) and checkpoint loading are omitted.
* ``forward_features`` returns the normalised final feature map (timm convention); the reference
  returns it already average-pooled. ``forward`` is numerically the same.
* ``reset_classifier`` initialises the new head like the original one (trunc-normal, std 0.02);
  the reference leaves PyTorch's default Linear init there.
* ``no_weight_decay`` returns the layer scales and the ``sigma`` element scales; the reference
  model returns an empty dict (see the method for which recipe this follows and why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_

__all__ = ["MogaNet", "VARIANTS"]

VARIANTS: dict[str, dict] = {
    # MogaNet-S ("small" in the reference arch_zoo).
    "paper": {
        "embed_dims": (64, 128, 320, 512),
        "depths": (2, 3, 12, 2),
        "ffn_ratios": (8, 8, 4, 4),
    },
    # Same design, a few hundred thousand parameters: for CPU smoke runs. Every dim is a multiple
    # of 8 because the multi-order DW conv splits channels 1:3:4.
    "tiny": {
        "embed_dims": (16, 32, 64, 128),
        "depths": (1, 1, 1, 1),
        "ffn_ratios": (8, 8, 4, 4),
    },
}


class ElementScale(nn.Module):
    """Learnable per-channel scale, ``x * scale`` with ``scale`` of shape (1, C, 1, 1)."""

    def __init__(self, dim: int, init_value: float = 0.0) -> None:
        super().__init__()
        # torch.full, not a value read back from a tensor, so the meta device works.
        self.scale = nn.Parameter(torch.full((1, dim, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ChannelAggregationFFN(nn.Module):
    """FFN with channel aggregation (CA): (B, C, H, W) -> (B, C, H, W).

    1x1 expand to ``hidden`` channels, 3x3 depth-wise conv, GELU, then the CA step
    ``z + sigma * (z - GELU(conv_{hidden->1}(z)))`` re-weights channels against a single
    aggregated channel, and a 1x1 conv reduces back to ``dim``.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int = 3, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size=kernel_size, padding=kernel_size // 2, groups=hidden
        )
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.drop = nn.Dropout(drop)
        self.decompose = nn.Conv2d(hidden, 1, kernel_size=1)
        # 1e-5 is hard-coded in the reference (independent of the block's layer-scale init).
        self.sigma = ElementScale(hidden, init_value=1e-5)
        self.decompose_act = nn.GELU()

    def feat_decompose(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma(x - self.decompose_act(self.decompose(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        x = self.feat_decompose(x)
        return self.drop(self.fc2(x))


class MultiOrderDWConv(nn.Module):
    """Multi-order context: (B, C, H, W) -> (B, C, H, W).

    A 5x5 DW conv (dilation d0) over all channels; of its output, the last ``4/8`` channels get a
    7x7 DW conv (dilation d2) and the ``3/8`` before them a 5x5 DW conv (dilation d1), the first
    ``1/8`` pass through; a 1x1 conv mixes the concatenation. Spatial size is kept for any input.
    """

    def __init__(
        self,
        dim: int,
        dilations: Sequence[int] = (1, 2, 3),
        channel_split: Sequence[int] = (1, 3, 4),
    ) -> None:
        super().__init__()
        if len(dilations) != 3 or len(channel_split) != 3:
            raise ValueError("dilations and channel_split need three entries each")
        total = sum(channel_split)
        if dim % total != 0:
            raise ValueError(f"dim {dim} must be divisible by sum(channel_split)={total}")
        # Same rounding as the reference (int of the ratio times dim), so split sizes and hence
        # parameter shapes match it.
        self.dim_1 = int(channel_split[1] / total * dim)
        self.dim_2 = int(channel_split[2] / total * dim)
        self.dim_0 = dim - self.dim_1 - self.dim_2
        self.dim = dim
        d0, d1, d2 = dilations
        # The upper-case names are the reference's, kept so its state dicts load.
        self.DW_conv0 = nn.Conv2d(dim, dim, 5, padding=(1 + 4 * d0) // 2, dilation=d0, groups=dim)
        self.DW_conv1 = nn.Conv2d(
            self.dim_1, self.dim_1, 5, padding=(1 + 4 * d1) // 2, dilation=d1, groups=self.dim_1
        )
        self.DW_conv2 = nn.Conv2d(
            self.dim_2, self.dim_2, 7, padding=(1 + 6 * d2) // 2, dilation=d2, groups=self.dim_2
        )
        self.PW_conv = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_0 = self.DW_conv0(x)
        x_1 = self.DW_conv1(x_0[:, self.dim_0 : self.dim_0 + self.dim_1])
        x_2 = self.DW_conv2(x_0[:, self.dim - self.dim_2 :])
        return self.PW_conv(torch.cat([x_0[:, : self.dim_0], x_1, x_2], dim=1))


class MultiOrderGatedAggregation(nn.Module):
    """Moga spatial aggregation with its own residual: (B, C, H, W) -> (B, C, H, W).

    ``force_fp32`` reproduces the reference's ``attn_force_fp32`` path exactly: the gate product
    and ``proj_2`` run in float32 with autocast off, and, as in the reference, SiLU is then
    applied a second time to both the gate and the context (SiLU(SiLU(.))). The reference's
    ImageNet models use the default ``False``; OpenMixup's CIFAR configs set it to ``True``.
    """

    def __init__(
        self,
        dim: int,
        dilations: Sequence[int] = (1, 2, 3),
        channel_split: Sequence[int] = (1, 3, 4),
        force_fp32: bool = False,
    ) -> None:
        super().__init__()
        self.force_fp32 = force_fp32
        self.proj_1 = nn.Conv2d(dim, dim, kernel_size=1)
        self.gate = nn.Conv2d(dim, dim, kernel_size=1)
        self.value = MultiOrderDWConv(dim, dilations, channel_split)
        self.proj_2 = nn.Conv2d(dim, dim, kernel_size=1)
        self.act_value = nn.SiLU()
        self.act_gate = nn.SiLU()
        self.sigma = ElementScale(dim, init_value=1e-5)

    def feat_decompose(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_1(x)
        # Push features away from their global mean (the "decompose" step of the paper) before
        # the gate and the context are formed.
        x = x + self.sigma(x - F.adaptive_avg_pool2d(x, output_size=1))
        return self.act_value(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.feat_decompose(x)
        g = self.act_gate(self.gate(x))
        v = self.act_gate(self.value(x))
        if self.force_fp32:
            with torch.autocast(device_type=x.device.type, enabled=False):
                g, v = g.float(), v.float()
                x = self.proj_2(self.act_gate(g) * self.act_gate(v))
        else:
            x = self.proj_2(g * v)
        return x + shortcut


class MogaBlock(nn.Module):
    """One MogaNet block: (B, C, H, W) -> (B, C, H, W), two layer-scaled residual branches."""

    def __init__(
        self,
        dim: int,
        ffn_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_value: float = 1e-5,
        dilations: Sequence[int] = (1, 2, 3),
        channel_split: Sequence[int] = (1, 3, 4),
        force_fp32: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.attn = MultiOrderGatedAggregation(dim, dilations, channel_split, force_fp32)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.mlp = ChannelAggregationFFN(dim, int(dim * ffn_ratio), drop=drop_rate)
        self.layer_scale_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((1, dim, 1, 1), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))


class StackConvPatchEmbed(nn.Module):
    """Stage-1 stem: conv(C_in -> D/2) + BN + GELU + conv(D/2 -> D) + BN, each conv ``stride``."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.projection = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, kernel_size, stride=stride, padding=pad),
            nn.BatchNorm2d(dim // 2, eps=1e-5),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, kernel_size, stride=stride, padding=pad),
            nn.BatchNorm2d(dim, eps=1e-5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class ConvPatchEmbed(nn.Module):
    """Down-sampling between stages: one strided conv + BN."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            in_chans, dim, kernel_size, stride=stride, padding=kernel_size // 2
        )
        self.norm = nn.BatchNorm2d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.projection(x))


class MogaNet(nn.Module):
    """MogaNet classifier: (B, in_chans, H, W) -> (B, num_classes) logits.

    With the ImageNet stem the network down-samples by 32, so H and W should be multiples of 32
    (224 for the published models); with ``cifar_stem=True`` it down-samples by 8 and is meant for
    32x32 inputs (stages at 32/16/8/4). ``num_classes=0`` replaces the head by an identity, so
    ``forward`` then returns the pooled (B, embed_dims[-1]) features.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        cifar_stem: bool = False,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (2, 3, 12, 2),
        ffn_ratios: Sequence[float] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        init_value: float = 1e-5,
        attn_dw_dilation: Sequence[int] = (1, 2, 3),
        attn_channel_split: Sequence[int] = (1, 3, 4),
        attn_final_dilation: bool = True,
        attn_force_fp32: bool = False,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(ffn_ratios):
            raise ValueError("embed_dims, depths and ffn_ratios must have the same length")
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.num_stages = len(depths)
        self.num_features = self.embed_dims[-1]
        self.cifar_stem = cifar_stem

        # Stochastic depth grows linearly over all blocks, 0 for the first block and
        # drop_path_rate for the last (the reference's torch.linspace rule, in Python floats).
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]

        block_idx = 0
        for i, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, ffn_ratios, strict=True)):
            if i == 0:
                # ImageNet: two stride-2 convs (stride 4 overall). CIFAR: stride 1, so the 32x32
                # image is not shrunk to 8x8 before the first block.
                patch_embed: nn.Module = StackConvPatchEmbed(
                    in_chans, dim, kernel_size=3, stride=1 if cifar_stem else 2
                )
            else:
                patch_embed = ConvPatchEmbed(embed_dims[i - 1], dim, kernel_size=3, stride=2)
            dilations = attn_dw_dilation
            if i == self.num_stages - 1 and not attn_final_dilation:
                dilations = (1, 2, 1)
            blocks = nn.ModuleList(
                MogaBlock(
                    dim,
                    ffn_ratio=ratio,
                    drop_rate=drop_rate,
                    drop_path_rate=dpr[block_idx + j],
                    init_value=init_value,
                    dilations=dilations,
                    channel_split=attn_channel_split,
                    force_fp32=attn_force_fp32,
                )
                for j in range(depth)
            )
            block_idx += depth
            self.add_module(f"patch_embed{i + 1}", patch_embed)
            self.add_module(f"blocks{i + 1}", blocks)
            self.add_module(f"norm{i + 1}", nn.BatchNorm2d(dim, eps=1e-5))

        self.head: nn.Module = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The reference's init. Only in-place random fills, nothing that reads values, so it
        # is a no-op on the meta device rather than an error.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            # He-normal on fan-out, with fan-out divided by groups (so depth-wise convs get
            # std sqrt(2 / k^2)).
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names of the non-1-D parameters that the training recipe keeps out of weight decay.

        These are the per-block layer scales (``layer_scale_1``/``_2``) and the ``sigma`` element
        scales of the Moga and CA-FFN modules, all of shape (1, C, 1, 1). The BOCB study's own
        MogaNet configs (OpenMixup, e.g. ``configs/classification/cifar100/advanced/
        moganet_s_adamw_bs100_ep200.py``) exclude every parameter whose name contains
        ``layer_scale`` or ``scale``, and the reference repository's ``main.py`` optimizer
        factory excludes every parameter whose squeezed shape is 1-D, which covers these too.
        (The reference's timm-based ``train.py`` decays them; its ``main.py`` rule would also
        exclude ``mlp.decompose.weight`` of shape (1, hidden, 1, 1), which is not listed here.)
        """
        suffixes = ("layer_scale_1", "layer_scale_2", "sigma.scale")
        return {name for name, _ in self.named_parameters() if name.endswith(suffixes)}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = (
            nn.Linear(self.num_features, num_classes, device=device)
            if num_classes > 0
            else nn.Identity()
        )
        self.head.apply(self._init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> normalised last-stage map (B, embed_dims[-1], H/32, W/32).

        With ``cifar_stem=True`` the map is (H/8, W/8) instead.
        """
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool of a feature map, then the linear head unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
