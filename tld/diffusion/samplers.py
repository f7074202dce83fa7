"""Samplers over a denoiser D(x, sigma) -> x0, drop-in compatible with k-diffusion's functions.

Same names, arguments and arithmetic as ``k_diffusion.sampling.sample_<name>``; differences:
every sampler also accepts ``noise_sampler`` (for per-sample seeds; deterministic samplers ignore it),
churn noise comes from it too, a model with ``round_sigma`` (a quantized discrete model) gets the
sigmas a sampler invents (churned sigma_hat, midpoints) rounded, and ``dpmpp_2m_sde`` draws plain
per-step Gaussian noise instead of a Brownian tree (same distribution; the tree only adds consistency
of the noise path across step counts). ``ddim`` and ``ddpm`` are written in their own papers' form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

from tld.diffusion.checks import check_choice
from tld.diffusion.sampling_utils import churn, get_ancestral_step, lms_coefficients, prepare, rounder, to_d
from tld.errors import check_int

Callback = Callable[[dict[str, Any]], None] | None


def _report(callback: Callback, x, i, sigma, sigma_hat, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
    noise_sampler=None,
):
    """Euler steps with optional churn, Algorithm 2 of Karras et al. (2022)."""
    extra_args, s_in, noise_sampler = prepare(
        x, sigmas, extra_args, noise_sampler, s_churn=s_churn, s_noise=s_noise
    )
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = churn(model, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Ancestral sampling with Euler steps."""
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, eta=eta, s_noise=s_noise)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
    noise_sampler=None,
):
    """Heun steps with optional churn, Algorithm 2 of Karras et al. (2022)."""
    extra_args, s_in, noise_sampler = prepare(
        x, sigmas, extra_args, noise_sampler, s_churn=s_churn, s_noise=s_noise
    )
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = churn(model, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
    noise_sampler=None,
):
    """DPM-Solver-2 inspired midpoint steps (midpoint in log sigma) with Karras churn."""
    extra_args, s_in, noise_sampler = prepare(
        x, sigmas, extra_args, noise_sampler, s_churn=s_churn, s_noise=s_noise
    )
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = churn(model, x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = rounder(model)(sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp())
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Ancestral sampling with DPM-Solver-2 inspired midpoint steps."""
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, eta=eta, s_noise=s_noise)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = rounder(model)(sigmas[i].log().lerp(sigma_down.log(), 0.5).exp())
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4, noise_sampler=None):
    """Linear multistep (Adams-Bashforth in sigma) with per-step coefficients for uneven steps."""
    check_int(order, "lms order", 1)
    extra_args, s_in, _ = prepare(x, sigmas, extra_args, noise_sampler)
    sigmas_list = sigmas.detach().double().cpu().tolist()
    ds: list[torch.Tensor] = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds = [*ds, to_d(x, sigmas[i], denoised)][-order:]
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        coeffs = lms_coefficients(min(i + 1, order), sigmas_list, i)
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


def _t(sigma: torch.Tensor) -> torch.Tensor:
    """DPM-Solver's time variable: minus log sigma (half log-SNR)."""
    return sigma.log().neg()


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Ancestral sampling with DPM-Solver++(2S) second-order steps (Lu et al. 2022)."""
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, eta=eta, s_noise=s_noise)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            sigma_s = rounder(model)((-(t + h / 2)).exp())
            h_s = _t(sigma_s) - t
            x_2 = (sigma_s / sigmas[i]) * x - (-h_s).expm1() * denoised
            denoised_2 = model(x_2, sigma_s * s_in, **extra_args)
            x = (sigma_down / sigmas[i]) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M) multistep (Lu et al. 2022)."""
    extra_args, s_in, _ = prepare(x, sigmas, extra_args, noise_sampler)
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            denoised_d = denoised
            if old_denoised is not None:
                r = (t - _t(sigmas[i - 1])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    solver_type="midpoint",
):
    """DPM-Solver++(2M) SDE; per-step Gaussian noise in place of k-diffusion's Brownian tree."""
    check_choice(solver_type, ("midpoint", "heun"), "dpmpp_2m_sde solver_type")
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, eta=eta, s_noise=s_noise)
    old_denoised, h_last = None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = eta * h
            decay = (-h - eta_h).expm1().neg()
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + decay * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (decay / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * decay * (1 / r) * (denoised - old_denoised)
            if eta:
                noise = noise_sampler(sigmas[i], sigmas[i + 1])
                x = x + noise * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_ddim(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0, noise_sampler=None
):
    """DDIM (Song et al. 2021) on the VE scale: x0 + sigma_down * eps_hat + sigma_up * noise; eta=0 is deterministic."""
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, eta=eta, s_noise=s_noise)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        eps = (x - denoised) / sigmas[i]
        x = denoised + eps * sigma_down
        if eta and sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_ddpm(
    model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None
):
    """Ancestral DDPM (Ho et al. 2020): a draw from the Gaussian posterior q(x_next | x, x0_hat), VE form."""
    extra_args, s_in, noise_sampler = prepare(x, sigmas, extra_args, noise_sampler, s_noise=s_noise)
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        ratio = (sigmas[i + 1] / sigmas[i]) ** 2
        x = denoised + ratio * (x - denoised)
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigmas[i + 1] * (1 - ratio).sqrt()
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    return SAMPLERS[check_choice(name, SAMPLERS, "sampler")]
