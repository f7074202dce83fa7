"""Classifier-free guidance and thresholding on a tiny real conditional network."""

import pytest
import torch
from torch import nn

from tld.diffusion import (
    CFGDenoiser,
    DynamicThreshold,
    apply_threshold,
    get_parameterization,
    get_sampler,
    get_sigmas,
)
from tld.errors import TLDError


class TinyConditional(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.text = nn.Linear(5, 2)
        self.calls = []

    def forward(self, x, c_noise, text_emb=None, drop_cond=None):
        self.calls.append(x.shape[0])
        cond = self.text(text_emb)
        if drop_cond is not None:
            cond = cond * (~drop_cond)[:, None]
        return self.conv(x) + cond[:, :, None, None] * (1 + c_noise[:, None, None, None])


def _setup(batch=3):
    net = TinyConditional()
    denoiser = get_parameterization("tld").wrap(net)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 2, 4, 4, generator=gen) * 3
    emb, neg = torch.randn(batch, 5, generator=gen), torch.randn(batch, 5, generator=gen)
    return net, denoiser, x, emb, neg


def test_cfg_scale_one_is_the_conditional_denoiser():
    net, denoiser, x, emb, neg = _setup()
    sigma = torch.full((3,), 2.0)
    expected = denoiser(x, sigma, text_emb=emb)
    guided = CFGDenoiser(denoiser, cfg_scale=1.0)(x, sigma, cond={"text_emb": emb}, uncond={"text_emb": neg})
    assert torch.equal(guided, expected)
    assert torch.equal(CFGDenoiser(denoiser, cfg_scale=7.0)(x, sigma, cond={"text_emb": emb}), expected)


def test_guidance_is_one_batched_call_with_the_documented_formula():
    net, denoiser, x, emb, neg = _setup()
    sigma = torch.full((3,), 2.0)
    cond = {"text_emb": emb, "drop_cond": torch.zeros(3, dtype=torch.bool)}
    uncond = {"text_emb": emb, "drop_cond": torch.ones(3, dtype=torch.bool)}
    net.calls.clear()
    guided = CFGDenoiser(denoiser, cfg_scale=4.0)(x, sigma, cond=cond, uncond=uncond)
    assert net.calls == [6]
    c, u = denoiser(x, sigma, **cond), denoiser(x, sigma, **uncond)
    torch.testing.assert_close(guided, u + 4.0 * (c - u))
    per_row = CFGDenoiser(denoiser, cfg_scale=torch.tensor([1.0, 4.0, 4.0]))(
        x, sigma, cond=cond, uncond=uncond
    )
    torch.testing.assert_close(per_row[0], c[0])
    torch.testing.assert_close(per_row[1:], guided[1:])


def test_rescale_matches_the_conditional_std():
    net, denoiser, x, emb, neg = _setup()
    sigma = torch.full((3,), 2.0)
    args = {"cond": {"text_emb": emb}, "uncond": {"text_emb": neg}}
    plain = CFGDenoiser(denoiser, cfg_scale=9.0)(x, sigma, **args)
    full = CFGDenoiser(denoiser, cfg_scale=9.0, rescale=1.0)(x, sigma, **args)
    half = CFGDenoiser(denoiser, cfg_scale=9.0, rescale=0.5)(x, sigma, **args)
    cond_std = denoiser(x, sigma, text_emb=emb).flatten(1).std(1)
    torch.testing.assert_close(full.flatten(1).std(1), cond_std)
    torch.testing.assert_close(half, (plain + full) / 2)


def test_thresholds_act_on_x0_before_the_step():
    x0 = torch.tensor([[[-3.0, -0.5, 0.5, 2.0]], [[0.1, -0.2, 0.3, -0.4]]])
    torch.testing.assert_close(apply_threshold(x0, 1.0), x0.clamp(-1, 1))
    dyn = apply_threshold(x0, DynamicThreshold(percentile=1.0, floor=1.0))
    torch.testing.assert_close(dyn[0], x0[0] / 3)  # s = max|x0| = 3: rescaled into [-1, 1]
    torch.testing.assert_close(dyn[1], x0[1])  # s clamps up to the floor: untouched
    _, denoiser, x, emb, _ = _setup()
    sigmas = get_sigmas("tld", 4, get_parameterization("tld"))
    seen = []
    cfg = CFGDenoiser(denoiser, cfg_scale=1.0, threshold=0.05)
    get_sampler("euler")(
        cfg, x, sigmas, extra_args={"cond": {"text_emb": emb}}, disable=True, callback=seen.append
    )
    assert all(c["denoised"].abs().max() <= 0.05 for c in seen)
    assert denoiser(x, sigmas[0].expand(3), text_emb=emb).abs().max() > 0.05


def test_bad_guidance_inputs():
    _, denoiser, x, emb, neg = _setup()
    sigma = torch.full((3,), 2.0)
    with pytest.raises(TLDError, match="same keys"):
        CFGDenoiser(denoiser, cfg_scale=3.0)(x, sigma, cond={"text_emb": emb}, uncond={})
    with pytest.raises(TLDError, match=r"must both have shape \(3, ...\), got \(3, 5\) and \(1, 5\)"):
        CFGDenoiser(denoiser, cfg_scale=3.0)(x, sigma, cond={"text_emb": emb}, uncond={"text_emb": neg[:1]})
    with pytest.raises(TLDError, match="rescale must be in \\[0, 1\\], got 2"):
        CFGDenoiser(denoiser, rescale=2)
    with pytest.raises(TLDError, match="percentile"):
        DynamicThreshold(percentile=0.0)


def test_cfg_schedule_picks_the_scale_by_noise_level():
    net, denoiser, x, emb, neg = _setup()
    cond, uncond = {"text_emb": emb}, {"text_emb": neg}
    scheduled = CFGDenoiser(denoiser, cfg_scale=1.5, schedule=[[0.5, 2.5], [2.0, 6.0]])
    for sigma, scale in [(10.0, 6.0), (2.0, 6.0), (1.9, 2.5), (0.5, 2.5), (0.3, 1.5)]:
        s = torch.full((3,), sigma)
        expected = CFGDenoiser(denoiser, cfg_scale=scale)(x, s, cond=cond, uncond=uncond)
        assert torch.equal(scheduled(x, s, cond=cond, uncond=uncond), expected), sigma
    # per-row noise levels (img2img-style batches) get per-row scales
    rows = torch.tensor([3.0, 1.0, 0.1])
    c, u = denoiser(x, rows, **cond), denoiser(x, rows, **uncond)
    expected = u + torch.tensor([6.0, 2.5, 1.5])[:, None, None, None] * (c - u)
    torch.testing.assert_close(scheduled(x, rows, cond=cond, uncond=uncond), expected)


def test_guidance_interval_skips_the_unconditional_branch_outside_it():
    # Kynkaenniemi et al. (2024): guide only for lo <= sigma < hi, i.e. scale 1 elsewhere.
    net, denoiser, x, emb, neg = _setup()
    interval = CFGDenoiser(denoiser, cfg_scale=1.0, schedule="5:1,1:4")
    args = {"cond": {"text_emb": emb}, "uncond": {"text_emb": neg}}
    for sigma, calls in [(20.0, [3]), (2.0, [6]), (0.5, [3])]:
        net.calls.clear()
        out = interval(x, torch.full((3,), sigma), **args)
        assert net.calls == calls, sigma
        if calls == [3]:
            assert torch.equal(out, denoiser(x, torch.full((3,), sigma), text_emb=emb))


def test_cfg_schedule_text_forms():
    from tld.diffusion.guidance import parse_cfg_schedule

    assert parse_cfg_schedule("0.5:2, 2:4") == [(2.0, 4.0), (0.5, 2.0)]  # highest sigma first
    for empty in (None, "", " ", "none", "None", []):
        assert parse_cfg_schedule(empty) is None, empty


@pytest.mark.parametrize(
    "schedule, match",
    [("2:x", "SIGMA:SCALE pieces"), ("2", "SIGMA:SCALE pieces"), ([[2, 4, 1]], "SIGMA:SCALE pieces"),
     ([[2, -1]], "finite scale >= 0"), ("-1:3", "sigma >= 0"), ([[True, 2]], "SIGMA:SCALE pieces")],
)  # fmt: skip
def test_bad_cfg_schedule_is_one_line(schedule, match):
    net, denoiser, *_ = _setup()
    with pytest.raises(TLDError, match=match) as err:
        CFGDenoiser(denoiser, schedule=schedule)
    assert "\n" not in str(err.value)
