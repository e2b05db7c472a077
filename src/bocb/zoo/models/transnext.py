"""TransNeXt backbone.

Paper: "TransNeXt: Robust Foveal Visual Perception for Vision Transformers", Dai Shi, CVPR 2024,
arXiv:2311.17132.

Reference implementation: github.com/DaiShiResearch/TransNeXt,
``classification/transnext_native.py`` (the pure-PyTorch path; the optional CUDA "swattention"
extension computes the same function faster and is not needed here). Module and parameter names
follow that file, so its ImageNet-1k checkpoints load into this class with ``strict=True``.

Design, per stage (four stages at strides 4, 8, 16, 32 of the input):

- overlapping patch embedding (7x7/stride 4 conv for the stem, 3x3/stride 2 after), LayerNorm;
- pre-norm blocks ``x + attn(norm1(x))``, ``x + ConvGLU(norm2(x))`` with stochastic depth;
- stages 1-3 use *aggregated attention*: every query attends, under a single softmax, to its 3x3
  sliding-window neighbourhood (pixel-focused attention, fine tokens, zero padding masked out) and
  to a pooled grid of the whole map (conv1x1 -> GELU -> adaptive average pool -> LayerNorm, pool
  size = stage resolution // sr_ratio, i.e. 7x7 at 224). Similarities are cosine similarities
  (L2-normalised q and k) with a learnable query embedding added to q, scaled by
  softplus(temperature) * log(number of keys the query sees) ("length-scaled cosine attention").
  The window keys carry a learnable relative position bias; the pooled keys carry a continuous
  relative position bias produced by a 2-512-heads MLP (CPB) from log-spaced relative
  coordinates. The window values are weighted by the softmax weights plus a query-dependent term
  ``q_norm @ learnable_tokens + learnable_bias`` (the paper's "learnable tokens");
- stage 4 uses plain full self-attention with the same cosine/length scaling, query embedding and
  CPB bias;
- convolutional GLU: fc1 to two halves of width 2/3 * mlp_ratio * dim, GELU(dwconv3x3(a)) * b, fc2;
- classification: LayerNorm after every stage, global average pool, linear head.

Deviations from the reference (every other detail, including initialisation, follows it):

1. ``cifar_stem=True`` keeps the 7x7 stem conv but with stride 1 (not 4), so 32x32 inputs run the
   stages at 32, 16, 8, 4. The reference has no such option.
2. The resolution-dependent tensors (CPB coordinate table and index, the window padding mask, the
   length scales) are not buffers built at construction but computed on the first forward at
   each (stage, H, W, device) and cached; construction therefore works on the meta device and
   the model accepts any input size. At the training resolution ``img_size`` they are exactly the
   reference's buffers. At other sizes the model follows the reference's own multi-scale path
   (``is_extrapolation=True`` in ``segmentation/transnext_native.py``): pool size = actual stage
   resolution // sr_ratio, coordinates recomputed for the actual grid and normalised by the
   training grid (``img_size``, or ``pretrain_size`` when given). The classification reference
   instead fixes the pool size and tables at construction and cannot run other sizes.
3. The CPB coordinate table is built per axis (unique row offsets x unique column offsets) rather
   than by ``torch.unique`` over (dy, dx) pairs. The pair set is a full product and both are
   sorted lexicographically, so table and index are identical; it is only cheaper.
4. Stage-1 stride, kernel sizes etc. are derived the reference's way from ``patch_size``; the
   training grid per stage is ``img_size // stem_stride // 2**i`` (the reference hard-codes
   ``img_size // 2**(i+2)``, equal for the ImageNet stem). Normalisers are clamped at 1 so a
   1-pixel training grid does not divide by zero.
5. ``forward_features`` returns the final (normed) NCHW map and ``forward_head`` pools it (timm
   convention); the reference pools inside ``forward_features``. Logits are identical.
6. ``no_weight_decay()`` returns the full names of the parameters that the reference's
   ``no_weight_decay_keywords()`` (query_embedding, relative_pos_bias_local, cpb, temperature)
   matches by substring in its optimizer; the resulting parameter groups are the same. As in the
   reference, ``learnable_tokens`` and ``learnable_bias`` *are* decayed.
7. ``reset_classifier`` works (the reference's refers to a missing ``self.embed_dim``); the
   stochastic-depth schedule is computed in Python instead of ``torch.linspace(...).item()`` so
   that meta-device construction reads no tensor values.
8. Extra knobs the reference hard-codes: ``cpb_hidden`` (CPB MLP width, reference 512, the default
   everywhere here) and ``cifar_stem``; ``window_sizes`` is the reference's ``window_size`` list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torch import Tensor, nn

__all__ = ["VARIANTS", "TransNeXt"]

VARIANTS: dict[str, dict] = {
    # transnext_tiny of the reference.
    "paper": dict(
        embed_dims=(72, 144, 288, 576),
        depths=(2, 2, 15, 2),
        num_heads=(3, 6, 12, 24),
        mlp_ratios=(8.0, 8.0, 4.0, 4.0),
        window_sizes=(3, 3, 3, None),
        sr_ratios=(8, 4, 2, 1),
    ),
    # Same design (aggregated attention in stages 1-3, full attention in stage 4), CPU-sized.
    "tiny": dict(
        embed_dims=(16, 32, 64, 128),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 4),
        mlp_ratios=(8.0, 8.0, 4.0, 4.0),
        window_sizes=(3, 3, 3, None),
        sr_ratios=(8, 4, 2, 1),
    ),
}

# Parameters the reference optimizer keeps out of weight decay, matched by substring.
_NO_DECAY_KEYWORDS = ("query_embedding", "relative_pos_bias_local", "cpb", "temperature")

# softplus(temperature) starts at 1/0.24, as in the reference.
_TEMPERATURE_INIT = math.log(math.expm1(1.0 / 0.24))


class StageGeometry(NamedTuple):
    """Resolution-dependent, parameter-free tensors shared by all blocks of one stage."""

    pool_size: tuple[int, int]  # grid of pooled keys (= query grid for full attention)
    pos_index: Tensor  # (N, P) long: row of ``coords`` for each (query, pooled key) pair
    coords: Tensor  # (T, 2) float32 log-spaced relative coordinates fed to the CPB MLP
    length_scale: Tensor  # (N, 1) or 0-d float32: log(number of keys each query sees)
    padding_mask: Tensor | None  # (N, window**2) bool, True where the window leaves the map


@torch.no_grad()
def relative_position_cpb(
    query_size: tuple[int, int],
    key_size: tuple[int, int],
    norm_size: tuple[int, int],
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Index (Nq, Nk) and log-spaced coordinate table (T, 2) for the continuous position bias.

    Keys sit at the centres of an adaptive average pool of the query grid to ``key_size``.
    Offsets are scaled to [-8, 8] by the training grid ``norm_size`` and then log-spaced:
    sign(d) * log2(|d| + 1) / log2(8). Equal to the reference's ``get_relative_position_cpb``.
    """

    def axis(n_query: int, n_key: int, n_norm: int) -> tuple[Tensor, Tensor]:
        q = torch.arange(n_query, dtype=torch.float32, device=device)
        k = F.adaptive_avg_pool1d(q[None], n_key)[0]
        rel = (q[:, None] - k[None, :]) / max(n_norm - 1, 1) * 8
        values, inverse = torch.unique(rel, return_inverse=True)  # inverse: (n_query, n_key)
        return values, inverse

    values_h, inv_h = axis(query_size[0], key_size[0], norm_size[0])
    values_w, inv_w = axis(query_size[1], key_size[1], norm_size[1])
    # (qh, qw, kh, kw) -> row of the product table, row-major in (h, w) like a 2-D unique.
    index = inv_h[:, None, :, None] * values_w.numel() + inv_w[None, :, None, :]
    index = index.reshape(query_size[0] * query_size[1], key_size[0] * key_size[1])
    table = torch.stack(torch.meshgrid(values_h, values_w, indexing="ij"), dim=-1).reshape(-1, 2)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return index, table


@torch.no_grad()
def window_padding(
    size: tuple[int, int], window: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Valid-neighbour count (N, 1) and padding mask (N, window**2) of a zero-padded window."""
    valid = F.unfold(torch.ones(1, 1, *size, device=device), window, padding=window // 2)[0]
    return valid.sum(0)[:, None], (valid == 0).transpose(0, 1)


class _CPBMixin:
    """Continuous relative position bias: an MLP on the log-spaced coordinate table."""

    cpb_fc1: nn.Linear
    cpb_act: nn.Module
    cpb_fc2: nn.Linear

    def _init_cpb(self, num_heads: int, hidden: int) -> None:
        self.cpb_fc1 = nn.Linear(2, hidden, bias=True)
        self.cpb_act = nn.ReLU(inplace=True)
        self.cpb_fc2 = nn.Linear(hidden, num_heads, bias=True)

    def _position_bias(self, geo: StageGeometry, num_queries: int, num_keys: int) -> Tensor:
        """(heads, N, P) bias; the MLP runs once per unique offset, then is gathered."""
        table = geo.coords.to(self.cpb_fc1.weight.dtype)
        bias = self.cpb_fc2(self.cpb_act(self.cpb_fc1(table))).transpose(0, 1)
        return bias[:, geo.pos_index.reshape(-1)].reshape(-1, num_queries, num_keys)


class AggregatedAttention(_CPBMixin, nn.Module):
    """Pixel-focused sliding-window attention + pooled-token attention under one softmax.

    Input/output (B, N, C) tokens of an H x W map. Stateless w.r.t. resolution: everything that
    depends on H, W comes in ``geo``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 3,
        sr_ratio: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_hidden: int = 512,
    ) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} must be divisible by num_heads {num_heads}"
        assert window_size % 2 == 1, "window size must be odd (the window is centred on the query)"
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio = sr_ratio
        self.window_size = window_size
        self.local_len = window_size**2

        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), _TEMPERATURE_INIT))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(
            trunc_normal_(torch.empty(num_heads, 1, self.head_dim), mean=0.0, std=0.02)
        )
        # One kv projection serves both the window (fine) and the pooled (coarse) keys/values.
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        # Pooled-feature branch: conv1x1 -> GELU -> adaptive avg pool -> LayerNorm.
        self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1, padding=0)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()

        self._init_cpb(num_heads, cpb_hidden)
        # Static relative position bias of the window keys.
        self.relative_pos_bias_local = nn.Parameter(
            trunc_normal_(torch.empty(num_heads, self.local_len), mean=0.0, std=0.0004)
        )
        # Query-dependent extra weights on the window values ("learnable tokens").
        self.learnable_tokens = nn.Parameter(
            trunc_normal_(torch.empty(num_heads, self.head_dim, self.local_len), mean=0.0, std=0.02)
        )
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, self.local_len))

    def forward(self, x: Tensor, H: int, W: int, geo: StageGeometry) -> Tensor:
        B, N, C = x.shape
        heads, head_dim, L = self.num_heads, self.head_dim, self.local_len
        pool_len = geo.pool_size[0] * geo.pool_size[1]

        # Cosine queries; softplus keeps the temperature positive, the length scale keeps the
        # attention entropy stable across resolutions.
        q_norm = F.normalize(self.q(x).reshape(B, N, heads, head_dim).transpose(1, 2), dim=-1)
        q_scaled = (
            (q_norm + self.query_embedding)
            * F.softplus(self.temperature)
            * geo.length_scale.to(q_norm.dtype)
        )

        # Window keys/values: normalise k per head before unfolding so that the zero padding
        # stays zero; the padded slots are masked out of the softmax anyway.
        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k.reshape(B, N, heads, head_dim), dim=-1).reshape(B, N, C)
        kv = torch.cat([k, v], dim=-1).transpose(1, 2).reshape(B, 2 * C, H, W)
        kv = F.unfold(kv, self.window_size, padding=self.window_size // 2)  # (B, 2C*L, N)
        k_local, v_local = (
            kv.reshape(B, 2 * heads, head_dim, L, N).permute(0, 1, 4, 2, 3).chunk(2, dim=1)
        )  # each (B, heads, N, head_dim, L)
        attn_local = (q_scaled.unsqueeze(-2) @ k_local).squeeze(-2)
        attn_local = attn_local + self.relative_pos_bias_local.unsqueeze(1)
        attn_local = attn_local.masked_fill(geo.padding_mask, float("-inf"))

        # Pooled keys/values over the whole map.
        pooled = x.transpose(1, 2).reshape(B, C, H, W)
        pooled = F.adaptive_avg_pool2d(self.act(self.sr(pooled)), geo.pool_size)
        pooled = self.norm(pooled.reshape(B, C, pool_len).transpose(1, 2))
        kv_pool = self.kv(pooled).reshape(B, pool_len, 2 * heads, head_dim).transpose(1, 2)
        k_pool, v_pool = kv_pool.chunk(2, dim=1)
        attn_pool = q_scaled @ F.normalize(k_pool, dim=-1).transpose(-2, -1)
        attn_pool = attn_pool + self._position_bias(geo, N, pool_len)

        # One softmax over window + pooled keys, then split to aggregate each value set.
        attn = torch.cat([attn_local, attn_pool], dim=-1).softmax(dim=-1)
        attn = self.attn_drop(attn)
        attn_local, attn_pool = torch.split(attn, [L, pool_len], dim=-1)
        weights_local = q_norm @ self.learnable_tokens + self.learnable_bias + attn_local
        x_local = (weights_local.unsqueeze(-2) @ v_local.transpose(-2, -1)).squeeze(-2)
        x = (x_local + attn_pool @ v_pool).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Attention(_CPBMixin, nn.Module):
    """Full self-attention of the last stage, length-scaled cosine form with CPB bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        cpb_hidden: int = 512,
    ) -> None:
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} must be divisible by num_heads {num_heads}"
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), _TEMPERATURE_INIT))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.query_embedding = nn.Parameter(
            trunc_normal_(torch.empty(num_heads, 1, self.head_dim), mean=0.0, std=0.02)
        )
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._init_cpb(num_heads, cpb_hidden)

    def forward(self, x: Tensor, H: int, W: int, geo: StageGeometry) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3 * self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=1)
        q = (
            (F.normalize(q, dim=-1) + self.query_embedding)
            * F.softplus(self.temperature)
            * geo.length_scale.to(q.dtype)
        )
        attn = q @ F.normalize(k, dim=-1).transpose(-2, -1) + self._position_bias(geo, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class DWConv(nn.Module):
    """Depth-wise 3x3 conv on (B, N, C) tokens of an H x W map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=True, groups=dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, H, W))
        return x.flatten(2).transpose(1, 2)


class ConvolutionalGLU(nn.Module):
    """GLU whose gate branch passes a depth-wise 3x3 conv; hidden width 2/3 of ``hidden_features``
    so that parameters match a plain MLP of width ``hidden_features``."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(2 * hidden_features / 3)
        self.fc1 = nn.Linear(in_features, hidden * 2)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        x, v = self.fc1(x).chunk(2, dim=-1)
        x = self.drop(self.act(self.dwconv(x, H, W)) * v)
        return self.drop(self.fc2(x))


class Block(nn.Module):
    """Pre-norm block: aggregated attention (sr_ratio > 1) or full attention, then ConvGLU."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | None,
        sr_ratio: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_path: float,
        norm_layer: type[nn.Module] | partial,
        cpb_hidden: int,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        if sr_ratio == 1:
            self.attn: nn.Module = Attention(
                dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                cpb_hidden=cpb_hidden,
            )
        else:
            assert window_size is not None, "aggregated attention needs a window size"
            self.attn = AggregatedAttention(
                dim, num_heads, window_size=window_size, sr_ratio=sr_ratio, qkv_bias=qkv_bias,
                attn_drop=attn_drop, proj_drop=drop, cpb_hidden=cpb_hidden,
            )
        self.norm2 = norm_layer(dim)
        self.mlp = ConvolutionalGLU(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, H: int, W: int, geo: StageGeometry) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W, geo))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping kernels, then LayerNorm; NCHW in, (B, N, C) tokens out."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        k = to_2tuple(patch_size)
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=k, stride=stride, padding=(k[0] // 2, k[1] // 2)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class TransNeXt(nn.Module):
    """TransNeXt classifier: (B, in_chans, H, W) images -> (B, num_classes) logits.

    ``img_size`` (or ``pretrain_size``) only sets the training grid used to normalise the CPB
    coordinates, as in the reference; inputs of other sizes work (see module docstring).
    Defaults are TransNeXt-Tiny (``VARIANTS["paper"]``).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        cifar_stem: bool = False,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        embed_dims: Sequence[int] = (72, 144, 288, 576),
        depths: Sequence[int] = (2, 2, 15, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratios: Sequence[float] = (8.0, 8.0, 4.0, 4.0),
        window_sizes: Sequence[int | None] = (3, 3, 3, None),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        patch_size: int = 4,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        pretrain_size: int | tuple[int, int] | None = None,
        cpb_hidden: int = 512,
    ) -> None:
        super().__init__()
        self.num_stages = len(depths)
        for name, seq in (("embed_dims", embed_dims), ("num_heads", num_heads),
                          ("mlp_ratios", mlp_ratios), ("window_sizes", window_sizes),
                          ("sr_ratios", sr_ratios)):
            assert len(seq) == self.num_stages, f"{name} needs one entry per stage"
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.num_features = self.embed_dims[-1]
        self.depths = tuple(depths)
        self.window_sizes = tuple(window_sizes)
        self.sr_ratios = tuple(sr_ratios)
        self.stem_stride = 1 if cifar_stem else patch_size
        # Training grid of each stage, the normaliser of the CPB coordinates.
        base = to_2tuple(pretrain_size or img_size)
        self.train_sizes = [
            (base[0] // self.stem_stride // 2**i, base[1] // self.stem_stride // 2**i)
            for i in range(self.num_stages)
        ]
        self._geometry_cache: dict[tuple, StageGeometry] = {}

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        total = sum(depths)
        # Linear stochastic-depth schedule, as torch.linspace(0, rate, total) without tensors.
        dpr = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        cur = 0
        for i in range(self.num_stages):
            patch_embed = OverlapPatchEmbed(
                patch_size=patch_size * 2 - 1 if i == 0 else 3,
                stride=self.stem_stride if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
            )
            block = nn.ModuleList(
                Block(
                    embed_dims[i], num_heads[i], window_sizes[i], sr_ratios[i], mlp_ratios[i],
                    qkv_bias, drop_rate, attn_drop_rate, dpr[cur + j], norm_layer, cpb_hidden,
                )
                for j in range(depths[i])
            )
            cur += depths[i]
            # Reference names (patch_embed1, block1, norm1, ...) keep its checkpoints loadable.
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", block)
            setattr(self, f"norm{i + 1}", norm_layer(embed_dims[i]))

        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Reference init: trunc-normal(0.02) linears, fan-out normal convs, unit LayerNorms."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters the reference recipe does not decay."""
        return {n for n, _ in self.named_parameters() if any(k in n for k in _NO_DECAY_KEYWORDS)}

    def no_weight_decay_keywords(self) -> set[str]:
        """The reference's substring form of ``no_weight_decay``."""
        return set(_NO_DECAY_KEYWORDS)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a freshly initialised one (global average pooling is fixed)."""
        self.num_classes = num_classes
        ref = getattr(self, f"norm{self.num_stages}").weight
        if num_classes > 0:
            self.head = nn.Linear(
                self.num_features, num_classes, device=ref.device, dtype=ref.dtype
            )
            self._init_weights(self.head)
        else:
            self.head = nn.Identity()

    def _geometry(self, stage: int, H: int, W: int, device: torch.device) -> StageGeometry:
        """Cached resolution-dependent tensors of one stage (built once per size and device)."""
        key = (stage, H, W, device)
        geo = self._geometry_cache.get(key)
        if geo is not None:
            return geo
        # Built outside inference mode so that a cache filled during evaluation can still be
        # saved for backward in a later training step.
        with torch.inference_mode(False), torch.no_grad():
            sr = self.sr_ratios[stage]
            pool = (max(H // sr, 1), max(W // sr, 1))
            index, coords = relative_position_cpb((H, W), pool, self.train_sizes[stage], device)
            if sr == 1:  # full attention: every query sees all N keys
                scale = torch.log(torch.tensor(float(H * W), device=device))
                mask = None
            else:  # window keys inside the map + all pooled keys
                local_len, mask = window_padding((H, W), self.window_sizes[stage], device)
                scale = torch.log(local_len + pool[0] * pool[1])
        geo = StageGeometry(pool, index, coords, scale, mask)
        self._geometry_cache[key] = geo
        return geo

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> normed last-stage map (B, num_features, H/32, W/32)."""
        B = x.shape[0]
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            geo = self._geometry(i, H, W, x.device)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W, geo)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, then the linear head unless ``pre_logits``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
