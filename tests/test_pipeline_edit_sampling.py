"""The sampling inside img2img and inpaint, watched step by step (not only the pasted-back result).

The pipeline's final re-pin and pixel paste make "the kept region equals the input" true by
construction, so these tests record what the sampler itself feeds the denoiser at every step:
the wrappers below stand between the sampler and the pipeline's guided denoiser.
"""

from __future__ import annotations

import functools

import pytest
import torch
from pipeline_fixtures import checker_image, tiny_pipeline

from tld.diffusion import get_sigmas
from tld.encoders.images import pil_to_tensor
from tld.generation import run as sampling
from tld.pipeline import edit

FAST = dict(steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


def _recording(model, calls):
    def denoise(x, sigma, **extra):
        x0 = model(x, sigma, **extra)
        calls.append((x.clone(), sigma.clone(), x0.clone()))
        return x0

    return denoise


@pytest.fixture
def calls(monkeypatch):
    """Every (x, sigma, x0) the sampler (or the RePaint loop) sees, in order."""
    seen: list = []
    real_get, real_repaint = sampling.get_sampler, edit.repaint_loop

    def get_sampler(name):
        fn = real_get(name)

        @functools.wraps(fn)  # keeps the signature the pipeline inspects for sampler options
        def run(model, *args, **kwargs):
            return fn(_recording(model, seen), *args, **kwargs)

        return run

    monkeypatch.setattr(sampling, "get_sampler", get_sampler)
    monkeypatch.setattr(
        edit, "repaint_loop", lambda model, *a, **k: real_repaint(_recording(model, seen), *a, **k)
    )
    return seen


def _noise(seeds, draws=1):
    """The unit noise image k's generator gives on its `draws`-th draw (the first is the start)."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        rows.append([torch.randn(4, 8, 8, generator=g) for _ in range(draws)][-1])
    return torch.stack(rows)


def _mask():
    from PIL import Image

    m = torch.zeros(16, 16, dtype=torch.uint8)
    m[:, 8:] = 255
    return Image.fromarray(m.numpy(), mode="L")


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun"])
def test_inpaint_known_region_tracks_the_renoised_original_at_every_step(pipe, calls, sampler):
    image = checker_image(16, seed=1)
    known = pipe.vae.encode(pil_to_tensor([image]))
    seen_net = []
    hook = pipe.denoiser.register_forward_pre_hook(
        lambda m, args: seen_net.append((args[0].clone(), args[1]))
    )
    try:
        pipe.inpaint(image, _mask(), "a cute owl", seed=7, sampler=sampler, cfg=2.0, **FAST)
    finally:
        hook.remove()
    noise = _noise([7])
    assert len(calls) >= 3
    for x, sigma, x0 in calls:
        s = sigma.view(-1, 1, 1, 1)
        # The sampler's own state, left half (latent columns 0-3): the original noised to this sigma.
        torch.testing.assert_close(x[..., :4], (known + s * noise)[..., :4], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x0[..., :4], known[..., :4], rtol=0, atol=0)
        assert (x0[..., 4:] - known[..., 4:]).abs().mean() > 0.05  # the hole is the model's
    # The network (cond and uncond halves of one call) sees x / (1 + sigma) at t = sigma / (1 + sigma):
    # the pinned original on the left, the sampler's own state in the hole.
    assert len(seen_net) == len(calls)
    for (net_x, t), (x, sigma, _) in zip(seen_net, calls):
        s = (t / (1 - t)).view(-1, 1, 1, 1)
        torch.testing.assert_close(s[:1].view(-1), sigma, rtol=1e-4, atol=1e-4)
        expected = x.clone()
        expected[..., :4] = (known + s[:1] * noise)[..., :4]
        torch.testing.assert_close(net_x, (expected / (1 + s[:1])).expand_as(net_x), rtol=1e-4, atol=1e-4)


def test_resample_renoises_between_repeats(pipe, calls):
    image = checker_image(16, seed=1)
    pipe.inpaint(image, _mask(), "a cute owl", seed=7, resample=2, cfg=2.0, **FAST)
    sigmas = get_sigmas("tld", 3, pipe.param).float()
    assert [float(c[1][0]) for c in calls] == pytest.approx([float(s) for s in sigmas[:3] for _ in (0, 1)])
    draws = 1
    for i in range(2):  # the last step goes to sigma 0 and has nothing to re-noise
        (xa, _, x0a), (xb, _, _) = calls[2 * i], calls[2 * i + 1]
        s, s_next = sigmas[i], sigmas[i + 1]
        ddim = x0a + (s_next / s) * (xa - x0a)
        draws += 1  # RePaint's noise comes from image k's own generator, after its start noise
        expected = ddim + (s**2 - s_next**2).sqrt() * _noise([7], draws)
        torch.testing.assert_close(xb, expected, rtol=1e-4, atol=1e-3)
        assert (xb - ddim).abs().mean() > 0.5 * (s**2 - s_next**2).sqrt()  # a real jump back up


def test_img2img_starts_from_the_noised_image(pipe, calls):
    image = checker_image(16, seed=3)
    out = pipe.img2img(image, "a cute owl", strength=0.67, seed=2, **FAST)
    z = pipe.vae.encode(pil_to_tensor([image]))
    sigmas = get_sigmas("tld", 3, pipe.param).float()
    x, sigma, _ = calls[0]
    assert float(sigma[0]) == pytest.approx(float(sigmas[1]))  # strength 0.67 of 3 steps: the last 2
    torch.testing.assert_close(x, z + sigmas[1] * _noise([2]), rtol=1e-5, atol=1e-5)
    assert len(calls) == 2 and out.latents.shape == (1, 4, 8, 8)


def test_img2img_batches_seeds_and_several_images(pipe):
    a, b = checker_image(16, seed=4), checker_image(16, seed=5)
    kw = dict(sampler="euler_ancestral", strength=0.7, **FAST)
    batch = pipe.img2img([a, b], ["an owl", "a car"], seed=[11, 12], **kw)
    alone = pipe.img2img(b, "a car", seed=12, **kw)
    torch.testing.assert_close(batch.latents[1], alone.latents[0], rtol=1e-4, atol=1e-4)
    first = pipe.img2img(a, "an owl", seed=11, **kw)
    torch.testing.assert_close(batch.latents[0], first.latents[0], rtol=1e-4, atol=1e-4)
    assert (batch.latents[0] - batch.latents[1]).abs().mean() > 0.05
    # One image for several outputs is shared by all of them.
    shared = pipe.img2img(a, "an owl", seed=11, num_images=2, **kw)
    torch.testing.assert_close(shared.latents[0], first.latents[0], rtol=1e-4, atol=1e-4)


def test_img2img_strength_one_ignores_the_image(pipe):
    a, b = checker_image(16, seed=4), checker_image(16, seed=5)
    kw = dict(strength=1.0, seed=3, **FAST)
    from_a, from_b = pipe.img2img(a, "an owl", **kw).latents, pipe.img2img(b, "an owl", **kw).latents
    text = pipe("an owl", seed=3, output_type="latent", **FAST).latents
    other_seed = pipe.img2img(a, "an owl", strength=1.0, seed=4, **FAST).latents
    # Strength 1 starts at sigma_max = 99 from z + 99 * noise: the image is 1% of the start, so the
    # result is text-to-image's up to that, far closer than another seed.
    seed_gap = (other_seed - from_a).abs().mean()
    assert (from_a - from_b).abs().mean() < 0.05 * seed_gap
    assert (from_a - text).abs().mean() < 0.05 * seed_gap
