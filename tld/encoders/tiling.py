"""Decoding large latents in overlapping tiles, so peak memory depends on the tile, not the image.

Each tile is decoded on its own; where tiles overlap, their pixels are blended with weights that
ramp linearly across the middle of the overlap, so no seam shows. A decoder whose every output
pixel depends only on latents within overlap / 4 of it gives exactly the untiled result; the
VAE's GroupNorm and mid-block attention see one tile at a time, so there the result is close,
not equal (tests/test_encoders_tiling.py measures how close).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tld.errors import TLDError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering [0, size), neighbours overlapping by >= `overlap`."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-d blend weights of a tile: 0 over the outer quarter of an overlap (where the tile's own
    border effects live), then linear up to 1 over its middle half; 1 at the image's borders."""
    w = torch.ones(length)
    if overlap > 0:
        margin = overlap // 4
        edge = ((torch.arange(overlap, dtype=torch.float32) + 0.5 - margin) / (overlap - 2 * margin)).clamp(
            0, 1
        )
        if rise:
            w[:overlap] = edge
        if fall:
            w[-overlap:] = torch.minimum(w[-overlap:], edge.flip(0))
    return w


def tiled_decode(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    tile: int,
    overlap: int,
    factor: int,
) -> torch.Tensor:
    """`decode` (latents -> pixels, `factor` x larger) applied tile by tile and blended.

    `tile` and `overlap` are in latent pixels; 0 <= overlap < tile. Returns float32 pixels on the
    latents' device.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise TLDError(
            f"tiled decode needs tile >= 1 and 0 <= overlap < tile, got tile {tile}, overlap {overlap}"
        )
    b, _, h, w = latents.shape
    out: torch.Tensor | None = None
    total = torch.zeros(1, 1, h * factor, w * factor, device=latents.device)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y in ys:
        for x in xs:
            part = decode(latents[:, :, y : y + tile, x : x + tile]).float().to(latents.device)
            th, tw = part.shape[-2:]
            wy = _ramp(th, overlap * factor, y > 0, y != ys[-1])
            wx = _ramp(tw, overlap * factor, x > 0, x != xs[-1])
            weight = (wy[:, None] * wx[None, :]).to(latents.device)
            if out is None:
                out = torch.zeros(b, part.shape[1], h * factor, w * factor, device=latents.device)
            region = (
                slice(None),
                slice(None),
                slice(y * factor, y * factor + th),
                slice(x * factor, x * factor + tw),
            )
            out[region] += part * weight
            total[region] += weight
    assert out is not None
    return out / total
