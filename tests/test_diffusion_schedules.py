"""Sampling schedules: exact values, endpoints and the errors for bad requests."""

import math

import pytest
import torch

from tld.diffusion import (
    SCHEDULES,
    get_parameterization,
    get_sampler,
    get_sigmas,
    get_sigmas_karras,
    get_sigmas_tld,
)
from tld.diffusion.schedules import get_sigmas_exponential, get_sigmas_polyexponential, quantize_sigmas
from tld.errors import TLDError


def test_karras_schedule_values():
    sigmas = get_sigmas_karras(5, 0.002, 80.0, rho=7.0)
    ramp = torch.tensor([0, 0.25, 0.5, 0.75, 1.0])
    expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sigmas, torch.cat([expected, torch.zeros(1)]))


def test_exponential_schedules_are_even_in_log_sigma():
    sigmas = get_sigmas_exponential(6, 0.1, 10.0)
    steps = sigmas[:-1].log().diff()
    torch.testing.assert_close(steps, torch.full((5,), -math.log(100) / 5))
    torch.testing.assert_close(get_sigmas_polyexponential(6, 0.1, 10.0, rho=1.0), sigmas)
    assert get_sigmas_polyexponential(6, 0.1, 10.0, rho=2.0)[3] < sigmas[3]


def test_tld_schedule_is_the_original_noise_levels():
    t = torch.tensor([0.99, 0.75, 0.5, 0.25, 0.0])
    torch.testing.assert_close(get_sigmas_tld(4), t / (1 - t))
    t2 = 1 - torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]) ** 2
    t2[0] = 0.99
    torch.testing.assert_close(get_sigmas_tld(4, exponent=2.0), t2 / (1 - t2))


@pytest.mark.parametrize("n, exponent, kept", [(200, 1.0, 198), (15, 2.0, 14), (100, 1.0, 99), (50, 1.0, 50)])
def test_fine_tld_schedules_never_raise_the_noise_above_the_start(n, exponent, kept):
    # 1 - (i/n)^exponent lies at or above the clipped start 0.99 while i/n <= 0.01^(1/exponent).
    sigmas = get_sigmas_tld(n, exponent=exponent)
    assert len(sigmas) == kept + 1 and sigmas[0].item() == pytest.approx(99.0) and sigmas[-1] == 0
    assert (sigmas.diff() < 0).all()
    t = sigmas[1:-1].double() / (1 + sigmas[1:-1].double())
    i = torch.arange(n + 1 - kept, n, dtype=torch.float64)
    torch.testing.assert_close(t, 1 - (i / n) ** exponent, rtol=1e-5, atol=1e-6)
    x = get_sampler("dpmpp_2m")(lambda x, s: x * 0.5, torch.ones(1, 2), sigmas, disable=True)
    assert torch.isfinite(x).all()


def test_named_schedules_use_the_parameterization_range():
    edm = get_parameterization("edm")
    for name in ("karras", "exponential", "polyexponential", "tld", "linear_t"):
        sigmas = get_sigmas(name, 7, edm)
        assert sigmas.shape == (8,) and sigmas[-1] == 0 and (sigmas.diff() < 0).all(), name
    assert get_sigmas("karras", 7, edm)[0].item() == pytest.approx(80.0)
    assert get_sigmas("karras", 7, edm)[-2].item() == pytest.approx(0.002)
    t = get_sigmas("linear_t", 4, get_parameterization("tld")) / (
        1 + get_sigmas("linear_t", 4, get_parameterization("tld"))
    )
    torch.testing.assert_close(t, torch.tensor([0.99, 0.7425, 0.495, 0.2475, 0.0]))


def test_ddim_spacings_pick_the_model_timesteps():
    param = get_parameterization("eps")
    leading = get_sigmas("ddim_leading", 10, param)
    torch.testing.assert_close(leading[:-1], param.sigmas[torch.arange(901, 0, -100)].float())
    trailing = get_sigmas("ddim_trailing", 10, param)
    torch.testing.assert_close(trailing[:-1], param.sigmas[torch.arange(999, 0, -100)].float())
    assert leading[-1] == 0 and trailing[-1] == 0


def test_quantize_sigmas_rounds_to_model_sigmas_and_keeps_zero():
    param = get_parameterization("eps")
    sigmas = get_sigmas_karras(12, 0.05, 14.0)
    q = quantize_sigmas(sigmas, param.sigmas)
    assert q[-1] == 0 and (q.diff() < 0).all()
    assert all(torch.isclose(s, param.sigmas.float(), rtol=1e-6).any() for s in q[:-1])
    assert ((q[:-1].log() - sigmas[:-1].log()).abs() < 0.05).all()
    dense = quantize_sigmas(get_sigmas_karras(3000, 0.05, 14.0), param.sigmas)
    assert len(dense) < 1001  # repeats merged: no zero-length steps


def test_bad_schedule_requests_are_clear_errors():
    edm = get_parameterization("edm")
    with pytest.raises(TLDError, match="unknown schedule 'cosine'; expected one of: " + ", ".join(SCHEDULES)):
        get_sigmas("cosine", 10, edm)
    with pytest.raises(TLDError, match="sigma_min must be < sigma_max, got sigma_min=5.0 >= sigma_max=1.0"):
        get_sigmas_karras(10, 5.0, 1.0)
    with pytest.raises(TLDError, match="sigma_min must be > 0"):
        get_sigmas("exponential", 10, edm, sigma_min=0.0)
    with pytest.raises(TLDError, match="needs a discrete \\(eps/v\\) parameterization, got 'edm'"):
        get_sigmas("ddim_trailing", 10, edm)
    with pytest.raises(TLDError, match="number of steps must be an integer >= 1, got 0"):
        get_sigmas("tld", 0, edm)
    with pytest.raises(TLDError, match="bad options \\['beta'\\] for schedule 'karras'"):
        get_sigmas("karras", 5, edm, beta=2)
