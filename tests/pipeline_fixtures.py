"""Tiny random pipelines for the generation tests: a real Denoiser, AutoencoderKL and open_clip tower."""

from __future__ import annotations

from pathlib import Path

import torch

from tld.encoders.text import load_text_encoder
from tld.encoders.vae import VAE
from tld.model import Denoiser, DenoiserConfig
from tld.pipeline import TLDPipeline

# helpers.make_tiny_open_clip: pooled dim 24; helpers.make_tiny_vae: factor 2, 4 channels.
TEXT_DIM = 24


def tiny_denoiser(seed: int = 0, **changes) -> Denoiser:
    torch.manual_seed(seed)
    cfg = DenoiserConfig.preset("tiny").replace(**{"text_dim": TEXT_DIM, **changes})
    return Denoiser(cfg).eval()


def tiny_pipeline(vae_dir: Path, clip_dir: Path, seed: int = 0, **changes) -> TLDPipeline:
    """8x8 latents, patch 2, VAE factor 2: 16x16-pixel images, sizes in multiples of 4 pixels."""
    vae = VAE.from_pretrained(vae_dir)
    return TLDPipeline(tiny_denoiser(seed, **changes), vae, load_text_encoder(clip_dir), "tld", device="cpu")


def checker_image(size: int = 16, seed: int = 0):
    """A PIL image with structure (so reconstruction and 'changed' are measurable)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 4, size // 4, generator=g)
    big = base.repeat_interleave(4, 1).repeat_interleave(4, 2)
    arr = (big.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr, mode="RGB")
