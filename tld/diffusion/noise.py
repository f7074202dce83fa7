"""Noise for stochastic samplers, with one generator per batch row.

Row k is always drawn on the CPU from generator k and then moved to the target device, so image k of a
batch equals the same seed generated alone, on any device and at any batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tld.errors import TLDError

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn_like_seeded(x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``x``; row k comes from ``generators[k]``."""
    if len(generators) != x.shape[0]:
        raise TLDError(f"need one generator per batch row ({x.shape[0]}), got {len(generators)}")
    rows = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def seeded_noise_sampler(x: torch.Tensor, generators: Sequence[torch.Generator]) -> NoiseSampler:
    """A k-diffusion ``noise_sampler(sigma, sigma_next)`` whose row k draws from ``generators[k]``."""
    if len(generators) != x.shape[0]:
        raise TLDError(f"need one generator per batch row ({x.shape[0]}), got {len(generators)}")

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return randn_like_seeded(x, generators)

    return sample


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """k-diffusion's default: fresh ``torch.randn_like`` noise from the global generator."""

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(x)

    return sample
