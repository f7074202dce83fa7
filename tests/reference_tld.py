"""The original TLD network, re-implemented as the reference our converter and our speed are measured against.

`OriginalTLD` follows the original (github apapiu/transformer_latent_diffusion, tld/denoiser.py +
tld/transformer_blocks.py) with its module names, so its state_dict has the original keys and
shapes, in both of upstream's variants:
- "released" (branch legacy_dh_order, the published weights): post-norm blocks, self-attention with
  embed_dim // 64 heads, cross-attention with 4, heads taking channels interleaved ("(d h)");
- "main": pre-norm blocks (x + f(norm(x))), "(h d)" heads, embed_dim // 64 heads in both attentions.
Both: 1x1 convs in the MLP, no attention out-projection, no final norm.

Imported by the tests (tests/ is on sys.path there) and by bench/vs_original.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Fourier(nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        speeds = 2.0 * math.pi * torch.exp(torch.linspace(math.log(1.0), math.log(1000.0), dims // 2))
        self.register_buffer("angular_speeds", speeds)

    def forward(self, x):
        return torch.cat([torch.sin(self.angular_speeds * x), torch.cos(self.angular_speeds * x)], dim=-1)


def _heads_attention(q, k, v, heads, variant):
    def split(t):
        b, n, e = t.shape
        if variant == "main":  # "bs n (h d) -> bs h n d"
            return t.reshape(b, n, heads, e // heads).permute(0, 2, 1, 3)
        # "bs n (d h) -> bs h n d": head index varies fastest along the channels.
        return t.reshape(b, n, e // heads, heads).permute(0, 3, 1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    b, h, n, d = out.shape
    if variant == "main":
        return out.permute(0, 2, 1, 3).reshape(b, n, h * d)
    return out.permute(0, 2, 3, 1).reshape(b, n, d * h)


class _SelfAttention(nn.Module):
    def __init__(self, e, variant):
        super().__init__()
        self.qkv_linear = nn.Linear(e, 3 * e, bias=False)
        self.heads, self.variant = e // 64, variant

    def forward(self, x):
        q, k, v = self.qkv_linear(x).chunk(3, dim=2)
        return _heads_attention(q, k, v, self.heads, self.variant)


class _CrossAttention(nn.Module):
    def __init__(self, e, variant):
        super().__init__()
        self.kv_linear = nn.Linear(e, 2 * e, bias=False)
        self.q_linear = nn.Linear(e, e, bias=False)
        self.heads = e // 64 if variant == "main" else 4
        self.variant = variant

    def forward(self, x, y):
        k, v = self.kv_linear(y).chunk(2, dim=2)
        return _heads_attention(self.q_linear(x), k, v, self.heads, self.variant)


class _SepConvMLP(nn.Module):
    def __init__(self, e, mult):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(e, mult * e, 1),
            nn.Conv2d(mult * e, mult * e, 3, padding="same", groups=mult * e),
            nn.GELU(),
            nn.Conv2d(mult * e, e, 1),
            nn.Dropout(0.0),
        )

    def forward(self, x):
        b, n, e = x.shape
        side = int(math.sqrt(n))
        img = x.transpose(1, 2).reshape(b, e, side, side)
        return self.mlp(img).reshape(b, e, n).transpose(1, 2)


class _DecoderBlock(nn.Module):
    def __init__(self, e, mult, variant):
        super().__init__()
        self.self_attention = _SelfAttention(e, variant)
        self.cross_attention = _CrossAttention(e, variant)
        self.mlp = _SepConvMLP(e, mult)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(e), nn.LayerNorm(e), nn.LayerNorm(e)
        self.variant = variant

    def forward(self, x, y):
        if self.variant == "main":
            x = self.self_attention(self.norm1(x)) + x
            x = self.cross_attention(self.norm2(x), y) + x
            return self.mlp(self.norm3(x)) + x
        x = self.norm1(self.self_attention(x) + x)
        x = self.norm2(self.cross_attention(x, y) + x)
        return self.norm3(self.mlp(x) + x)


class _Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class _TransBlock(nn.Module):
    def __init__(self, patch, image, e, layers, mult, channels, variant):
        super().__init__()
        patch_dim = channels * patch * patch
        seq = (image // patch) ** 2
        self.patch, self.side, self.channels = patch, image // patch, channels
        self.patchify_and_embed = nn.Sequential(
            nn.Conv2d(channels, patch_dim, patch, stride=patch),
            _Flatten(),
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, e),
            nn.LayerNorm(e),
        )
        self.pos_embed = nn.Embedding(seq, e)
        self.register_buffer("precomputed_pos_enc", torch.arange(seq).long())
        self.decoder_blocks = nn.ModuleList(_DecoderBlock(e, mult, variant) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.Linear(e, patch_dim))

    def forward(self, x, cond):
        x = self.patchify_and_embed(x)
        x = x + self.pos_embed(self.precomputed_pos_enc[: x.size(1)].expand(x.size(0), -1))
        for block in self.decoder_blocks:
            x = block(x, cond)
        x = self.out_proj(x)
        b, s, p, c = x.shape[0], self.side, self.patch, self.channels
        # "b (h w) (c p1 p2) -> b c (h p1) (w p2)"
        return x.reshape(b, s, s, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s * p, s * p)


class OriginalTLD(nn.Module):
    def __init__(
        self, image_size, noise_embed_dims, patch_size, embed_dim, n_layers, text_emb_size, variant="released"
    ):
        super().__init__()
        self.fourier_feats = nn.Sequential(
            _Fourier(noise_embed_dims),
            nn.Linear(noise_embed_dims, embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, embed_dim),
        )
        self.denoiser_trans_block = _TransBlock(patch_size, image_size, embed_dim, n_layers, 4, 4, variant)
        self.norm = nn.LayerNorm(embed_dim)
        self.label_proj = nn.Linear(text_emb_size, embed_dim)

    def forward(self, x, noise_level, label):
        cond = torch.cat(
            [self.fourier_feats(noise_level).unsqueeze(1), self.label_proj(label).unsqueeze(1)], 1
        )
        return self.denoiser_trans_block(x, self.norm(cond))


def make_original(seed=0, embed=128, layers=2, image=8, patch=2, noise_dims=32, text=24, variant="released"):
    torch.manual_seed(seed)
    net = OriginalTLD(image, noise_dims, patch, embed, layers, text, variant).eval()
    # Non-trivial norms and biases, so a mis-mapped LayerNorm or bias cannot go unnoticed.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return net
