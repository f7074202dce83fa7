"""Sampling schedules: 1-D decreasing sigma tensors that end in 0 (k-diffusion conventions)."""

from __future__ import annotations

import math
from typing import Any

import torch

from tld.diffusion.checks import check_choice, check_sigma_range
from tld.errors import TLDError, check_int


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu"
) -> torch.Tensor:
    """Karras et al. (2022): sigmas evenly spaced in sigma^(1/rho)."""
    check_int(n, "number of steps", 1)
    check_sigma_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    """Sigmas evenly spaced in log sigma."""
    check_int(n, "number of steps", 1)
    check_sigma_range(sigma_min, sigma_max)
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp()).to(device)


def get_sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device="cpu"
) -> torch.Tensor:
    """Log sigma follows a polynomial ramp of power ``rho`` (rho = 1 is the exponential schedule)."""
    check_int(n, "number of steps", 1)
    check_sigma_range(sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return append_zero((ramp * (log_max - log_min) + log_min).exp()).to(device)


def get_sigmas_tld(n: int, exponent: float = 1.0, device="cpu") -> torch.Tensor:
    """The original TLD schedule: t_i = 1 - (i/n)^exponent for i = 0..n, the first t clipped to 0.99.

    The original loop stopped at t_{n-1}; here the last step goes on to t = 0 (sigma = 0), so the
    sampler returns the final x0 estimate like every other schedule. Levels that would lie above the
    clipped start (i/n <= 0.01^(1/exponent): n >= 100 at exponent 1, n >= 10 at exponent 2) would make
    the noise rise again (or stall); they are left out, so such fine schedules take a step or two fewer.
    """
    check_int(n, "number of steps", 1)
    if exponent <= 0:
        raise TLDError(f"tld schedule exponent must be > 0, got {exponent}")
    t = 1 - (torch.arange(n + 1, dtype=torch.float64) / n) ** exponent
    t[0] = min(float(t[0]), 0.99)
    t = torch.cat([t[:1], t[1:][t[1:] < t[0] - 1e-9]])  # also no zero-length first step
    return (t / (1 - t)).float().to(device)


def get_sigmas_linear_t(n: int, t_max: float = 0.99, device="cpu") -> torch.Tensor:
    """t evenly spaced from t_max to 0 on the TLD interpolant, as sigmas."""
    check_int(n, "number of steps", 1)
    if not 0 < t_max < 1:
        raise TLDError(f"linear_t schedule needs 0 < t_max < 1, got {t_max}")
    t = torch.linspace(t_max, 0, n + 1, dtype=torch.float64)
    return (t / (1 - t)).float().to(device)


def _model_sigmas(param: Any, schedule: str) -> torch.Tensor:
    sigmas = getattr(param, "sigmas", None)
    if not isinstance(sigmas, torch.Tensor):
        name = getattr(param, "name", type(param).__name__)
        raise TLDError(f"schedule {schedule!r} needs a discrete (eps/v) parameterization, got {name!r}")
    return sigmas


def get_sigmas_ddim(
    n: int, model_sigmas: torch.Tensor, spacing: str = "leading", offset: int = 1, device="cpu"
):
    """DDIM timestep spacings over a discrete model's sigmas (as diffusers' "leading"/"trailing").

    ``offset`` shifts leading timesteps up (Stable Diffusion's steps_offset=1).
    """
    check_int(n, "number of steps", 1)
    check_choice(spacing, ("leading", "trailing"), "ddim spacing")
    total = model_sigmas.numel()
    if n > total:
        raise TLDError(f"ddim spacing needs steps <= {total} (the model's timesteps), got {n}")
    if spacing == "leading":
        timesteps = torch.arange(n - 1, -1, -1) * (total // n) + offset
    else:
        timesteps = torch.round(torch.arange(total, 0, -total / n, dtype=torch.float64)).long() - 1
    timesteps = timesteps.clamp(0, total - 1)
    return append_zero(model_sigmas[timesteps].float()).to(device)


def quantize_sigmas(sigmas: torch.Tensor, model_sigmas: torch.Tensor) -> torch.Tensor:
    """Round every nonzero sigma to the nearest (in log space) of a model's discrete sigmas; zeros stay.

    Repeats that rounding creates are merged (a zero-length step would divide by zero in the DPM-Solver
    samplers), so the result can be shorter than the input.
    """
    log_model = model_sigmas.double().log().to(sigmas.device)
    nonzero = sigmas > 0
    dists = (sigmas.double().clamp(min=1e-30).log()[:, None] - log_model[None, :]).abs()
    rounded = model_sigmas.double().to(sigmas.device)[dists.argmin(dim=1)]
    return torch.unique_consecutive(torch.where(nonzero, rounded, torch.zeros_like(rounded))).to(sigmas.dtype)


SCHEDULES = ("karras", "exponential", "polyexponential", "tld", "linear_t", "ddim_leading", "ddim_trailing")


def get_sigmas(
    name: str, n: int, param: Any, device="cpu", quantize: bool = False, **opts: Any
) -> torch.Tensor:
    """A named schedule of ``n`` steps for ``param`` (sigma range defaults to param.sigma_min/sigma_max).

    ``quantize=True`` rounds the result to the model's discrete sigmas (eps/v parameterizations).
    """
    check_choice(name, SCHEDULES, "schedule")
    try:
        sigmas = _dispatch(name, n, param, **opts)
    except TypeError as err:
        raise TLDError(f"bad options {sorted(opts)} for schedule {name!r}: {err}") from None
    if quantize:
        sigmas = quantize_sigmas(sigmas, _model_sigmas(param, "quantize"))
    return sigmas.to(device)


def _dispatch(name: str, n: int, param: Any, **opts: Any) -> torch.Tensor:
    if name in ("karras", "exponential", "polyexponential"):
        opts.setdefault("sigma_min", param.sigma_min)
        opts.setdefault("sigma_max", param.sigma_max)
    if name == "karras":
        return get_sigmas_karras(n, **opts)
    if name == "exponential":
        return get_sigmas_exponential(n, **opts)
    if name == "polyexponential":
        return get_sigmas_polyexponential(n, **opts)
    if name == "tld":
        return get_sigmas_tld(n, **opts)
    if name == "linear_t":
        opts.setdefault("t_max", param.sigma_max / (1 + param.sigma_max))
        return get_sigmas_linear_t(n, **opts)
    spacing = name.removeprefix("ddim_")
    return get_sigmas_ddim(n, _model_sigmas(param, name), spacing=spacing, **opts)
