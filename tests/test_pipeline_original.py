"""The original TLD release path: from_original against the upstream sampler and its defaults,
`tld generate --original`, and model folders from a (local, test-built) Hugging Face hub cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import write_hub_snapshot
from PIL import Image
from pipeline_fixtures import TEXT_DIM, tiny_pipeline

from tld.encoders.text import load_text_encoder
from tld.encoders.vae import VAE
from tld.errors import TLDError
from tld.pipeline import TLDPipeline, core
from tld.pipeline.sampling import SamplingDefaults

# Upstream's DiffusionTransformer.generate_image_from_text (and tld/app.py): these settings, passed
# to DiffusionGenerator.generate with use_ddpm_plus left at True (DPM-Solver++(2M)).
UPSTREAM = dict(class_guidance=6, seed=11, n_iter=15, exponent=1, scale_factor=8, sharp_f=0, bright_f=0)


def _original_sampler(net, labels, seed, n, guidance, num_imgs=1):
    """The original DiffusionGenerator.generate loop (DPM-Solver++(2M) on t = 1 - i/n), written out.

    As upstream, the whole batch of starting noise comes from one generator seeded `seed`.
    """
    levels = [1 - i / n for i in range(n)]
    levels[0] = 0.99
    lambdas = [math.log((1 - t) / t) for t in levels]
    hs = [b - a for a, b in zip(lambdas, lambdas[1:])]
    both_labels = torch.cat([labels, torch.zeros_like(labels)])

    def predict(x, t):
        both = net(torch.cat([x, x]), torch.full((2 * num_imgs, 1), t), both_labels)
        cond, uncond = both.chunk(2)
        return guidance * cond + (1 - guidance) * uncond

    x = torch.randn(num_imgs, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    previous = None
    for i in range(n - 1):
        cur, nxt = levels[i], levels[i + 1]
        x0 = predict(x, cur)
        d = x0
        if previous is not None:
            r = hs[i - 1] / hs[i]
            d = (1 + 1 / (2 * r)) * x0 - previous / (2 * r)
        x = ((cur - nxt) * d + nxt * x) / cur
        previous = x0
    return predict(x, levels[-1])


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from reference_tld import make_original  # the reference implementation of the original network

    net = make_original(seed=2, embed=64, layers=2, image=8, patch=2, noise_dims=32, text=TEXT_DIM)
    path = tmp_path_factory.mktemp("original") / "state_dict_378000.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face hub whose cache is a folder of this test."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _from_original(path, tiny_vae_dir, tiny_clip_dir):
    text = load_text_encoder(tiny_clip_dir)
    return TLDPipeline.from_original(path, vae=VAE.from_pretrained(tiny_vae_dir), text_encoder=text), text


def test_from_original_defaults_reproduce_upstream_generate_image_from_text(
    original, tiny_vae_dir, tiny_clip_dir
):
    net, path = original
    pipe, text = _from_original(path, tiny_vae_dir, tiny_clip_dir)
    assert pipe.vae.latent_scale == UPSTREAM["scale_factor"] and pipe.param.name == "tld"
    assert pipe.sampling == SamplingDefaults(
        cfg=UPSTREAM["class_guidance"],
        steps=UPSTREAM["n_iter"],
        sampler="dpmpp_2m",
        schedule="tld",
        schedule_opts={"exponent": UPSTREAM["exponent"]},
        sharp_f=UPSTREAM["sharp_f"],
        bright_f=UPSTREAM["bright_f"],
        original_init=True,
    )
    # No settings given: the model's defaults alone give upstream's latents for its default seed.
    out = pipe("a cute owl", seed=UPSTREAM["seed"], progress=False)
    with torch.no_grad():
        labels = text.encode(["a cute owl"]).pooled
        expected = _original_sampler(
            net, labels, UPSTREAM["seed"], UPSTREAM["n_iter"], UPSTREAM["class_guidance"]
        )
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(out.latents, expected, rtol=1e-4, atol=1e-4)
    # Decoding multiplies by the original's scale 8 before the VAE.
    with torch.no_grad():
        pixels = pipe.vae.model.decode(out.latents * 8).sample.clamp(-1, 1)
    got = torch.from_numpy(np.array(out[0])).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(got, pixels[0], rtol=0, atol=1 / 127.5 + 1e-5)


def test_a_batch_matches_the_original_only_in_its_first_image(original, tiny_vae_dir, tiny_clip_dir):
    """docs/generation.md: upstream draws a whole batch from one generator, tld image k from seed + k."""
    net, path = original
    pipe, text = _from_original(path, tiny_vae_dir, tiny_clip_dir)
    out = pipe("a cute owl", seed=5, num_images=2, steps=4, progress=False)
    with torch.no_grad():
        labels = text.encode(["a cute owl"] * 2).pooled
        upstream = _original_sampler(net, labels, 5, 4, 6.0, num_imgs=2)
    torch.testing.assert_close(out.latents[0], upstream[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out.latents[1], upstream[1], atol=1e-2)  # different starting noise


def test_generate_original_from_a_local_checkpoint(
    original, hub_cache, tiny_vae_dir, tiny_clip_dir, tmp_path, monkeypatch
):
    from tld.cli import main
    from tld.pipeline.images import read_png_metadata

    _, path = original
    # The original's VAE is a hub id: served from the test's cache. Its CLIP ViT-L/14 (1.7 GB) is
    # replaced by the tiny open_clip tower, the one setting the command line has no option for.
    write_hub_snapshot(hub_cache, core.ORIGINAL_VAE, tiny_vae_dir)
    monkeypatch.setattr(core, "ORIGINAL_TEXT_ENCODER", str(tiny_clip_dir))
    out = tmp_path / "owl.png"
    argv = ["generate", "a cute owl", "--original", str(path), "--steps", "3", "--seed", "11"]
    assert main([*argv, "--no-progress", "-o", str(out)]) == 0
    meta = read_png_metadata(out)
    assert meta["model"] == f"original:{path}" and (meta["cfg"], meta["steps"], meta["seed"]) == (6.0, 3, 11)
    pipe, _ = _from_original(path, tiny_vae_dir, tiny_clip_dir)
    expected = pipe("a cute owl", steps=3, seed=11, progress=False)[0]
    with Image.open(out) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(expected))


def test_from_pretrained_hub_id_and_revision(hub_cache, tiny_vae_dir, tiny_clip_dir, tmp_path):
    repo = "someone/tiny-tld"
    folders = [
        tiny_pipeline(tiny_vae_dir, tiny_clip_dir, seed=s).save_pretrained(tmp_path / f"m{s}") for s in (0, 1)
    ]
    main_commit = write_hub_snapshot(hub_cache, repo, folders[0], "main")
    write_hub_snapshot(hub_cache, repo, folders[1], "v1")

    def first_weight(pipe):
        return pipe.denoiser.pos_embed.detach().clone()

    expected = [first_weight(TLDPipeline.from_pretrained(f)) for f in folders]
    assert not torch.equal(expected[0], expected[1])
    assert torch.equal(first_weight(TLDPipeline.from_pretrained(repo)), expected[0])
    assert torch.equal(first_weight(TLDPipeline.from_pretrained(repo, revision="v1")), expected[1])
    assert torch.equal(first_weight(TLDPipeline.from_pretrained(repo, revision=main_commit)), expected[0])
    with pytest.raises(TLDError, match="could not download hub repo 'someone/tiny-tld'"):
        TLDPipeline.from_pretrained(repo, revision="v2")
