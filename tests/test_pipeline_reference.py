"""TLDPipeline against references built by hand in the test: each sampler called directly on the same
denoiser, sigmas and per-image noise; classifier-free guidance with a negative prompt written out;
half-precision runs against float32."""

from __future__ import annotations

import pytest
import torch
from pipeline_fixtures import tiny_pipeline

from tld.diffusion import SAMPLERS, get_sampler, get_sigmas

PROMPTS = ["a cute owl", "a red car"]


@pytest.fixture(scope="module")
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


def _cfg_denoiser(pipe, cfg, cond_text, uncond_text):
    """x0 = uncond + cfg * (cond - uncond) over the parameterization-wrapped network, two plain calls."""
    d = pipe.param.wrap(pipe.denoiser)
    drop = torch.ones(cond_text.shape[0], dtype=torch.bool)

    def denoise(x, sigma, **_):
        cond = d(x, sigma, text_emb=cond_text)
        uncond = d(x, sigma, drop_cond=drop) if uncond_text is None else d(x, sigma, text_emb=uncond_text)
        return uncond + cfg * (cond - uncond)

    return denoise


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_through_the_pipeline_equals_the_sampler_called_directly(pipe, sampler):
    seeds, steps, cfg = [3, 9], 3, 2.5
    out = pipe(
        PROMPTS, seed=seeds, sampler=sampler, steps=steps, cfg=cfg, progress=False, output_type="latent"
    )
    # The reference: image k's noise is drawn from its own generator seeded seeds[k], first the
    # start, then (ancestral/SDE samplers) every step's noise from that same generator.
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    def draw():
        return torch.stack([torch.randn(4, 8, 8, generator=g) for g in gens])

    sigmas = get_sigmas("tld", steps, pipe.param).float()
    text = pipe.text_encoder.encode(PROMPTS).pooled
    model = _cfg_denoiser(pipe, cfg, text, None)
    x = draw() * sigmas[0]
    expected = get_sampler(sampler)(model, x, sigmas, disable=True, noise_sampler=lambda s, t: draw())
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(out.latents, expected, rtol=1e-4, atol=1e-4)


def test_negative_prompt_is_the_unconditional_branch_of_the_guidance(pipe):
    negatives, cfg = ["blurry", "dark"], 3.0
    out = pipe(
        PROMPTS,
        negative_prompt=negatives,
        seed=4,
        cfg=cfg,
        sampler="euler",
        steps=2,
        output_type="latent",
        progress=False,
    )
    enc = pipe.text_encoder.encode
    model = _cfg_denoiser(pipe, cfg, enc(PROMPTS).pooled, enc(negatives).pooled)
    s0, s1, _ = get_sigmas("tld", 2, pipe.param).float()
    x = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (4, 5)]) * s0
    x = x + (x - model(x, s0.expand(2))) / s0 * (s1 - s0)  # one Euler step by hand
    expected = model(x, s1.expand(2))  # the last step to sigma 0 lands on the guided x0
    torch.testing.assert_close(out.latents, expected, rtol=1e-4, atol=1e-4)
    plain = pipe(PROMPTS, seed=4, cfg=cfg, sampler="euler", steps=2, output_type="latent", progress=False)
    assert (plain.latents - out.latents).abs().mean() > 0.01
    assert out.metadata(1)["negative_prompt"] == negatives


def _relative_error(tiny_vae_dir, tiny_clip_dir, dtype):
    p32 = tiny_pipeline(tiny_vae_dir, tiny_clip_dir, seed=1)
    half = tiny_pipeline(tiny_vae_dir, tiny_clip_dir, seed=1).to("cpu", dtype)
    seen = []
    hook = half.denoiser.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    try:
        b = half("a cute owl", seed=1, output_type="latent", steps=3, progress=False).latents
    finally:
        hook.remove()
    a = p32("a cute owl", seed=1, output_type="latent", steps=3, progress=False).latents
    assert half.dtype == dtype and next(half.denoiser.parameters()).dtype == dtype
    assert seen and set(seen) == {dtype}  # the network really ran in half precision
    assert b.dtype == torch.float32  # the sampler state and the result stay float32
    return ((a - b).abs().mean() / a.abs().mean()).item()


def test_float16_pipeline_matches_float32_on_cpu(tiny_vae_dir, tiny_clip_dir):
    # float16 is the CUDA default; torch runs it on the CPU too. Measured: 2.6% (bf16: 6.3%).
    fp16 = _relative_error(tiny_vae_dir, tiny_clip_dir, torch.float16)
    assert fp16 < 0.06, fp16


def test_bfloat16_pipeline_matches_float32(tiny_vae_dir, tiny_clip_dir):
    # bfloat16 keeps 8 bits of mantissa to float16's 11, so it is the looser of the two.
    bf16 = _relative_error(tiny_vae_dir, tiny_clip_dir, torch.bfloat16)
    assert bf16 < 0.12, bf16


def test_cfg_rescale_reaches_the_guidance(pipe):
    cfg, rescale = 6.0, 0.7
    out = pipe(
        "a cute owl", seed=8, cfg=cfg, cfg_rescale=rescale, steps=1, output_type="latent", progress=False
    )
    d = pipe.param.wrap(pipe.denoiser)
    sigma = get_sigmas("tld", 1, pipe.param).float()[:1]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8)) * sigma
    cond = d(x, sigma, text_emb=pipe.text_encoder.encode(["a cute owl"]).pooled)
    uncond = d(x, sigma, drop_cond=torch.ones(1, dtype=torch.bool))
    guided = uncond + cfg * (cond - uncond)
    # Lin et al. (2023): rescale the guided x0 to the conditional one's std, blend by `rescale`.
    expected = rescale * guided * cond.std() / guided.std() + (1 - rescale) * guided
    torch.testing.assert_close(out.latents, expected, rtol=1e-4, atol=1e-4)
    plain = pipe("a cute owl", seed=8, cfg=cfg, steps=1, output_type="latent", progress=False)
    torch.testing.assert_close(plain.latents, guided, rtol=1e-4, atol=1e-4)


def test_cfg_schedule_guides_each_step_with_its_scale(pipe, tmp_path):
    # Two Euler steps; sigma 99 then 1 (tld schedule at 2 steps). Written out by hand: scale 5 at
    # the first step (sigma >= 2), the base 1.5 at the second.
    seeds, base, high = [4, 5], 1.5, 5.0
    out = pipe(PROMPTS, seed=seeds, cfg=base, cfg_schedule="2:5", sampler="euler", steps=2,
               output_type="latent", progress=False)  # fmt: skip
    text = pipe.text_encoder.encode(PROMPTS).pooled
    s0, s1, _ = get_sigmas("tld", 2, pipe.param).float()
    assert s0 >= 2 > s1
    x = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in seeds]) * s0
    x = x + (x - _cfg_denoiser(pipe, high, text, None)(x, s0.expand(2))) / s0 * (s1 - s0)
    expected = _cfg_denoiser(pipe, base, text, None)(x, s1.expand(2))
    torch.testing.assert_close(out.latents, expected, rtol=1e-4, atol=1e-4)
    assert out.settings["cfg_schedule"] == [[2.0, 5.0]]
    # A model's stored schedule is its default; a call's cfg alone means a constant scale.
    shared = pipe.sampling  # the fixture is shared by the module: restore it
    pipe.sampling = shared.updated(cfg=base, cfg_schedule=[[2, 5]])
    try:
        pipe.save_pretrained(tmp_path / "m")
    finally:
        pipe.sampling = shared
    loaded = type(pipe).from_pretrained(str(tmp_path / "m"))
    assert loaded.sampling.cfg_schedule == [[2.0, 5.0]]
    call = dict(seed=seeds, sampler="euler", steps=2, output_type="latent", progress=False)
    torch.testing.assert_close(loaded(PROMPTS, **call).latents, out.latents, rtol=1e-5, atol=1e-5)
    explicit = loaded(PROMPTS, cfg=base, **call)
    constant = explicit.latents
    assert "cfg_schedule" not in explicit.settings
    assert not torch.allclose(constant, out.latents, atol=1e-3)
    unchanged = loaded(PROMPTS, cfg=base, cfg_schedule=[], **call).latents
    torch.testing.assert_close(unchanged, constant, rtol=1e-5, atol=1e-5)
