"""Parameterizations, discrete schedules, quantization and training densities."""

import json
import math

import pytest
import torch
from torch import nn

from tld.diffusion import get_density, get_parameterization, get_sampler, get_sigmas
from tld.diffusion.discrete import make_betas
from tld.errors import TLDError

PARAMS = [
    ("tld", {}),
    ("flow", {}),
    ("edm", {"sigma_data": 1.0}),
    ("eps", {}),
    ("v", {"beta_schedule": "cosine"}),
]


class IdealNetwork(nn.Module):
    """Returns a fixed output, but only for the exact inputs training would have given it."""

    def __init__(self, net_input, c_noise, output):
        super().__init__()
        self.net_input, self.c_noise, self.output = net_input, c_noise, output

    def forward(self, x, c_noise):
        torch.testing.assert_close(x, self.net_input)
        torch.testing.assert_close(c_noise, self.c_noise)
        return self.output


@pytest.mark.parametrize("name, kwargs", PARAMS)
def test_ideal_network_output_makes_the_denoiser_exact(name, kwargs):
    param = get_parameterization(name, **kwargs)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    noise = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.03, 0.4, 1.0, 5.0, 14.0], dtype=torch.float64)
    inp = param.training_inputs(x0, sigma, noise)
    torch.testing.assert_close(inp.noisy, x0 + sigma.view(-1, 1, 1, 1) * noise)
    denoiser = param.wrap(IdealNetwork(inp.net_input, inp.c_noise, inp.target))
    torch.testing.assert_close(denoiser(inp.noisy, sigma), x0, rtol=1e-9, atol=1e-9)
    wrong = param.wrap(IdealNetwork(inp.net_input, inp.c_noise, inp.target + 0.1))
    assert (wrong(inp.noisy, sigma) - x0).abs().max() > 1e-3
    # weights are relative to the network output: lambda(sigma) * c_out^2 with lambda the x0-space weight
    _, c_out, _ = param.scalings(sigma)
    torch.testing.assert_close(inp.weight, param.loss_weight(sigma) * c_out**2)


def test_tld_parameterization_is_the_original_interpolant():
    param = get_parameterization("tld")
    x0, noise = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    t = torch.tensor([0.01, 0.2, 0.5, 0.99])
    inp = param.training_inputs(x0, t / (1 - t), noise)
    torch.testing.assert_close(inp.net_input, (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise)
    torch.testing.assert_close(inp.c_noise, t)
    assert torch.equal(inp.target, x0) and torch.equal(inp.weight, torch.ones(4))
    assert param.sigma_max == pytest.approx(99.0) and param.sigma_min == pytest.approx(0.01 / 0.99)


def test_flow_is_velocity_on_the_tld_path_with_unit_weight():
    param = get_parameterization("flow")
    x0, noise = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 0.99], dtype=torch.float64)
    inp = param.training_inputs(x0, t / (1 - t), noise)
    tt = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(inp.net_input, (1 - tt) * x0 + tt * noise)  # the same input as tld
    torch.testing.assert_close(inp.c_noise, t)
    torch.testing.assert_close(inp.target, noise - x0)  # velocity d x_t / d t
    torch.testing.assert_close(inp.weight, torch.ones(4, dtype=torch.float64))  # plain MSE on v
    assert isinstance(param.default_density(), type(get_density("logit_normal")))


def test_min_snr_weight_caps_the_x0_weight_at_gamma():
    param = get_parameterization("tld")  # x0 prediction: the weight is the x0-space weight
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0])
    x0 = torch.zeros(4, 1, 2, 2)
    inp = param.training_inputs(x0, sigma, torch.ones_like(x0), min_snr=5.0)
    torch.testing.assert_close(inp.weight, torch.tensor([5.0, 4.0, 1.0, 1 / 9]))
    flow = get_parameterization("flow").training_inputs(x0, sigma, torch.ones_like(x0), min_snr=5.0)
    t = sigma / (1 + sigma)
    torch.testing.assert_close(flow.weight, torch.minimum(1 / sigma**2, torch.tensor(5.0)) * t**2)


def test_masked_loss_averages_over_the_counted_elements():
    out, target = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    target[0, 0, 0, 0] = 3.0
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).expand(2, 1, 2, 2).clone()
    mask[1] = 1.0
    loss = get_parameterization("tld").loss(out, target, torch.ones(2), mask)
    torch.testing.assert_close(loss, torch.tensor([9.0, 1.0]))


def test_edm_weights_and_v_eps_targets():
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    edm = get_parameterization("edm", sigma_data=0.5)
    torch.testing.assert_close(edm.loss_weight(sigma), (sigma**2 + 0.25) / (sigma * 0.5) ** 2)
    x0, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(
        edm.training_inputs(x0, sigma, noise).weight, torch.ones(3, dtype=torch.float64)
    )
    v = get_parameterization("v").training_inputs(x0, sigma, noise).target
    alpha, sigma_vp = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
    torch.testing.assert_close(v, alpha[:, None] * noise - sigma_vp[:, None] * x0)
    assert torch.equal(get_parameterization("eps").training_inputs(x0, sigma, noise).target, noise)


def test_stable_diffusion_discrete_sigmas_and_timestep_maps():
    param = get_parameterization("eps")  # scaled-linear 0.00085..0.012, 1000 steps, as Stable Diffusion
    assert param.sigma_max == pytest.approx(14.6146, abs=1e-3)
    assert param.sigma_min == pytest.approx(0.029168, abs=1e-5)
    t = torch.tensor([0.0, 3.25, 500.5, 998.9], dtype=torch.float64)
    torch.testing.assert_close(param.schedule.sigma_to_t(param.schedule.t_to_sigma(t)), t)
    assert torch.equal(param.c_noise(param.sigmas[[7, 42]]), torch.tensor([7.0, 42.0], dtype=torch.float64))
    betas = make_betas("linear", 10)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


class TimestepRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.timesteps = []

    def forward(self, x, c_noise):
        self.timesteps.append(c_noise.clone())
        return self.conv(x) * 0.1


@pytest.mark.parametrize(
    "sampler, opts",
    [("heun", {"s_churn": 10.0}), ("euler", {"s_churn": 10.0}), ("dpm_2", {"s_churn": 10.0}),
     ("dpm_2_ancestral", {}), ("dpmpp_2s_ancestral", {})],
)  # fmt: skip
def test_quantized_model_only_sees_its_own_timesteps(sampler, opts):
    param = get_parameterization("v")
    torch.manual_seed(0)
    x = torch.randn(2, 2, 3, 3) * param.sigma_max
    sigmas = get_sigmas("karras", 8, param, quantize=True)
    model_sigmas = param.sigmas.float()
    assert all(torch.isclose(s, model_sigmas, rtol=1e-6).any() for s in sigmas[:-1])
    hats = []
    for quantize in (True, False):
        net = TimestepRecorder()
        report = (lambda c: hats.append(c["sigma_hat"])) if quantize else None
        get_sampler(sampler)(
            param.wrap(net, quantize=quantize), x, sigmas, disable=True, callback=report, **opts
        )
        timesteps = torch.cat(net.timesteps)
        on_grid = torch.equal(timesteps, timesteps.round())
        assert on_grid == quantize, (quantize, timesteps)  # unquantized churn/midpoints fall between steps
    assert all(torch.isclose(h, model_sigmas, rtol=1e-6).any() for h in hats)


def test_parameterizations_round_trip_through_json():
    for name, kwargs in PARAMS:
        param = get_parameterization(name, **kwargs)
        again = get_parameterization(**json.loads(json.dumps(param.to_dict())))
        assert again.to_dict() == param.to_dict() and type(again) is type(param)
    with pytest.raises(TLDError, match="unknown parameterization 'x0'; expected one of: tld, flow, edm, eps, v"):
        get_parameterization("x0")
    with pytest.raises(TLDError, match=r"unknown option\(s\) \['sigma_dat'\].*sigma_data"):
        get_parameterization("edm", sigma_dat=1.0)
    with pytest.raises(TLDError, match="unknown beta schedule 'quadratic'"):
        get_parameterization("eps", beta_schedule="quadratic")


def test_concat_channels_go_to_the_network_input():
    net = TimestepRecorder()
    denoiser = get_parameterization("tld").wrap(net)
    x = torch.randn(2, 1, 3, 3)
    concat = torch.randn(2, 1, 3, 3)
    out = denoiser(x, torch.tensor([1.0, 3.0]), concat=concat)
    expected = net.conv(torch.cat([x / torch.tensor([2.0, 4.0]).view(-1, 1, 1, 1), concat], 1)) * 0.1
    torch.testing.assert_close(out, expected)


def _t(sigma):
    return sigma / (1 + sigma)


def test_densities_have_their_documented_statistics():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    t = _t(get_density("tld_beta")(n, generator=gen).double())
    assert t.mean().item() == pytest.approx(1 / 3.5, abs=0.01)  # Beta(1, 2.5) mean
    log_sigma = get_density("lognormal")(n, generator=gen).double().log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)
    log_sigma = get_density("loglogistic")(n, generator=gen).double().log()
    assert log_sigma.median().item() == pytest.approx(-1.2, abs=0.04)
    assert log_sigma.std().item() == pytest.approx(0.66 * math.pi / math.sqrt(3), abs=0.05)
    t = _t(get_density("uniform_t", t_min=0.2, t_max=0.6)(n, generator=gen).double())
    assert t.min() >= 0.2 and t.max() <= 0.6 and t.mean().item() == pytest.approx(0.4, abs=0.01)
    t = _t(get_density("logit_normal")(n, generator=gen).double())
    logit = (t / (1 - t)).log()
    assert logit.mean().item() == pytest.approx(0.0, abs=0.03) and logit.std().item() == pytest.approx(
        1.0, abs=0.03
    )
    t = _t(get_density("mode", s=0.0)(n, generator=gen).double())  # s = 0 is uniform
    assert t.mean().item() == pytest.approx(0.5, abs=0.01) and t.std().item() == pytest.approx(
        0.2887, abs=0.01
    )
    t = _t(get_density("mode", s=1.29)(n, generator=gen).double())  # heavier in the middle
    assert t.mean().item() == pytest.approx(0.5, abs=0.01) and t.std().item() < 0.25
    param = get_parameterization("eps")
    sigmas = get_density("discrete", param=param)(500, generator=gen)
    assert all(torch.isclose(s, param.sigmas.float(), rtol=1e-6).any() for s in sigmas)


def test_densities_are_seeded_and_round_trip_through_json():
    for density in (
        get_density("tld_beta", a=2.0),
        get_density("loglogistic"),
        get_parameterization("v").default_density(),
    ):
        again = get_density(**json.loads(json.dumps(density.to_dict())))
        a = density(64, generator=torch.Generator().manual_seed(3))
        b = again(64, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and torch.isfinite(a).all() and (a > 0).all()
    with pytest.raises(TLDError, match="unknown density 'gamma'; expected one of: tld_beta, lognormal"):
        get_density("gamma")
    with pytest.raises(TLDError, match="a > 0 and b > 0"):
        get_density("tld_beta", b=0.0)
    with pytest.raises(TLDError, match="sigma_min must be < sigma_max"):
        get_density("loglogistic", sigma_min=5.0, sigma_max=1.0)
