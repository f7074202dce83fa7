"""Discrete DDPM noise schedules (betas) seen on the variance-exploding sigma scale.

A DDPM timestep t with cumulative alpha a_t corresponds to sigma_t = sqrt((1 - a_t) / a_t): dividing the
VP sample sqrt(a_t) x0 + sqrt(1 - a_t) eps by sqrt(a_t) gives x0 + sigma_t eps.
"""

from __future__ import annotations

import math

import torch

from tld.diffusion.checks import check_choice
from tld.errors import TLDError, check_int

BETA_SCHEDULES = ("scaled_linear", "linear", "cosine")
_DEFAULT_BETA_RANGE = {"scaled_linear": (0.00085, 0.012), "linear": (1e-4, 0.02), "cosine": (0.0, 0.999)}


def make_betas(
    kind: str = "scaled_linear",
    steps: int = 1000,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> torch.Tensor:
    """Betas of a DDPM schedule in float64: Stable Diffusion's scaled-linear, DDPM's linear, or cosine.

    For "cosine" (Nichol & Dhariwal 2021) ``beta_end`` is the cap on each beta.
    """
    check_choice(kind, BETA_SCHEDULES, "beta schedule")
    check_int(steps, "number of diffusion steps", 1)
    start, end = _DEFAULT_BETA_RANGE[kind]
    start = start if beta_start is None else beta_start
    end = end if beta_end is None else beta_end
    if kind == "scaled_linear":
        return torch.linspace(math.sqrt(start), math.sqrt(end), steps, dtype=torch.float64) ** 2
    if kind == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    offset = 0.008
    grid = torch.arange(steps + 1, dtype=torch.float64) / steps
    alpha_bar = torch.cos((grid + offset) / (1 + offset) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=end)


class DiscreteSchedule:
    """A model's discrete sigmas (increasing with the timestep index) and the maps between sigma and t."""

    def __init__(self, betas: torch.Tensor):
        if betas.ndim != 1 or betas.numel() < 2 or not ((betas > 0) & (betas < 1)).all():
            raise TLDError(
                f"betas must be a 1-D tensor of >= 2 values in (0, 1), got shape {tuple(betas.shape)}"
            )
        alphas_cumprod = torch.cumprod(1 - betas.double(), dim=0)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()

    @property
    def num_steps(self) -> int:
        return self.sigmas.numel()

    def _interval(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of the model sigma just below each sigma (clamped) and the log-space weight towards the next."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.double().clamp(min=1e-30).log()
        low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, self.num_steps - 2)
        weight = (log_sigma - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])
        return low, weight.clamp(0, 1)

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool = False) -> torch.Tensor:
        """Fractional timestep whose log-sigma interpolates linearly; ``quantize`` rounds to the nearest one."""
        low, weight = self._interval(sigma)
        if quantize:
            return (low + (weight >= 0.5).long()).to(sigma.dtype)
        return (low + weight).to(sigma.dtype)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at a (fractional) timestep, interpolating log-sigma; float inputs keep their dtype."""
        td = t.double().clamp(0, self.num_steps - 1)
        low = td.floor().long().clamp(max=self.num_steps - 2)
        weight = td - low
        log_sigmas = self.log_sigmas.to(t.device)
        sigma = ((1 - weight) * log_sigmas[low] + weight * log_sigmas[low + 1]).exp()
        return sigma.to(t.dtype) if t.is_floating_point() else sigma

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The nearest model sigma (nearest in log space); keeps the input's dtype and device."""
        idx = self.sigma_to_t(sigma.double(), quantize=True).long()
        return self.sigmas.to(sigma.device)[idx].to(sigma.dtype)
