"""Turning a trained denoiser into an inpainting one by growing its input channels."""

from __future__ import annotations

import torch
from torch import nn

from tld.errors import TLDError


def grow_input_channels(net: nn.Module, in_channels: int) -> nn.Module:
    """A copy of `net` taking `in_channels` inputs whose extra input weights are zero.

    The patch width stays the base's, so the grown model computes exactly the base model's
    function whatever the extra (concat) channels hold, and fine-tuning starts from it.
    """
    from tld.model import Denoiser

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
