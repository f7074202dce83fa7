"""Analytic forward FLOP count of the denoiser (2 FLOPs per multiply-add of matmuls and convs).

Elementwise work (norms, GELU, softmax, residuals) is left out, as is customary: it is small next
to the matmuls and would make "achieved GFLOP/s" depend on what one chooses to count. The count
follows the matmuls the network runs: where cross-attention folds its query projection into the
keys (`tld.model.blocks.folds_query`) it counts the folded products, so the 101M model does
43.1 GFLOPs per 32x32 latent where the original network does 46.2.
"""

from __future__ import annotations

from tld.model.blocks import folds_query
from tld.model.config import DenoiserConfig


def cond_tokens(cfg: DenoiserConfig, text_tokens: int = 1) -> int:
    """Number of conditioning tokens the blocks cross-attend to."""
    return 1 + (text_tokens if cfg.text_dim else 0) + (1 if cfg.num_classes else 0)


def forward_flops(
    cfg: DenoiserConfig,
    batch: int = 1,
    height: int | None = None,
    width: int | None = None,
    text_tokens: int = 1,
) -> int:
    """FLOPs of one forward pass over `batch` latents of height x width (default: the trained size)."""
    h = height if height is not None else cfg.latent_size[0]
    w = width if width is not None else cfg.latent_size[1]
    p, e, c_in, c_out = cfg.patch_size, cfg.embed_dim, cfg.in_channels, cfg.out_channels
    n = (h // p) * (w // p)
    m = cond_tokens(cfg, text_tokens)
    hidden = cfg.mlp_ratio * e
    patch_dim = cfg.patch_dim or c_in * p * p

    # multiply-adds per image
    cond = cfg.noise_embed_dim * e + e * e + text_tokens * cfg.text_dim * e + cfg.extra_cond_dim * e
    embed = n * (patch_dim * c_in * p * p + patch_dim * e)
    attn = n * e * 3 * e + 2 * n * n * e
    if folds_query(n, m, e, cfg.cross_attn_heads):  # the query projection folded into the keys
        cross = m * e * 2 * e + cfg.cross_attn_heads * m * (e * e + 2 * n * e)
    else:
        cross = n * e * e + m * e * 2 * e + 2 * n * m * e
    ffn = n * (e * hidden + 9 * hidden + hidden * e)
    out = n * e * c_out * p * p
    macs = cond + embed + cfg.depth * (attn + cross + ffn) + out
    return 2 * macs * batch


def train_step_flops(cfg: DenoiserConfig, batch: int = 1, **kwargs: int) -> int:
    """Forward + backward, taking backward as twice the forward (the usual 3x rule)."""
    return 3 * forward_flops(cfg, batch, **kwargs)
