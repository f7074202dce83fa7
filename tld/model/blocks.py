"""Building blocks of the denoiser, in plain PyTorch: noise embedding, patch embedding, attention,
LocalViT FFN, the transformer block. CPU kernel choices live apart, in `tld.model.cpu` (opt-in)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Fourier features of a scalar on log-spaced frequencies from 1 to 1000 (as the original TLD)."""

    def __init__(self, dim: int, min_freq: float = 1.0, max_freq: float = 1000.0):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        # Not persistent: it is a pure function of `dim`, so checkpoints need not carry it.
        self.register_buffer("angular_speeds", 2.0 * math.pi * freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.reshape(-1, 1).float() * self.angular_speeds
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, E): strided conv to C*p*p, LayerNorm, Linear to E, LayerNorm."""

    def __init__(self, in_channels: int, patch_size: int, embed_dim: int, patch_dim: int | None = None):
        super().__init__()
        patch_dim = patch_dim or in_channels * patch_size * patch_size
        self.conv = nn.Conv2d(in_channels, patch_dim, kernel_size=patch_size, stride=patch_size)
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, embed_dim)
        self.norm_out = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2).transpose(1, 2)
        return self.norm_out(self.proj(self.norm_in(x)))


class RMSNorm(nn.Module):
    """x / rms(x) * gain over the last dimension (QK-norm: Henry et al. 2020; SD3, ViT-22B)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.float() * scale).to(x.dtype) * self.weight.to(x.dtype)


def split_heads(x: torch.Tensor, heads: int, layout: str) -> torch.Tensor:
    """(B, N, E) -> (B, heads, N, E/heads) under the config's channel-to-head layout."""
    b, n, e = x.shape
    if layout == "interleaved":
        return x.view(b, n, e // heads, heads).permute(0, 3, 1, 2)
    return x.view(b, n, heads, e // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Inverse of `split_heads`: (B, heads, N, d) -> (B, N, heads*d)."""
    b, h, n, d = x.shape
    if layout == "interleaved":
        return x.permute(0, 2, 3, 1).reshape(b, n, d * h)
    return x.transpose(1, 2).reshape(b, n, h * d)


@dataclass
class TokenContext:
    """What every block needs besides its tokens: the conditioning tokens (B, M, E) and their key
    mask, the token grid, the kept token indices of masked training (B, K) or None (all tokens),
    and the adaLN conditioning vector (B, E) or None."""

    cond: torch.Tensor
    mask: torch.Tensor | None
    grid: tuple[int, int]
    keep: torch.Tensor | None = None
    vec: torch.Tensor | None = None

    def rows(self, start: int, stop: int) -> TokenContext:
        """The same context for batch rows [start, stop)."""

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return TokenContext(cut(self.cond), cut(self.mask), self.grid, cut(self.keep), cut(self.vec))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and no output projection (as TLD);
    `qk_norm` RMS-normalises queries and keys per head (stable logits in bf16 at scale)."""

    def __init__(self, embed_dim: int, heads: int, dropout: float, layout: str, qk_norm: bool = False):
        super().__init__()
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.heads, self.dropout, self.layout = heads, dropout, layout
        head_dim = embed_dim // heads
        self.q_norm = RMSNorm(head_dim) if qk_norm else None
        self.k_norm = RMSNorm(head_dim) if qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads, self.layout) for t in self.qkv(x).chunk(3, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        p = self.dropout if self.training else 0.0
        return merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=p), self.layout)


class CrossAttention(nn.Module):
    """Image tokens attend to the conditioning tokens; `mask` (B, M) bool marks keys to keep.

    With few conditioning tokens (the original's two: noise level and pooled text) the query
    projection is folded into the keys: scores = x @ (W_q^T k) instead of (x @ W_q^T) @ k, so the
    (N x E x E) query matmul becomes an (N x E x heads*M) one. Keys and values enter as
    block-diagonal (heads*M, E) matrices (head h's tokens keep only head h's channels), so both
    products are plain batched matmuls whose output is already the merged-heads layout. The same
    function as the projected path up to float rounding (tests/test_convert.py, test_model.py);
    `folds_query` picks the cheaper one. QK-norm needs the projected queries, so it never folds.
    """

    def __init__(self, embed_dim: int, heads: int, layout: str, qk_norm: bool = False):
        super().__init__()
        self.q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim, bias=False)
        self.heads, self.layout = heads, layout
        self.q_norm = RMSNorm(embed_dim // heads) if qk_norm else None
        self.k_norm = RMSNorm(embed_dim // heads) if qk_norm else None
        channel_head = split_heads(torch.arange(embed_dim)[None, None], heads, layout)
        select = torch.zeros(heads, embed_dim)
        select.scatter_(1, channel_head[0, :, 0], 1.0)
        # (heads, E): 1 where channel c belongs to head h; a pure function of the shape.
        self.register_buffer("head_select", select, persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.q_norm is None and folds_query(x.shape[1], cond.shape[1], x.shape[2], self.heads):
            return self.folded(x, cond, mask)
        q = split_heads(self.q(x), self.heads, self.layout)
        k, v = (split_heads(t, self.heads, self.layout) for t in self.kv(cond).chunk(2, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        attn_mask = None if mask is None else mask[:, None, None, :]
        return merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), self.layout)

    def folded(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The attention with the query projection folded into the keys (see the class docstring)."""
        b, n, e = x.shape
        select = self.head_select.to(cond.dtype)[None, :, None]  # (1, heads, 1, E)
        k, v = (t[:, None] * select for t in self.kv(cond).chunk(2, dim=-1))  # (B, heads, M, E)
        scale = (e // self.heads) ** -0.5
        keys = torch.matmul(k.flatten(1, 2), self.q.weight) * scale  # (B, heads*M, E)
        scores = torch.bmm(x, keys.transpose(1, 2)).view(b, n, self.heads, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        probs = scores.softmax(dim=-1).view(b, n, -1)
        return torch.bmm(probs, v.flatten(1, 2))


def folds_query(tokens: int, keys: int, embed_dim: int, heads: int) -> bool:
    """Whether folding the query projection into the keys takes fewer multiply-adds per image:
    heads*M*E*E + 2*N*E*heads*M against N*E*E + 2*N*M*E (tld.model.flops counts the same)."""
    return heads * keys * (embed_dim + 2 * tokens) < tokens * (embed_dim + 2 * keys)


def to_grid(h: torch.Tensor, grid: tuple[int, int], keep: torch.Tensor | None) -> torch.Tensor:
    """(B, K, C) token features -> a channels-last (B, C, rows, cols) image; with `keep` (masked
    training) the dropped tokens' cells are zeros, so the 3x3 conv sees the kept neighbours only."""
    b, _, c = h.shape
    if keep is not None:
        full = h.new_zeros(b, grid[0] * grid[1], c)
        h = full.scatter(1, keep[:, :, None].expand(-1, -1, c), h)
    return h.view(b, grid[0], grid[1], c).permute(0, 3, 1, 2)  # a view: channels-last, no copy


def from_grid(img: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Inverse of `to_grid`: (B, C, rows, cols) -> (B, K, C), the kept tokens only."""
    b, c = img.shape[:2]
    h = img.permute(0, 2, 3, 1).reshape(b, -1, c)
    if keep is None:
        return h
    return h.gather(1, keep[:, :, None].expand(-1, -1, c))


class LocalFFN(nn.Module):
    """LocalViT feed-forward: Linear -> depthwise 3x3 conv over the token grid -> GELU -> Linear.

    The hidden activations stay token-major (B, N, hidden); viewing them as a channels-last image
    lets the depthwise conv run without transposing copies.
    """

    def __init__(self, embed_dim: int, mlp_ratio: int, dropout: float):
        super().__init__()
        hidden = mlp_ratio * embed_dim
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int], keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        img = to_grid(self.fc1(x), grid, keep)
        img = self.act(self.dwconv(img.contiguous(memory_format=torch.channels_last)))
        return self.drop(self.fc2(from_grid(img, keep)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: a per-sample affine map of normalised tokens; shift/scale (B, 1, E)."""
    return x * (1 + scale) + shift


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the conditioning tokens and LocalViT FFN, with residuals.

    `norm_position="pre"`: x + f(norm(x)) (stable for deep/new models);
    `"post"`: norm(x + f(x)), the original TLD block.
    `adaln` (pre-norm only; DiT's adaLN-Zero, Peebles & Xie 2023): each sub-layer's normalised input
    is shifted and scaled, and its output gated, by values regressed from the conditioning vector;
    the regression starts at zero, so every block starts as the identity.
    """

    def __init__(
        self,
        embed_dim: int,
        heads: int,
        cross_heads: int,
        mlp_ratio: int,
        dropout: float,
        norm_position: str,
        layout: str,
        qk_norm: bool = False,
        adaln: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = SelfAttention(embed_dim, heads, dropout, layout, qk_norm)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.cross = CrossAttention(embed_dim, cross_heads, layout, qk_norm)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.ffn = LocalFFN(embed_dim, mlp_ratio, dropout)
        self.pre_norm = norm_position == "pre"
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 9 * embed_dim)) if adaln else None
        if self.ada is not None:
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, ctx: TokenContext) -> torch.Tensor:
        if self.ada is not None:
            return self.modulated(x, ctx)
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            x = x + self.cross(self.norm2(x), ctx.cond, ctx.mask)
            return x + self.ffn(self.norm3(x), ctx.grid, ctx.keep)
        x = self.norm1(x + self.attn(x))
        x = self.norm2(x + self.cross(x, ctx.cond, ctx.mask))
        return self.norm3(x + self.ffn(x, ctx.grid, ctx.keep))

    def modulated(self, x: torch.Tensor, ctx: TokenContext) -> torch.Tensor:
        """The adaLN-Zero pre-norm block."""
        mods = self.ada(ctx.vec)[:, None].chunk(9, dim=-1)
        x = x + mods[2] * self.attn(modulate(self.norm1(x), mods[0], mods[1]))
        x = x + mods[5] * self.cross(modulate(self.norm2(x), mods[3], mods[4]), ctx.cond, ctx.mask)
        return x + mods[8] * self.ffn(modulate(self.norm3(x), mods[6], mods[7]), ctx.grid, ctx.keep)
