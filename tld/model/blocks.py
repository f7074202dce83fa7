"""Building blocks of the denoiser: noise embedding, patch embedding, attention, LocalViT FFN, block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tld.model import fused


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


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and no output projection (as TLD)."""

    def __init__(self, embed_dim: int, heads: int, dropout: float, layout: str):
        super().__init__()
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.heads, self.dropout, self.layout = heads, dropout, layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = fused.linear(self.qkv, x)
        q, k, v = (split_heads(t, self.heads, self.layout) for t in qkv.chunk(3, dim=-1))
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
    `folds_query` picks the cheaper one.
    """

    def __init__(self, embed_dim: int, heads: int, layout: str):
        super().__init__()
        self.q = nn.Linear(embed_dim, embed_dim, bias=False)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim, bias=False)
        self.heads, self.layout = heads, layout
        channel_head = split_heads(torch.arange(embed_dim)[None, None], heads, layout)
        select = torch.zeros(heads, embed_dim)
        select.scatter_(1, channel_head[0, :, 0], 1.0)
        # (heads, E): 1 where channel c belongs to head h; a pure function of the shape.
        self.register_buffer("head_select", select, persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if folds_query(x.shape[1], cond.shape[1], x.shape[2], self.heads):
            return self.folded(x, cond, mask)
        q = split_heads(self.q(x), self.heads, self.layout)
        k, v = (split_heads(t, self.heads, self.layout) for t in self.kv(cond).chunk(2, dim=-1))
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
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        h = fused.linear(self.fc1, x)
        c = h.shape[-1]
        img = h.view(b, grid[0], grid[1], c).permute(0, 3, 1, 2)  # channels-last view, no copy
        img = fused.depthwise_gelu(self.dwconv, img.contiguous(memory_format=torch.channels_last))
        h = img.permute(0, 2, 3, 1).reshape(b, n, c)
        return self.drop(fused.linear(self.fc2, h))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the conditioning tokens and LocalViT FFN, with residuals.

    `norm_position="pre"`: x + f(norm(x)) (stable for deep/new models);
    `"post"`: norm(x + f(x)), the original TLD block.
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
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = SelfAttention(embed_dim, heads, dropout, layout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.cross = CrossAttention(embed_dim, cross_heads, layout)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.ffn = LocalFFN(embed_dim, mlp_ratio, dropout)
        self.pre_norm = norm_position == "pre"

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None, grid: tuple[int, int]
    ) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            x = x + self.cross(self.norm2(x), cond, mask)
            return x + self.ffn(self.norm3(x), grid)
        x = self.norm1(x + self.attn(x))
        x = self.norm2(x + self.cross(x, cond, mask))
        return self.norm3(x + self.ffn(x, grid))
