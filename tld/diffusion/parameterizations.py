"""Parameterizations: how a network's output becomes a denoiser D(x, sigma) -> x0, and what it trains on.

Every parameterization is written in Karras et al.'s preconditioning form on the variance-exploding scale
``x = x0 + sigma * eps``::

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

so one wrapper (``ParamDenoiser``) serves all of them, and training always regresses F onto
``(x0 - c_skip * x) / c_out`` with weight ``lambda(sigma) * c_out**2``, where lambda is the weight the
parameterization puts on the x0 error. That keeps the training loop free of parameterization branches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from tld.diffusion.checks import check_choice, check_options
from tld.diffusion.discrete import BETA_SCHEDULES, DiscreteSchedule, make_betas
from tld.diffusion.tensors import append_dims
from tld.errors import TLDError


@dataclass
class TrainingInputs:
    """One training batch as the network sees it: ``loss(network(net_input, c_noise), target, weight)``."""

    net_input: torch.Tensor
    c_noise: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    noisy: torch.Tensor  # x0 + sigma * noise, what D(., sigma) receives


@dataclass
class Parameterization:
    """Base class; subclasses define the four scalings and the x0-space loss weight lambda(sigma)."""

    name: ClassVar[str] = ""

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) for a (B,) tensor of sigmas."""
        raise NotImplementedError

    def c_noise(self, sigma: torch.Tensor, quantize: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma): the weight on ||D(x, sigma) - x0||^2."""
        raise NotImplementedError

    @property
    def sigma_min(self) -> float:
        raise NotImplementedError

    @property
    def sigma_max(self) -> float:
        raise NotImplementedError

    def default_density(self):
        raise NotImplementedError

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The sigma a sampler should use instead of ``sigma`` when quantizing (identity if continuous)."""
        return sigma

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def wrap(self, network: nn.Module, quantize: bool = False) -> ParamDenoiser:
        return ParamDenoiser(self, network, quantize=quantize)

    def training_inputs(
        self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, min_snr: float | None = None
    ) -> TrainingInputs:
        """The network's input, target and per-sample weight at `sigma`.

        `min_snr` (Hang et al. 2023, "Min-SNR weighting"): the weight on the x0 error becomes
        min(SNR, gamma) with SNR = 1 / sigma^2, instead of the parameterization's lambda(sigma).
        Against epsilon prediction (x0 weight SNR) it caps the low-noise steps; against an x0
        objective (`tld`, weight 1) it moves weight to low noise: 1/4 at sigma 2, gamma below
        sigma = gamma^-1/2 (docs/results_recipe.md measures what that costs).
        """
        if sigma.ndim != 1 or sigma.shape[0] != x0.shape[0]:
            raise TLDError(f"sigma must have shape ({x0.shape[0]},), got {tuple(sigma.shape)}")
        if noise.shape != x0.shape:
            raise TLDError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        c_skip, c_out, c_in = (append_dims(c, x0.ndim) for c in self.scalings(sigma))
        noisy = x0 + append_dims(sigma, x0.ndim) * noise
        target = self.target(x0, noise, sigma, c_skip, c_out, noisy)
        lam = self.loss_weight(sigma) if min_snr is None else sigma.pow(-2).clamp(max=min_snr)
        weight = lam * c_out.flatten() ** 2
        return TrainingInputs(c_in * noisy, self.c_noise(sigma), target, weight, noisy)

    def target(self, x0, noise, sigma, c_skip, c_out, noisy) -> torch.Tensor:
        """The network output that makes D exact; subclasses give the closed form to avoid cancellation."""
        return (x0 - c_skip * noisy) / c_out

    @staticmethod
    def loss(
        net_out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-sample weighted mean squared error, shape (B,); with `mask` (broadcastable to the
        output, 1 = counted) the mean runs over the counted elements only (masked training)."""
        err = (net_out.float() - target.float()).pow(2)
        if mask is None:
            return weight * err.flatten(1).mean(1)
        mask = mask.to(err.dtype).expand_as(err)
        return weight * (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1)


class ParamDenoiser(nn.Module):
    """A network wrapped into a k-diffusion denoiser ``D(x, sigma, **extra_args) -> x0``.

    ``extra_args`` go to the network as keyword arguments, except ``concat``: channels appended to the
    scaled input (inpainting models). With ``quantize`` the network only ever sees the discrete timesteps
    it was trained on, and samplers find ``round_sigma`` here to round the sigmas they invent (churn, midpoints).
    """

    def __init__(self, param: Parameterization, network: nn.Module, quantize: bool = False):
        super().__init__()
        self.param = param
        self.network = network
        self.quantize = quantize

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.param.round_sigma(sigma) if self.quantize else sigma

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra_args: Any) -> torch.Tensor:
        # half-precision sigmas would lose the scalings' precision; float64 inputs keep float64
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        sigma = torch.as_tensor(sigma, device=x.device).to(dtype)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in = (append_dims(c, x.ndim).to(x.dtype) for c in self.param.scalings(sigma))
        net_in = c_in * x
        concat = extra_args.pop("concat", None)
        if concat is not None:
            net_in = torch.cat([net_in, concat.to(net_in.dtype)], dim=1)
        out = self.network(net_in, self.param.c_noise(sigma, quantize=self.quantize), **extra_args)
        return c_skip * x + c_out * out.to(x.dtype)


@dataclass
class TLDParameterization(Parameterization):
    """The original TLD interpolant x_t = (1 - t) x0 + t eps with an x0-predicting network.

    ``x / (1 + sigma)`` is exactly x_t for t = sigma / (1 + sigma), so the network sees what it was trained on.
    """

    name: ClassVar[str] = "tld"
    t_min: float = 0.01
    t_max: float = 0.99

    def scalings(self, sigma):
        return torch.zeros_like(sigma), torch.ones_like(sigma), 1 / (1 + sigma)

    def c_noise(self, sigma, quantize=False):
        return sigma / (1 + sigma)

    def loss_weight(self, sigma):
        return torch.ones_like(sigma)

    def target(self, x0, noise, sigma, c_skip, c_out, noisy):
        return x0

    @property
    def sigma_min(self):
        return self.t_min / (1 - self.t_min)

    @property
    def sigma_max(self):
        return self.t_max / (1 - self.t_max)

    def default_density(self):
        from tld.diffusion.densities import TLDBeta

        return TLDBeta()


@dataclass
class FlowParameterization(TLDParameterization):
    """Rectified flow / flow matching (Liu et al. 2022; Esser et al. 2024, SD3; Ma et al. 2024, SiT).

    The TLD path x_t = (1 - t) x0 + t eps (same network input and noise conditioning t), but the
    network predicts the velocity v = eps - x0, so x0 = x_t - t v: c_skip = c_in = 1 / (1 + sigma),
    c_out = -t. The loss is plain MSE on the velocity, ||v_hat - v||^2 = ||x0_hat - x0||^2 / t^2.
    """

    name: ClassVar[str] = "flow"

    def scalings(self, sigma):
        c_in = 1 / (1 + sigma)
        return c_in, -sigma * c_in, c_in

    def loss_weight(self, sigma):
        return ((1 + sigma) / sigma) ** 2

    def target(self, x0, noise, sigma, c_skip, c_out, noisy):
        return noise - x0

    def default_density(self):
        from tld.diffusion.densities import LogitNormal

        return LogitNormal()


@dataclass
class EDMParameterization(Parameterization):
    """Karras et al. (2022) preconditioning; ``sigma_data`` is 0.5 for pixels, about 1 for unit-variance latents."""

    name: ClassVar[str] = "edm"
    sigma_data: float = 0.5
    min_sigma: float = 0.002
    max_sigma: float = 80.0

    def scalings(self, sigma):
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt()

    def c_noise(self, sigma, quantize=False):
        return sigma.log() / 4

    def loss_weight(self, sigma):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    @property
    def sigma_min(self):
        return self.min_sigma

    @property
    def sigma_max(self):
        return self.max_sigma

    def default_density(self):
        from tld.diffusion.densities import LogNormal

        return LogNormal()


@dataclass
class DiscreteParameterization(Parameterization):
    """Shared part of eps/v models trained on a discrete DDPM schedule; c_noise is the (fractional) timestep."""

    beta_schedule: str = "scaled_linear"
    num_train_steps: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    schedule: DiscreteSchedule = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_choice(self.beta_schedule, BETA_SCHEDULES, "beta schedule")
        betas = make_betas(self.beta_schedule, self.num_train_steps, self.beta_start, self.beta_end)
        self.schedule = DiscreteSchedule(betas)

    def to_dict(self):
        keys = ("beta_schedule", "num_train_steps", "beta_start", "beta_end")
        return {"name": self.name, **{k: getattr(self, k) for k in keys}}

    @property
    def sigmas(self) -> torch.Tensor:
        """The model's discrete sigmas in float64, increasing with the timestep."""
        return self.schedule.sigmas

    def c_noise(self, sigma, quantize=False):
        return self.schedule.sigma_to_t(sigma, quantize=quantize).to(sigma.dtype)

    def round_sigma(self, sigma):
        return self.schedule.round_sigma(sigma)

    @property
    def sigma_min(self):
        return float(self.sigmas[0])

    @property
    def sigma_max(self):
        return float(self.sigmas[-1])

    def default_density(self):
        from tld.diffusion.densities import DiscreteDensity

        return DiscreteDensity(sigmas=self.sigmas.tolist())


@dataclass
class EpsParameterization(DiscreteParameterization):
    """DDPM noise prediction: D = x - sigma * eps_hat, network input scaled back to unit variance."""

    name: ClassVar[str] = "eps"

    def scalings(self, sigma):
        return torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1).sqrt()

    def loss_weight(self, sigma):
        return 1 / sigma**2

    def target(self, x0, noise, sigma, c_skip, c_out, noisy):
        return noise


@dataclass
class VParameterization(DiscreteParameterization):
    """Salimans & Ho (2022) v-prediction: v = alpha * eps - sigma_vp * x0 on the DDPM schedule."""

    name: ClassVar[str] = "v"

    def scalings(self, sigma):
        total = sigma**2 + 1
        return 1 / total, -sigma / total.sqrt(), 1 / total.sqrt()

    def loss_weight(self, sigma):
        return (sigma**2 + 1) / sigma**2

    def target(self, x0, noise, sigma, c_skip, c_out, noisy):
        scale = append_dims(1 / (sigma**2 + 1).sqrt(), x0.ndim)
        return scale * (noise - append_dims(sigma, x0.ndim) * x0)


PARAMETERIZATIONS: dict[str, type[Parameterization]] = {
    cls.name: cls
    for cls in (
        TLDParameterization,
        FlowParameterization,
        EDMParameterization,
        EpsParameterization,
        VParameterization,
    )
}


def get_parameterization(name: str, **kwargs: Any) -> Parameterization:
    """Build a parameterization by name; ``get_parameterization(**param.to_dict())`` round-trips."""
    cls = PARAMETERIZATIONS[check_choice(name, PARAMETERIZATIONS, "parameterization")]
    valid = [f for f in cls.__dataclass_fields__ if cls.__dataclass_fields__[f].init]
    check_options(kwargs, valid, f"parameterization {name!r}")
    return cls(**kwargs)


__all__ = [
    "PARAMETERIZATIONS",
    "ParamDenoiser",
    "Parameterization",
    "TrainingInputs",
    "append_dims",
    "get_parameterization",
]
