"""Samplers against the exact denoiser of Gaussian data N(mu, s^2), where everything has a closed form."""

import math

import pytest
import torch

from tld.diffusion import (
    SAMPLERS,
    get_parameterization,
    get_sampler,
    get_sigmas,
    get_sigmas_karras,
    make_generators,
    seeded_noise_sampler,
)
from tld.errors import TLDError

MU, S = 0.3, 0.8
SIGMA_MIN, SIGMA_MAX = 1e-4, 10.0


def gaussian_denoiser(x, sigma):
    """E[x0 | x] for x0 ~ N(MU, S^2) and x = x0 + sigma * eps."""
    sigma = sigma.view(-1, *([1] * (x.ndim - 1)))
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def ode_solution(x_t, sigma_t):
    """The probability-flow ODE carries x_t at sigma_t to MU + (x_t - MU) * S / sqrt(S^2 + sigma_t^2) at 0."""
    return MU + (x_t - MU) * S / math.sqrt(S**2 + sigma_t**2)


def ode_error(name, steps, **opts):
    x_t = (MU + torch.linspace(-3, 3, 7, dtype=torch.float64) * math.sqrt(S**2 + SIGMA_MAX**2)).view(7, 1)
    sigmas = get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX).double()
    out = get_sampler(name)(gaussian_denoiser, x_t.clone(), sigmas, disable=True, **opts)
    return (out - ode_solution(x_t, SIGMA_MAX)).abs().max().item()


@pytest.mark.parametrize(
    "name, opts, low, high",
    [
        ("euler", {}, 0.95, 1.05),
        ("ddim", {}, 0.95, 1.05),
        ("heun", {}, 1.9, 2.2),
        ("dpm_2", {}, 1.9, 2.2),
        ("dpmpp_2m", {}, 1.9, 2.2),
        ("dpmpp_2m_sde", {"eta": 0.0}, 1.9, 2.2),
        ("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}, 1.9, 2.2),
        ("lms", {"order": 2}, 1.85, 2.15),
        ("lms", {"order": 3}, 2.6, 3.2),
        ("lms", {}, 3.2, 4.2),
    ],
)
def test_deterministic_samplers_converge_at_their_order(name, opts, low, high):
    errors = [ode_error(name, n, **opts) for n in (32, 64, 128)]
    assert errors[2] < errors[1] < errors[0]
    observed = math.log2(errors[1] / errors[2])
    assert low <= observed <= high, (name, errors)


@pytest.mark.parametrize(
    "name, opts, steps",
    [
        ("euler_ancestral", {}, 512),
        ("ddpm", {}, 512),
        ("ddim", {"eta": 1.0}, 512),
        ("dpm_2_ancestral", {}, 64),
        ("dpmpp_2s_ancestral", {}, 64),
        ("dpmpp_2m_sde", {}, 64),
        ("dpmpp_2m_sde", {"solver_type": "heun"}, 64),
    ],
)
def test_stochastic_samplers_sample_the_posterior_of_a_fixed_start(name, opts, steps):
    # From one fixed x_T the ODE would give a single point; a reverse-SDE sampler must instead give
    # p(x0 | x_T) = N(MU + S^2/(S^2+T^2) (x_T - MU), S^2 T^2 / (S^2 + T^2)).
    torch.manual_seed(0)
    x_start, n = 5.0, 4000
    sigmas = get_sigmas_karras(steps, 0.002, SIGMA_MAX)
    out = get_sampler(name)(gaussian_denoiser, torch.full((n, 1), x_start), sigmas, disable=True, **opts)
    mean = MU + S**2 / (S**2 + SIGMA_MAX**2) * (x_start - MU)
    std = S * SIGMA_MAX / math.sqrt(S**2 + SIGMA_MAX**2)
    assert abs(out.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(out.std().item() / std - 1) < 0.05


def test_same_noise_gives_same_result_for_equivalent_samplers():
    # DDPM's posterior draw, DDIM with eta=1 and ancestral Euler are one update written three ways.
    sigmas = get_sigmas_karras(10, 0.01, SIGMA_MAX)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * SIGMA_MAX
    results = []
    for name, opts in [("euler_ancestral", {}), ("ddpm", {}), ("ddim", {"eta": 1.0})]:
        noise = seeded_noise_sampler(x, make_generators([5, 6, 7]))
        results.append(
            get_sampler(name)(gaussian_denoiser, x, sigmas, disable=True, noise_sampler=noise, **opts)
        )
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[2], results[0], rtol=1e-5, atol=1e-5)
    deterministic = get_sampler("euler")(gaussian_denoiser, x, sigmas, disable=True)
    assert (deterministic - results[0]).abs().max() > 0.1
    torch.testing.assert_close(get_sampler("ddim")(gaussian_denoiser, x, sigmas, disable=True), deterministic)
    torch.testing.assert_close(
        get_sampler("lms")(gaussian_denoiser, x, sigmas, disable=True, order=1), deterministic
    )


@pytest.mark.parametrize(
    "name, opts",
    [("euler_ancestral", {}), ("dpmpp_2m_sde", {}), ("dpmpp_2s_ancestral", {}), ("heun", {"s_churn": 5.0})],
)
def test_image_k_of_a_batch_equals_its_seed_alone(name, opts):
    sigmas = get_sigmas_karras(6, 0.01, SIGMA_MAX)
    seeds = [11, 22, 33]
    gens = make_generators(seeds)
    x = torch.stack([torch.randn(2, 4, 4, generator=g) for g in gens]) * SIGMA_MAX
    sampler = get_sampler(name)
    batch = sampler(
        gaussian_denoiser, x, sigmas, disable=True, noise_sampler=seeded_noise_sampler(x, gens), **opts
    )
    alone_gens = make_generators(seeds[1:2])
    x_alone = torch.randn(1, 2, 4, 4, generator=alone_gens[0]) * SIGMA_MAX
    noise = seeded_noise_sampler(x_alone, alone_gens)
    alone = sampler(gaussian_denoiser, x_alone, sigmas, disable=True, noise_sampler=noise, **opts)
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=1e-6)
    assert (batch[0] - batch[1]).abs().max() > 0.1


def test_callback_reports_every_step():
    seen = []
    sigmas = get_sigmas_karras(5, 0.01, SIGMA_MAX)
    x = torch.randn(2, 3) * SIGMA_MAX
    get_sampler("heun")(gaussian_denoiser, x, sigmas, disable=True, callback=seen.append, s_churn=2.0)
    assert [c["i"] for c in seen] == [0, 1, 2, 3, 4]
    assert all(set(c) == {"x", "i", "sigma", "sigma_hat", "denoised"} for c in seen)
    gamma = min(2.0 / 5, 2**0.5 - 1)
    torch.testing.assert_close(seen[0]["sigma_hat"], sigmas[0] * (1 + gamma))
    torch.testing.assert_close(
        seen[2]["denoised"], gaussian_denoiser(seen[2]["x"], seen[2]["sigma_hat"].expand(2))
    )


def test_every_sampler_is_registered_and_unknown_names_list_them():
    assert set(SAMPLERS) == {
        "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
        "dpmpp_2m", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "ddim", "ddpm",
    }  # fmt: skip
    with pytest.raises(TLDError, match="unknown sampler 'dpm_fast'.*euler_ancestral"):
        get_sampler("dpm_fast")


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (torch.tensor([10.0, 1.0, 0.5]), "end in 0"),
        (torch.tensor([1.0, 10.0, 0.0]), r"strictly decreasing, got sigmas\[0\]=1 <= sigmas\[1\]=10"),
        (torch.tensor([10.0, 2.0, 2.0, 0.0]), r"strictly decreasing, got sigmas\[1\]=2 <= sigmas\[2\]=2"),
        (torch.tensor([1.0, 0.0, 0.0]), r"strictly decreasing, got sigmas\[1\]=0 <= sigmas\[2\]=0"),
        (torch.tensor([[1.0, 0.0]]), "1-D"),
        (torch.tensor([0.0]), "at least 2"),
        (torch.tensor([1.0, -1.0, 0.0]), ">= 0"),
        ([1.0, 0.0], "torch.Tensor"),
    ],
)
def test_bad_sigmas_are_rejected(sigmas, message):
    with pytest.raises(TLDError, match=message):
        get_sampler("euler")(gaussian_denoiser, torch.zeros(1, 2), sigmas, disable=True)


def test_bad_options_are_rejected():
    sigmas = get_sigmas_karras(3, 0.1, 1.0)
    x = torch.zeros(1, 2)
    with pytest.raises(TLDError, match="eta must be >= 0, got -0.5"):
        get_sampler("euler_ancestral")(gaussian_denoiser, x, sigmas, disable=True, eta=-0.5)
    with pytest.raises(TLDError, match="solver_type 'rk4'.*midpoint, heun"):
        get_sampler("dpmpp_2m_sde")(gaussian_denoiser, x, sigmas, disable=True, solver_type="rk4")
    with pytest.raises(TLDError, match="lms order must be an integer >= 1"):
        get_sampler("lms")(gaussian_denoiser, x, sigmas, disable=True, order=0)


class ConstantX0(torch.nn.Module):
    """An x0-predicting network (the original TLD kind) that is certain the image is `value`."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.noise_levels = []

    def forward(self, x, noise_level):
        self.noise_levels.append(noise_level)
        return self.value.expand_as(x)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_tld_network_samples_through_every_sampler(name):
    param = get_parameterization("tld")
    value = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    net = ConstantX0(value)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * param.sigma_max
    out = get_sampler(name)(param.wrap(net), x, get_sigmas("tld", 8, param), disable=True)
    torch.testing.assert_close(out, value.expand_as(out), rtol=1e-4, atol=1e-4)
    levels = torch.cat(net.noise_levels)
    assert levels.max().item() == pytest.approx(0.99) and levels.min() > 0
