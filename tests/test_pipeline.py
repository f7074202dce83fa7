"""TLDPipeline text-to-image: save/load, seeds, samplers, guidance, sizes, the original weights, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pipeline_fixtures import TEXT_DIM, tiny_denoiser, tiny_pipeline

from tld.encoders.text import load_text_encoder
from tld.encoders.vae import VAE
from tld.errors import TLDError
from tld.pipeline import TLDPipeline

FAST = dict(steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


def test_save_and_load_give_identical_images(pipe, tmp_path):
    before = pipe("a cute owl", seed=11, num_images=2, **FAST)
    folder = pipe.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["vae"] == "vae" and config["text_encoder"] == "text_encoder"
    assert config["parameterization"]["name"] == "tld" and config["denoiser"]["text_dim"] == TEXT_DIM
    after = TLDPipeline.from_pretrained(folder, device="cpu")("a cute owl", seed=11, num_images=2, **FAST)
    assert before.seeds == after.seeds == [11, 12]
    assert before.latents.std() > 0.1
    torch.testing.assert_close(after.latents, before.latents, rtol=0, atol=0)
    assert [np.asarray(a).tolist() for a in after] == [np.asarray(b).tolist() for b in before]


def test_each_image_depends_only_on_its_seed(pipe):
    batch = pipe(["a cute owl", "a red car"], seed=5, num_images=2, sampler="euler_ancestral", **FAST)
    assert batch.prompts == ["a cute owl", "a cute owl", "a red car", "a red car"]
    assert batch.seeds == [5, 6, 7, 8]
    alone = pipe("a red car", seed=7, sampler="euler_ancestral", **FAST)
    torch.testing.assert_close(alone.latents[0], batch.latents[2], rtol=1e-4, atol=1e-4)
    # Different seeds and different prompts both change the image.
    assert (batch.latents[2] - batch.latents[3]).abs().mean() > 0.05
    assert (batch.latents[0] - batch.latents[2]).abs().mean() > 0.05
    explicit = pipe(["a cute owl", "a red car"], seed=[8, 5], **FAST)
    torch.testing.assert_close(
        explicit.latents[1], pipe("a red car", seed=5, **FAST).latents[0], rtol=1e-4, atol=1e-4
    )


def test_sampler_opts_reach_the_sampler(pipe):
    # Euler ancestral with eta 0 adds no noise: it is plain Euler.
    quiet = pipe("a cute owl", seed=1, sampler="euler_ancestral", sampler_opts={"eta": 0.0}, **FAST)
    euler = pipe("a cute owl", seed=1, sampler="euler", **FAST)
    noisy = pipe("a cute owl", seed=1, sampler="euler_ancestral", **FAST)
    torch.testing.assert_close(quiet.latents, euler.latents, rtol=1e-5, atol=1e-5)
    assert (noisy.latents - euler.latents).abs().mean() > 0.01
    assert quiet.settings["sampler_opts"] == {"eta": 0.0}


def test_cfg_one_equals_the_unguided_conditional_denoiser(pipe):
    out = pipe("a cute owl", seed=2, cfg=1.0, steps=1, progress=False, output_type="latent")
    # With one tld step the result is the network's x0 at sigma_max from the seeded noise.
    d = pipe.param.wrap(pipe.denoiser)
    sigma = torch.tensor([0.99 / 0.01])  # the tld schedule's first sigma
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    text = pipe.text_encoder.encode(["a cute owl"]).pooled
    expected = d(noise * sigma, sigma, text_emb=text)
    torch.testing.assert_close(out.latents, expected, rtol=1e-5, atol=1e-5)
    guided = pipe("a cute owl", seed=2, cfg=3.0, steps=1, progress=False, output_type="latent")
    assert (guided.latents - out.latents).abs().mean() > 0.01


def test_output_types_and_other_sizes(pipe):
    out = pipe("a cute owl", seed=3, height=24, width=32, output_type="np", **FAST)
    assert out.images.shape == (1, 24, 32, 3) and out.images.dtype == np.float32
    assert 0 <= out.images.min() and out.images.max() <= 1
    assert out.latents.shape == (1, 4, 12, 16)
    pil = pipe("a cute owl", seed=3, height=24, width=32, **FAST)
    assert pil[0].size == (32, 24)
    np.testing.assert_allclose(np.asarray(pil[0]) / 255.0, out.images[0], atol=1 / 255 + 1e-6)


def test_nudges_shift_latent_channels(pipe):
    base = pipe("a cute owl", seed=9, output_type="latent", **FAST)
    nudged = pipe("a cute owl", seed=9, output_type="latent", sharp_f=0.5, bright_f=-0.25, **FAST)
    delta = (nudged.latents - base.latents).mean(dim=(0, 2, 3))
    torch.testing.assert_close(delta, torch.tensor([-0.25, 0.0, 0.0, 0.5]), rtol=0, atol=1e-5)


def test_threshold_clamps_the_result(pipe):
    out = pipe("a cute owl", seed=9, output_type="latent", cfg=9.0, threshold=0.3, **FAST)
    assert out.latents.abs().max() <= 0.3 + 1e-6
    dyn = pipe(
        "a cute owl", seed=9, output_type="latent", threshold={"percentile": 0.9, "floor": 0.2}, **FAST
    )
    assert dyn.latents.abs().max() <= 0.2 + 1e-6


# ---- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompt=[]), "prompt must not be an empty list"),
        (dict(prompt="owl", cfg=-1), "cfg must be a number >= 0"),
        (dict(prompt="owl", steps=0), "steps must be an integer >= 1"),
        (dict(prompt="owl", height=18), "height must be a positive multiple of 4"),
        (dict(prompt="owl", width=30), "width must be a positive multiple of 4"),
        (dict(prompt="owl", sampler="plms"), "unknown sampler 'plms'"),
        (dict(prompt="owl", seed=[1, 2]), "one integer seed per image (1)"),
        (dict(prompt="owl", output_type="jpg"), "output_type must be one of"),
        (dict(prompt="owl", sharpness=1), "unknown sampling settings ['sharpness']"),
        (
            dict(prompt="owl", sampler="heun", sampler_opts={"eta": 1}),
            "sampler 'heun' has no option(s) ['eta']",
        ),
        (dict(prompt=["a", "b"], negative_prompt=["x", "y", "z"]), "expected 1 or 2 negative prompts"),
        (dict(prompt="owl", seed=2**64), "seeds must be integers in [-9223372036854775808, 1844"),
        (dict(prompt="owl", sampler_opts=0.5), "sampler_opts must be a dict of sampler options, got 0.5"),
        (dict(prompt="owl", threshold=-1.0), "threshold must be a number > 0 (static clamp)"),
        (dict(prompt="owl", threshold={"pct": 0.9}), "dynamic threshold has unknown keys ['pct']"),
    ],
)
def test_bad_call_arguments(pipe, kwargs, message):
    with pytest.raises(TLDError) as err:
        pipe(**kwargs, progress=False)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_model_folder_missing_files_are_named(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "model")
    (folder / "denoiser.safetensors").unlink()
    with pytest.raises(TLDError, match=r"missing denoiser\.safetensors"):
        TLDPipeline.from_pretrained(folder)
    import shutil

    shutil.rmtree(folder / "vae")
    with pytest.raises(TLDError, match=r"missing denoiser\.safetensors, vae/"):
        TLDPipeline.from_pretrained(folder)
    with pytest.raises(TLDError, match="model folder not found"):
        TLDPipeline.from_pretrained(tmp_path / "nowhere")


def test_text_dim_mismatch_is_refused(tiny_vae_dir, tiny_clip_dir):
    vae, text = VAE.from_pretrained(tiny_vae_dir), load_text_encoder(tiny_clip_dir)
    with pytest.raises(TLDError, match="24-d pooled embeddings but the denoiser expects text_dim 16"):
        TLDPipeline(tiny_denoiser(text_dim=16), vae, text, device="cpu")


def test_class_conditional_model_without_text_encoder(tiny_vae_dir, tmp_path):
    pipe = TLDPipeline(tiny_denoiser(text_dim=0, num_classes=3), VAE.from_pretrained(tiny_vae_dir), None)
    out = pipe(["shirt", "boot"], class_labels=[0, 2], seed=1, **FAST)
    assert out.settings["class_labels"] == [0, 2]
    alone = pipe("boot", class_labels=2, seed=2, **FAST)
    torch.testing.assert_close(alone.latents[0], out.latents[1], rtol=1e-4, atol=1e-4)
    other = pipe("boot", class_labels=1, seed=2, **FAST)
    assert (other.latents - alone.latents).abs().mean() > 0.01
    folder = pipe.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["text_encoder"] is None
    again = TLDPipeline.from_pretrained(folder, device="cpu")("boot", class_labels=2, seed=2, **FAST)
    torch.testing.assert_close(again.latents, alone.latents, rtol=0, atol=0)
    with pytest.raises(TLDError, match="class-conditional: pass class_labels"):
        pipe("boot", **FAST)
    with pytest.raises(TLDError, match=r"class_labels must be in \[0, 3\), got \[5\]"):
        pipe("boot", class_labels=5, **FAST)
    with pytest.raises(TLDError, match="no text encoder was given"):
        TLDPipeline(tiny_denoiser(), VAE.from_pretrained(tiny_vae_dir), None)


def test_per_token_text_conditioning(tiny_vae_dir, tiny_clip_dir):
    text = load_text_encoder(tiny_clip_dir)
    net = tiny_denoiser(text_dim=text.token_dim)
    pipe = TLDPipeline(net, VAE.from_pretrained(tiny_vae_dir), text, text_tokens=True, device="cpu")
    batch = pipe(["a cute owl", "a red car in the rain"], seed=3, negative_prompt="blurry", **FAST)
    alone = pipe("a red car in the rain", seed=4, negative_prompt="blurry", **FAST)
    torch.testing.assert_close(alone.latents[0], batch.latents[1], rtol=1e-4, atol=1e-4)
    assert (batch.latents[0] - batch.latents[1]).abs().mean() > 0.05
    with pytest.raises(TLDError, match="gives 24-d pooled embeddings"):
        TLDPipeline(net, VAE.from_pretrained(tiny_vae_dir), text, text_tokens=False)


def test_other_parameterizations_round_trip_and_pick_karras(tiny_vae_dir, tiny_clip_dir, tmp_path):
    vae, text = VAE.from_pretrained(tiny_vae_dir), load_text_encoder(tiny_clip_dir)
    pipe = TLDPipeline(tiny_denoiser(), vae, text, {"name": "edm", "sigma_data": 1.0}, device="cpu")
    out = pipe("a cute owl", seed=1, **FAST)
    assert out.settings["schedule"] == "karras" and torch.isfinite(out.latents).all()
    again = TLDPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "edm"), device="cpu")
    assert again.param.to_dict() == {"name": "edm", "sigma_data": 1.0, "min_sigma": 0.002, "max_sigma": 80.0}
    torch.testing.assert_close(again("a cute owl", seed=1, **FAST).latents, out.latents, rtol=0, atol=0)
