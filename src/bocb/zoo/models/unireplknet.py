"""UniRepLKNet, in its training-time (un-merged) form.

Paper: "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud,
Time-Series and Image Recognition", Xiaohan Ding, Yiyuan Zhang, Yixiao Ge, Sijie Zhao, Lin Song,
Xiangyu Yue, Ying Shan. CVPR 2024, arXiv:2311.15599.

Reference implementation: AILab-CVC/UniRepLKNet, ``unireplknet.py`` (the ImageNet classification
model, ``deploy=False``), trained with that repository's ``main.py``/``optim_factory.py``.

Architecture (as in the reference): a ConvNeXt-like four-stage layout. Stem = conv3x3/s2 ->
LN -> GELU -> conv3x3/s2 -> LN; between stages conv3x3/s2 -> LN. Each block is
``x + drop_path(gamma * BN(Linear(GRN(GELU(Linear(SE(BN(DW(x)))))))))`` where DW is a
Dilated Reparam Block (a large depth-wise kernel plus parallel dilated small depth-wise kernels,
each followed by its own BN, summed) for kernel sizes >= 7, a plain depth-wise conv for 3/5 and
nothing for 0. Head: global average pool -> LayerNorm -> Linear.

Deviations from the reference (none changes the function computed by the training-time model
or its parameter count, except the optional stem of item 1):

1. ``cifar_stem=True`` (not in the reference) makes both stem convolutions stride 1, so 32x32
   inputs give stage resolutions 32/16/8/4. Layer shapes and the parameter count are unchanged.
2. Only the native ``nn.Conv2d`` is used for the large depth-wise kernels; the reference can
   swap in its optional iGEMM CUDA kernel, which computes the same convolution.
3. The channels-first LayerNorm is timm's ``LayerNorm2d`` (permute + ``F.layer_norm``) and the SE
   block is timm's ``SEModule`` with ``rd_channels = dim // 4`` (mean-pool -> 1x1 conv -> ReLU
   -> 1x1 conv -> sigmoid): the same maths as the reference's hand-written modules, but float
   rounding may differ in the last bits.
4. Parameter names differ from the reference (e.g. ``se.fc1`` vs ``se.down``, no
   ``nn.Sequential`` indices around the permutes), so official checkpoints need a key map.
5. Drop-path rates are computed in Python (the reference uses ``torch.linspace(...).item()``,
   which cannot run on the ``meta`` device); the values are the same linear ramp.
6. Not implemented: the ``deploy=True`` constructor, the OpenMMLab feature-pyramid output mode,
   SyncBN, checkpoint download. Re-parameterisation is limited to
   ``DilatedReparamBlock.merge_branches`` (large + dilated branches + their BNs -> one conv);
   the reference's further folding of the block BN, GRN bias and layer scale is omitted.
   Gradient checkpointing is exposed through timm's ``set_grad_checkpointing`` convention
   instead of the reference's ``with_cp`` flag.

Weight decay: the reference recipe (``optim_factory.get_parameter_groups`` with
``skip_list=None`` and no ``no_weight_decay`` on the model) exempts exactly the 1-D parameters
and names ending in ``.bias``. The layer-scale ``gamma`` is 1-D and so exempt; the GRN
``gamma``/``beta`` are stored as (1, 1, 1, C) tensors and are therefore *decayed* by the
reference. This file keeps that 4-D shape so bocb's 1-D rule reproduces the reference, and
``no_weight_decay()`` returns an empty set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from timm.layers import DropPath, LayerNorm2d, SEModule, trunc_normal_

__all__ = ["UniRepLKNet", "DilatedReparamBlock", "VARIANTS"]

# Per-block kernel sizes of the reference models, keyed by depths (reference defaults).
# 0 = no token mixer, 3/5 = plain depth-wise conv, >= 7 = Dilated Reparam Block.
_T_KERNEL_SIZES: tuple[tuple[int, ...], ...] = (
    (3, 3, 3),
    (13, 13, 13),
    (13, 3) * 9,
    (13, 13, 13),
)
DEFAULT_KERNEL_SIZES: dict[tuple[int, ...], tuple[tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3, 3), (13, 13), (13,) * 6, (13, 13)),  # A / F / P
    (2, 2, 8, 2): ((3, 3), (13, 13), (13,) * 8, (13, 13)),  # N
    (3, 3, 18, 3): _T_KERNEL_SIZES,  # T
    (3, 3, 27, 3): ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13)),  # S / B / L / XL
}

# Branch settings of the Dilated Reparam Block per large kernel size: (small kernel, dilation).
# The reference calls these untuned defaults; each branch's receptive field r*(k-1)+1 is <= K,
# so every branch can be merged into the K x K kernel.
_DILATED_BRANCHES: dict[int, tuple[tuple[int, int], ...]] = {
    17: ((5, 1), (9, 2), (3, 4), (3, 5), (3, 7)),
    15: ((5, 1), (7, 2), (3, 3), (3, 5), (3, 7)),
    13: ((5, 1), (7, 2), (3, 3), (3, 4), (3, 5)),
    11: ((5, 1), (5, 2), (3, 3), (3, 4), (3, 5)),
    9: ((5, 1), (5, 2), (3, 3), (3, 4)),
    7: ((5, 1), (3, 2), (3, 3)),
    5: ((3, 1), (3, 2)),
}


def _fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BN into the preceding bias-free conv: returns (weight, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class DilatedReparamBlock(nn.Module):
    """Depth-wise K x K conv plus parallel dilated small depth-wise convs, each with its own BN.

    Input and output are (N, C, H, W) with the same H, W for any input size (every branch is
    padded to "same"). ``merge_branches()`` turns the block into a single K x K depth-wise conv
    with bias that gives the same output in eval mode.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size not in _DILATED_BRANCHES:
            raise ValueError(f"Dilated Reparam Block has no branch table for kernel {kernel_size}")
        self.kernel_size = kernel_size
        self.branches = _DILATED_BRANCHES[kernel_size]
        self.merged = False
        # Bias-free: the BN that follows supplies it (and a bias would be folded away anyway).
        self.lk_origin = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False
        )
        self.origin_bn = nn.BatchNorm2d(channels)
        self.dil_convs = nn.ModuleList()
        self.dil_bns = nn.ModuleList()
        for k, r in self.branches:
            self.dil_convs.append(
                nn.Conv2d(
                    channels,
                    channels,
                    k,
                    padding=(r * (k - 1) + 1) // 2,
                    dilation=r,
                    groups=channels,
                    bias=False,
                )
            )
            self.dil_bns.append(nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for conv, bn in zip(self.dil_convs, self.dil_bns):
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def merge_branches(self) -> None:
        """Fold all branches and BNs into ``lk_origin`` (uses BN running stats: eval semantics)."""
        if self.merged:
            return
        weight, bias = _fuse_conv_bn(self.lk_origin.weight, self.origin_bn)
        big = self.kernel_size
        for (k, r), conv, bn in zip(self.branches, self.dil_convs, self.dil_bns):
            w, b = _fuse_conv_bn(conv.weight, bn)
            # A k x k kernel at dilation r equals a dense (r(k-1)+1)^2 kernel with zeros between
            # taps; centre it inside the K x K kernel (both are odd, so the offset is exact).
            span = r * (k - 1) + 1
            off = (big - span) // 2
            weight[:, :, off : off + span : r, off : off + span : r] += w
            bias = bias + b
        channels = weight.shape[0]
        merged = nn.Conv2d(
            channels, channels, big, padding=big // 2, groups=channels, bias=True
        ).to(weight.device, weight.dtype)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        del self.origin_bn, self.dil_convs, self.dil_bns
        self.merged = True


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) for channels-last (N, H, W, C) input.

    gamma/beta keep the reference's (1, 1, 1, C) shape: the reference recipe decays them because
    they are not 1-D, and bocb's "exempt 1-D parameters" rule then does the same.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return (self.gamma * nx + 1) * x + self.beta


class UniRepLKNetBlock(nn.Module):
    """One UniRepLKNet block; (N, C, H, W) -> (N, C, H, W)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = 1e-6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if kernel_size == 0:
            self.dwconv: nn.Module = nn.Identity()
        elif kernel_size >= 7:
            self.dwconv = DilatedReparamBlock(dim, kernel_size)
        elif kernel_size in (3, 5):
            self.dwconv = nn.Conv2d(
                dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
            )
        else:
            raise ValueError(f"unsupported block kernel size {kernel_size} (use 0, 3, 5 or >= 7)")
        # The reference drops the BN together with the token mixer when kernel_size == 0.
        self.norm: nn.Module = nn.Identity() if kernel_size == 0 else nn.BatchNorm2d(dim)
        self.se = SEModule(dim, rd_channels=dim // 4, act_layer=nn.ReLU, gate_layer="sigmoid")
        hidden = int(mlp_ratio * dim)
        # The MLP runs channels-last so the pointwise layers are nn.Linear, as in the reference.
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        # Bias-free: the BN right after it makes a bias redundant.
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            if layer_scale_init_value is not None and layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y))))
        y = self.bn2(y.permute(0, 3, 1, 2))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class UniRepLKNet(nn.Module):
    """UniRepLKNet classifier: (B, in_chans, H, W) -> (B, num_classes).

    ``kernel_sizes[i][j]`` is the token-mixer kernel of block j in stage i (0, 3, 5 or >= 7);
    ``None`` takes the reference default for the given ``depths``. ``cifar_stem`` makes the stem
    stride 1 (total stride 8 instead of 32). Construction never reads tensor values, so it works
    under ``torch.device("meta")``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        cifar_stem: bool = False,
        in_chans: int = 3,
        dims: Sequence[int] = (80, 160, 320, 640),
        depths: Sequence[int] = (3, 3, 18, 3),
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        layer_scale_init_value: float | None = 1e-6,
        mlp_ratio: float = 4.0,
        head_init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        depths = tuple(int(d) for d in depths)
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError("UniRepLKNet has four stages: dims and depths need four entries")
        if kernel_sizes is None:
            if depths not in DEFAULT_KERNEL_SIZES:
                raise ValueError(f"no default kernel sizes for depths {depths}; pass kernel_sizes")
            kernel_sizes = DEFAULT_KERNEL_SIZES[depths]
        kernel_sizes = tuple(tuple(int(k) for k in stage) for stage in kernel_sizes)
        if tuple(len(k) for k in kernel_sizes) != depths:
            raise ValueError(f"kernel_sizes {kernel_sizes} do not match depths {depths}")

        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.cifar_stem = cifar_stem
        self.grad_checkpointing = False

        stem_stride = 1 if cifar_stem else 2
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, 3, stride=stem_stride, padding=1),
                LayerNorm2d(dims[0] // 2, eps=1e-6),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, stride=stem_stride, padding=1),
                LayerNorm2d(dims[0], eps=1e-6),
            )
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1),
                    LayerNorm2d(dims[i + 1], eps=1e-6),
                )
            )

        # Linear stochastic-depth ramp over all blocks, computed without tensors (meta-safe).
        total = sum(depths)
        dp_rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(
                nn.Sequential(
                    *[
                        UniRepLKNetBlock(
                            dims[i],
                            kernel_sizes[i][j],
                            drop_path=dp_rates[cur + j],
                            layer_scale_init_value=layer_scale_init_value,
                            mlp_ratio=mlp_ratio,
                        )
                        for j in range(depths[i])
                    ]
                )
            )
            cur += depths[i]

        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head: nn.Module = (
            nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        )

        self.apply(self._init_weights)
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)
                self.head.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Reference init: every conv and linear (incl. SE and dilated branches) ~ TN(0.02), bias 0;
        # norms keep their PyTorch defaults, GRN starts at zero, layer scale at 1e-6.
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names the reference recipe exempts beyond 1-D params/biases: none (see module doc)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in backward to save activation memory (the reference's with_cp)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear head (``num_classes == 0`` gives pooled, normed features)."""
        self.num_classes = num_classes
        if num_classes > 0:
            head = nn.Linear(self.num_features, num_classes)
            self._init_weights(head)
            self.head = head.to(self.norm.weight.device, self.norm.weight.dtype)
        else:
            self.head = nn.Identity()

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge every Dilated Reparam Block into one conv (call in eval mode, after training)."""
        for m in self.modules():
            if isinstance(m, DilatedReparamBlock):
                m.merge_branches()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> last-stage map (B, dims[-1], H/32, W/32) (H/8 with cifar_stem)."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = down(x)
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                for block in stage:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool -> LayerNorm -> Linear; ``pre_logits`` stops before the Linear."""
        x = self.norm(x.mean(dim=(-2, -1)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Architecture keyword arguments of UniRepLKNet.
VARIANTS: dict[str, dict] = {
    # UniRepLKNet-T: 31M params, 4.9 GFLOPs, 83.2% ImageNet-1k top-1 at 224.
    "paper": {
        "dims": (80, 160, 320, 640),
        "depths": (3, 3, 18, 3),
        "kernel_sizes": _T_KERNEL_SIZES,
    },
    # Same design at toy width/depth: 3x3 in stage 1, 13x13 Dilated Reparam Blocks in stages 2-4
    # with stage 3 alternating 13/3 as in T.
    "tiny": {
        "dims": (16, 32, 64, 128),
        "depths": (1, 1, 2, 1),
        "kernel_sizes": ((3,), (13,), (13, 3), (13,)),
    },
}

