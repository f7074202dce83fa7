"""img2img, inpaint and outpaint with tiny random components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import checker_image, tiny_pipeline

from tld.encoders.images import pil_to_tensor
from tld.errors import TLDError

FAST = dict(steps=3, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


@pytest.fixture(scope="module")
def image():
    return checker_image(16, seed=1)


def _pixels(images) -> torch.Tensor:
    return pil_to_tensor(list(images))


def _right_half_mask(size: int = 16) -> Image.Image:
    arr = np.zeros((size, size), dtype=np.uint8)
    arr[:, size // 2 :] = 255
    return Image.fromarray(arr, mode="L")


def test_img2img_strength_zero_is_the_reconstruction(pipe, image):
    recon = pipe.vae.decode(pipe.vae.encode(_pixels([image])))
    out = pipe.img2img(image, "a cute owl", strength=0.0, seed=1, **FAST)
    torch.testing.assert_close(out.latents, pipe.vae.encode(_pixels([image])), rtol=0, atol=1e-6)
    assert (_pixels(out) - recon).abs().max() <= 1 / 127.5 + 1e-5
    # Strength s runs the last round(s * steps) steps of the schedule, from the encoded image.
    calls = []
    hook = pipe.denoiser.register_forward_hook(lambda m, args, out: calls.append(float(args[1][0])))
    try:
        partial = pipe.img2img(image, "a cute owl", strength=0.67, seed=1, steps=3, progress=False)
    finally:
        hook.remove()
    tld_t = [1 - i / 3 for i in range(3)]  # the tld schedule's noise levels t; the first is clipped to 0.99
    assert calls == pytest.approx(tld_t[1:], abs=1e-6)
    assert (partial.latents - out.latents).abs().mean() > 0.05


def test_inpaint_keeps_the_known_region_and_changes_the_rest(pipe, image):
    known = pipe.vae.encode(_pixels([image]))
    out = pipe.inpaint(image, _right_half_mask(), "a cute owl", seed=3, **FAST)
    # Latent cells left of the mask are exactly the known latent, the others are new.
    torch.testing.assert_close(out.latents[..., :4], known[..., :4], rtol=0, atol=0)
    assert (out.latents[..., 4:] - known[..., 4:]).abs().mean() > 0.1
    # In pixels only "up to VAE error": the decoder's GroupNorm and attention mix the whole image.
    recon = pipe.vae.decode(known)
    error = (_pixels(out) - recon).abs()
    assert error[..., :4].mean() < 0.75 * error[..., 8:].mean()


def test_inpaint_composite_pastes_the_input_pixels(pipe, image):
    out = pipe.inpaint(image, _right_half_mask(), "a cute owl", seed=3, composite=True, **FAST)
    got, given = np.asarray(out[0]), np.asarray(image)
    assert np.array_equal(got[:, :8], given[:, :8])
    assert np.abs(got[:, 8:].astype(int) - given[:, 8:]).mean() > 2


def test_inpaint_batch_matches_single_and_options_act(pipe, image):
    mask = _right_half_mask()
    batch = pipe.inpaint(image, mask, ["a cute owl", "a red car"], seed=20, sampler="euler_ancestral", **FAST)
    single = pipe.inpaint(image, mask, "a red car", seed=21, sampler="euler_ancestral", **FAST)
    torch.testing.assert_close(batch.latents[1], single.latents[0], rtol=1e-4, atol=1e-4)
    for extra in (dict(resample=3), dict(feather=1.0)):
        other = pipe.inpaint(image, mask, "a red car", seed=21, sampler="euler_ancestral", **extra, **FAST)
        torch.testing.assert_close(other.latents[..., :4], single.latents[..., :4], rtol=0, atol=0)
        assert (other.latents[..., 4:] - single.latents[..., 4:]).abs().mean() > 1e-3


def test_outpaint_returns_the_enlarged_canvas_with_the_original_pixels(pipe, image):
    out = pipe.outpaint(image, "a cute owl", right=8, top=4, seed=5, **FAST)
    assert out[0].size == (24, 20)
    got = np.asarray(out[0])
    assert np.array_equal(got[4:, :16], np.asarray(image))
    assert out.latents.shape == (1, 4, 10, 12)
    assert np.abs(got[4:, 16:].astype(int) - got[4:, 15:16]).mean() > 1  # new content, not the edge copy


def test_native_inpainting_model_gets_masked_latent_and_mask(tiny_vae_dir, tiny_clip_dir, image):
    native = tiny_pipeline(tiny_vae_dir, tiny_clip_dir, in_channels=9)
    assert native.is_inpainting_model
    seen = []
    hook = native.denoiser.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        out = native.inpaint(image, _right_half_mask(), "a cute owl", seed=3, cfg=1.0, **FAST)
    finally:
        hook.remove()
    known = native.vae.encode(_pixels([image]))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1
    assert len(seen) == 3 and seen[0].shape[1] == 9
    torch.testing.assert_close(seen[0][:, 4:8], known * (1 - mask))
    torch.testing.assert_close(seen[0][:, 8:], mask)
    torch.testing.assert_close(out.latents[..., :4], known[..., :4], rtol=0, atol=0)
    # Plain generation with a 9-channel model: nothing known, an all-ones mask.
    seen.clear()
    hook = native.denoiser.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        native("a cute owl", seed=3, cfg=1.0, **FAST)
    finally:
        hook.remove()
    assert torch.equal(seen[0][:, 4:8], torch.zeros(1, 4, 8, 8)) and torch.equal(
        seen[0][:, 8:], torch.ones(1, 1, 8, 8)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p, im: p.inpaint(im, Image.new("L", (12, 16)), "owl"),
            "mask size 12x16 (WxH) does not match",
        ),
        (lambda p, im: p.outpaint(im, "owl", right=6), "margins must be multiples of 4 pixels"),
        (lambda p, im: p.outpaint(im, "owl"), "at least one of left/right/top/bottom"),
        (lambda p, im: p.img2img(im.resize((18, 16)), "owl"), "image size 18x16 must be a multiple of 4"),
        (lambda p, im: p.img2img(im, "owl", strength=1.5), "strength must be a number in [0, 1], got 1.5"),
        (
            lambda p, im: p.img2img(im, "owl", strength="0.5"),
            "strength must be a number in [0, 1], got '0.5'",
        ),
        (
            lambda p, im: p.inpaint(im, _right_half_mask(), "owl", resample=0),
            "resample must be an integer >= 1",
        ),
        (lambda p, im: p.inpaint(im, _right_half_mask(), "owl", feather=-1), "feather must be >= 0"),
    ],
)
def test_bad_edit_arguments(pipe, image, call, message):
    with pytest.raises(TLDError) as err:
        call(pipe, image)
    assert message in str(err.value)


def test_panorama_example_keeps_every_earlier_column(pipe):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "panorama.py"
    spec = importlib.util.spec_from_file_location("panorama_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    two = np.asarray(example.grow_panorama(pipe, "a lake", tiles=2, shift=8, seed=4, steps=2, progress=False))
    three = np.asarray(
        example.grow_panorama(pipe, "a lake", tiles=3, shift=8, seed=4, steps=2, progress=False)
    )
    assert two.shape == (16, 32, 3) and three.shape == (16, 40, 3)
    assert np.array_equal(three[:, :32], two)
    assert np.abs(three[:, 32:].astype(int) - three[:, 31:32]).mean() > 1
