"""Model surgery for inpainting: the extra input channels, and growing a trained model to take them.

An inpainting denoiser sees `2 C + 1` channels: the noisy latent, then `inpaint_concat(known, mask)`
(the known latent with the hole zeroed, and the mask, 1 = generate). Growing a plain model
zero-initialises the new input weights, so the grown model starts as exactly the base model.
"""

from __future__ import annotations

import torch

from tld.errors import TLDError
from tld.model.denoiser import Denoiser


def inpaint_concat(x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The `concat` channels of an inpainting model: the known latent (hole zeroed) and the mask."""
    return torch.cat([x0 * (1.0 - mask), mask.to(x0.dtype)], dim=1)


def blank_inpaint_concat(z: torch.Tensor) -> torch.Tensor:
    """The concat channels when nothing is known (plain text to image): a zero latent, an all-ones mask."""
    return inpaint_concat(torch.zeros_like(z), torch.ones_like(z[:, :1]))


def grow_input_channels(net: Denoiser, in_channels: int) -> Denoiser:
    """A copy of `net` taking `in_channels` inputs whose extra input weights are zero.

    The patch width stays the base's, so the grown model computes exactly the base model's
    function whatever the extra (concat) channels hold, and fine-tuning starts from it.
    """
    cfg = net.config
    if in_channels < cfg.in_channels:
        raise TLDError(f"cannot shrink the input channels from {cfg.in_channels} to {in_channels}")
    p = cfg.patch_size
    grown = Denoiser(cfg.replace(in_channels=in_channels, patch_dim=cfg.patch_dim or cfg.in_channels * p * p))
    state = net.state_dict()
    old_w = state["patch_embed.conv.weight"]
    new_w = torch.zeros(old_w.shape[0], in_channels, *old_w.shape[2:], dtype=old_w.dtype)
    new_w[:, : cfg.in_channels] = old_w
    grown.load_state_dict({**state, "patch_embed.conv.weight": new_w})
    return grown
