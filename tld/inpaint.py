"""Training-free inpainting pieces: masks at latent size, the known-region denoiser, RePaint passes.

The trick works with any model and any sampler of `tld.diffusion`: the denoiser is wrapped so that
the known region of its input is the known latent noised to the current sigma, and the known
region of its x0 prediction is the known latent itself. A sampler then only ever moves the unknown
region; the known one follows `known + sigma * noise` down to `known` at sigma 0.

Mask convention (as diffusers): 1 / white = repaint, 0 / black = keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from tld.errors import TLDError


def mask_to_tensor(mask: Image.Image | np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask in pixels -> float (1, 1, H, W) in [0, 1]; `size` is the image's (height, width)."""
    if isinstance(mask, Image.Image):
        t = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    elif isinstance(mask, np.ndarray):
        t = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    elif isinstance(mask, torch.Tensor):
        t = mask.detach().float().cpu()
    else:
        raise TLDError(f"expected a mask as PIL image, numpy array or tensor, got {type(mask).__name__}")
    while t.ndim > 2 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3 and t.shape[-1] in (3, 4):  # (H, W, RGB[A]) arrays: any channel marks the pixel
        t = t[..., :3].amax(-1)
    if t.ndim != 2:
        raise TLDError(f"expected a 2-D mask (H, W), got shape {tuple(t.shape)}")
    if tuple(t.shape) != tuple(size):
        raise TLDError(
            f"mask size {t.shape[1]}x{t.shape[0]} (WxH) does not match the image size {size[1]}x{size[0]}"
        )
    if t.numel() and float(t.max()) > 1.0:  # 0..255 arrays
        t = t / 255.0
    return t.clamp(0, 1)[None, None]


def latent_mask(mask: torch.Tensor, factor: int, feather: float = 0.0) -> torch.Tensor:
    """Pixel mask (B, 1, H, W) -> latent mask (B, 1, H/f, W/f).

    A latent cell is repainted if any of its pixels is, so the kept region is only what is fully
    known. `feather` (in latent cells) softens the border inside the repainted region only, so the
    kept region still stays exactly the input.
    """
    if feather < 0:
        raise TLDError(f"feather must be >= 0, got {feather}")
    small = F.max_pool2d(mask, kernel_size=factor, stride=factor)
    if feather == 0:
        return small
    return torch.minimum(small, gaussian_blur(small, feather))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def extend_canvas(
    image: torch.Tensor, left: int = 0, right: int = 0, top: int = 0, bottom: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (B, 3, H, W) images by repeating their edge pixels; return (canvas, mask of the new border)."""
    pads = {"left": left, "right": right, "top": top, "bottom": bottom}
    bad = {k: v for k, v in pads.items() if not isinstance(v, int) or v < 0}
    if bad:
        raise TLDError(f"outpaint margins must be non-negative integers, got {bad}")
    if not any(pads.values()):
        raise TLDError("outpaint needs at least one of left/right/top/bottom > 0, got all 0")
    # Edge pixels give the border a plausible colour where feathering blends it in.
    canvas = F.pad(image, (left, right, top, bottom), mode="replicate")
    mask = torch.ones(image.shape[0], 1, canvas.shape[2], canvas.shape[3])
    mask[:, :, top : top + image.shape[2], left : left + image.shape[3]] = 0
    return canvas, mask


class KnownRegionDenoiser(nn.Module):
    """Wrap a denoiser so the known region (mask 0) is pinned to `known` at every call.

    `noise` is the unit noise the sampler started from: with it the pinned input
    `known + sigma * noise` is the same point a deterministic sampler would reach there itself.
    """

    def __init__(self, denoiser: Callable, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        super().__init__()
        self.inner = denoiser
        self.known, self.mask, self.noise = known, mask, noise

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        round_sigma = getattr(self.inner, "round_sigma", None)
        return round_sigma(sigma) if callable(round_sigma) else sigma

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        x = self.mask * x + (1 - self.mask) * (self.known + s * self.noise)
        x0 = self.inner(x, sigma, **extra_args)
        return self.mask * x0 + (1 - self.mask) * self.known


def repaint_loop(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict,
    resample: int,
    renoise: Callable[[torch.Tensor], torch.Tensor],
    progress: bool = True,
) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022) with jump length 1 over deterministic DDIM steps.

    Every step is done `resample` times; between repeats the result is noised back from
    sigma[i+1] to sigma[i] with `renoise(x)` (unit noise shaped like x), which lets the generated
    region settle against the pinned known one. The steps are first order because the samplers of
    tld.diffusion only run whole schedules that end in 0, and a multistep history would not survive
    the going back anyway.
    """
    s_in = x.new_ones(x.shape[0])
    for i in tqdm(range(len(sigmas) - 1), desc="repaint", disable=not progress):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        for u in range(resample):
            x0 = model(x, sigma * s_in, **extra_args)
            x = x0 + (sigma_next / sigma) * (x - x0)
            if u < resample - 1 and sigma_next > 0:
                x = x + (sigma**2 - sigma_next**2).sqrt() * renoise(x)
    return x
