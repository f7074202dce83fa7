"""Step helpers shared by the samplers (k-diffusion semantics)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tld.diffusion.checks import check_nonnegative, check_sigmas
from tld.diffusion.noise import NoiseSampler, default_noise_sampler
from tld.diffusion.tensors import append_dims


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_ancestral_step(
    sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step into a deterministic one down to sigma_down and fresh noise of std sigma_up.

    sigma_up^2 is eta^2 times the DDPM posterior variance, so eta = 1 is ancestral DDPM and eta = 0 is DDIM.
    """
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    posterior = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).clamp(min=0).sqrt()
    sigma_up = torch.minimum(sigma_to, eta * posterior)
    sigma_down = (sigma_to**2 - sigma_up**2).clamp(min=0).sqrt()
    return sigma_down, sigma_up


def lms_coefficients(order: int, sigmas: list[float], i: int) -> list[float]:
    """Adams-Bashforth weights for the step sigmas[i] -> sigmas[i+1] on an uneven grid.

    Weight j integrates the Lagrange basis polynomial through sigmas[i], ..., sigmas[i-order+1] over the
    step; Gauss-Legendre with ``order`` nodes is exact for these degree order-1 polynomials.
    """
    nodes, weights = np.polynomial.legendre.leggauss(order)
    lo, hi = sigmas[i], sigmas[i + 1]
    taus = (hi - lo) / 2 * nodes + (hi + lo) / 2
    coeffs = []
    for j in range(order):
        basis = np.ones_like(taus)
        for k in range(order):
            if k != j:
                basis *= (taus - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        coeffs.append(float((hi - lo) / 2 * np.sum(weights * basis)))
    return coeffs


def prepare(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None,
    noise_sampler: NoiseSampler | None,
    **nonnegative: float,
) -> tuple[dict[str, Any], torch.Tensor, NoiseSampler]:
    """Validate a sampler's inputs; return (extra_args, per-row ones for sigma, noise sampler)."""
    check_sigmas(sigmas)
    for name, value in nonnegative.items():
        check_nonnegative(value, name)
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    return extra_args, x.new_ones([x.shape[0]]), noise_sampler


def rounder(model: Any):
    """The model's ``round_sigma`` (quantized discrete models), or identity for continuous ones."""
    round_sigma = getattr(model, "round_sigma", None)
    return round_sigma if callable(round_sigma) else (lambda sigma: sigma)


def churn(
    model: Any,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    noise_sampler: NoiseSampler,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras et al. (2022) Algorithm 2 churn: raise the noise to sigma_hat by adding fresh noise.

    A quantized model rounds sigma_hat to one of its own sigmas first, so the network is only asked about
    noise levels it was trained on and x carries exactly that much noise.
    """
    sigma = sigmas[i]
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        sigma_hat = torch.maximum(rounder(model)(sigma_hat), sigma)
        eps = noise_sampler(sigma, sigma_hat) * s_noise
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat
