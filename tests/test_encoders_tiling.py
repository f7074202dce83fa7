"""Tiled VAE decode: exact for a local decoder, close to the untiled decode for a real AutoencoderKL."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tld.encoders.tiling import tile_starts, tiled_decode
from tld.encoders.vae import VAE
from tld.errors import TLDError


def test_tile_starts_cover_the_image_with_the_overlap():
    assert tile_starts(8, 16, 4) == [0]
    assert tile_starts(20, 8, 4) == [0, 4, 8, 12]
    assert tile_starts(21, 8, 4) == [0, 4, 8, 12, 13]  # the last tile ends at the border


def test_local_decoder_gives_exactly_the_untiled_pixels():
    # 3x3 conv then 2x nearest upsampling: each pixel sees latents within 1 of it (<= overlap / 4).
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)

    def decode(z):
        return F.interpolate(conv(z), scale_factor=2, mode="nearest")

    z = torch.randn(2, 4, 21, 30)
    with torch.no_grad():
        whole = decode(z)
        tiled = tiled_decode(decode, z, tile=12, overlap=8, factor=2)
        hard = tiled_decode(decode, z, tile=12, overlap=0, factor=2)  # no overlap: seams
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    assert (hard - whole).abs().max() > 0.1


def test_tiled_vae_decode_is_close_to_the_untiled_one(tiny_vae_dir):
    # Each tile's GroupNorm and mid-block attention see only that tile, so the result is close,
    # not equal. Seed 0: mean error 0.017 (0.06 of the images' std 0.29), max 0.17; butting the
    # tiles together (overlap 0) gives 0.038 and 0.57.
    vae = VAE.from_pretrained(tiny_vae_dir)
    z = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(z)
    tiled = vae.decode(z, tile=24, overlap=8)
    seams = vae.decode(z, tile=24, overlap=0)
    assert tiled.shape == whole.shape == (2, 3, 64, 64)
    err, seam_err = (tiled - whole).abs(), (seams - whole).abs()
    assert err.mean() < 0.1 * whole.std() and err.max() < 0.3
    assert err.mean() < 0.6 * seam_err.mean() and err.max() < 0.5 * seam_err.max()
    vae.tile = 24  # the attribute is the default of every decode (what a pipeline's VAE uses)
    torch.testing.assert_close(vae.decode(z, overlap=8), tiled)


def test_bad_tile_settings_are_named():
    with pytest.raises(TLDError, match="tile >= 1 and 0 <= overlap < tile"):
        tiled_decode(lambda z: z, torch.zeros(1, 4, 8, 8), tile=4, overlap=4, factor=1)
