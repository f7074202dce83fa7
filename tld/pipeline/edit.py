"""Image-conditioned generation: img2img, inpaint and outpaint, and the training-free inpainting pieces.

`TLDPipeline.img2img/inpaint/outpaint` call the functions here with the pipeline itself. They use
only its public side: `vae`, `param`, `denoiser`, `device`, `latent_factor`, `is_inpainting_model`
and the three steps every call shares, `make_job`, `conditioning` and `finish`.

Inpainting works with any model and any sampler: the denoiser is wrapped so that the known region of
its input is the known latent noised to the current sigma, and the known region of its x0 prediction
is the known latent itself. A sampler then only ever moves the unknown region. A 9-channel
inpainting model gets (masked latent, mask) as extra input channels instead.

Mask convention (as diffusers): 1 / white = repaint, 0 / black = keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from tld.diffusion.guidance import parse_cfg_schedule
from tld.diffusion.noise import randn_like_seeded
from tld.encoders.images import pil_to_tensor
from tld.errors import TLDError, check_int, check_number
from tld.generation.job import Job, initial_noise
from tld.generation.run import (
    StepEnd,
    check_first_step,
    guided_denoiser,
    run_sampler,
    sigmas_for,
    with_concat,
)
from tld.model.surgery import blank_inpaint_concat, inpaint_concat
from tld.pipeline.sampling import TLDOutput

if TYPE_CHECKING:
    from tld.pipeline.core import TLDPipeline

ImageInput = Image.Image | Sequence[Image.Image] | torch.Tensor


def _make_job(
    pipe: TLDPipeline, prompt: str | Sequence[str], kwargs: dict[str, Any]
) -> tuple[Job, StepEnd | None]:
    """The call's job, and its `callback_on_step_end` (as in `TLDPipeline.__call__`), or None."""
    on_step_end = kwargs.pop("callback_on_step_end", None)
    if on_step_end is not None and not callable(on_step_end):
        raise TLDError(f"callback_on_step_end must be callable, got {on_step_end!r}")
    return pipe.make_job(prompt, kwargs), on_step_end


def _images(pipe: TLDPipeline, image: ImageInput, batch: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] on the device from PIL image(s) or a tensor; checks the size."""
    x = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise TLDError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
    step = pipe.latent_factor
    if x.shape[2] % step or x.shape[3] % step:
        raise TLDError(
            f"image size {x.shape[3]}x{x.shape[2]} must be a multiple of {step} pixels on each side"
        )
    if x.shape[0] not in (1, batch):
        raise TLDError(f"expected 1 or {batch} images (one per output image), got {x.shape[0]}")
    return x.to(pipe.device, torch.float32).expand(batch, -1, -1, -1)


@torch.no_grad()
def img2img(
    pipe: TLDPipeline, image: ImageInput, prompt: str | Sequence[str], strength: float = 0.6, **kwargs: Any
) -> TLDOutput:
    """Encode `image`, noise it to the sigma `strength` of the way up the schedule, sample the rest.

    strength 0 returns the VAE reconstruction, 1 ignores the image.
    """
    check_number(strength, "strength", 0, 1)
    job, on_step_end = _make_job(pipe, prompt, kwargs)
    z = pipe.vae.encode(_images(pipe, image, job.batch))
    full = sigmas_for(job, pipe.param, pipe.device)
    steps = len(full) - 1
    sigmas = full[steps - round(strength * steps) :]
    noise, generators = initial_noise(job, tuple(z.shape[1:]), pipe.device)
    concat = blank_inpaint_concat(z) if pipe.is_inpainting_model else None
    schedule = start_relative_schedule(job.settings.cfg_schedule, full, len(full) - len(sigmas))
    run = replace(job, settings=replace(job.settings, cfg_schedule=schedule))
    latents = _sample(pipe, run, z + sigmas[0] * noise, sigmas, generators, concat, on_step_end=on_step_end)
    return pipe.finish(job, latents, strength=strength)  # the settings as given, so a rerun repeats


def start_relative_schedule(pieces: Any, full: torch.Tensor, start: int) -> list[list[float]] | None:
    """The guidance schedule of a run that starts at step `start` of the sigmas `full` (img2img).

    A piece `[sigma, scale]` above the start sigma would never act there. It acts on the same
    share of the remaining steps as it does of the full schedule instead, at least on the first
    one: the bundled model's `[[2, 4]]` guides 6 of 15 steps, so at strength 0.6 (9 steps from
    sigma 1.5) it guides the first 4. Pieces at or below the start sigma act as they are.
    """
    schedule = parse_cfg_schedule(pieces)
    if not schedule or start <= 0:
        return pieces if schedule else None
    steps, rest = full[:-1].tolist(), full[start:-1].tolist()
    out = []
    for sigma, scale in schedule:
        if sigma > rest[0]:
            share = sum(s >= sigma for s in steps) / len(steps)
            sigma = rest[min(len(rest), max(1, round(share * len(rest)))) - 1]
        out.append([float(sigma), float(scale)])
    return out


@torch.no_grad()
def inpaint(
    pipe: TLDPipeline,
    image: ImageInput,
    mask: Any,
    prompt: str | Sequence[str],
    feather: float = 0.0,
    resample: int = 1,
    composite: bool = False,
    **kwargs: Any,
) -> TLDOutput:
    """Repaint where `mask` is white/1 (a PIL image, array or tensor of the image's size), keep the rest.

    Any model works: the known region is pinned at every step. A 9-channel inpainting model gets
    (masked latent, mask) as input instead. `feather` softens the latent mask's border inside the
    repainted region (in latent cells), `resample` > 1 redoes every step that many times
    (RePaint, on DDIM steps instead of the chosen sampler), `composite` pastes the input's own pixels over the kept region after decoding.
    """
    job, on_step_end = _make_job(pipe, prompt, kwargs)
    pixels = _images(pipe, image, job.batch)
    mask_px = mask_to_tensor(mask, tuple(pixels.shape[2:])).to(pipe.device)
    return _inpaint(pipe, job, pixels, mask_px, feather, resample, composite, on_step_end)


@torch.no_grad()
def outpaint(
    pipe: TLDPipeline,
    image: ImageInput,
    prompt: str | Sequence[str],
    left: int = 0,
    right: int = 0,
    top: int = 0,
    bottom: int = 0,
    feather: float = 0.0,
    resample: int = 1,
    composite: bool = True,
    **kwargs: Any,
) -> TLDOutput:
    """Extend the canvas by the margins (pixels, multiples of `latent_factor`) and inpaint them.

    `composite=True` keeps the input's pixels exactly (no VAE round trip), so repeated
    outpainting (a panorama) does not wear down the older parts.
    """
    step = pipe.latent_factor
    margins = {"left": left, "right": right, "top": top, "bottom": bottom}
    bad = {k: v for k, v in margins.items() if isinstance(v, int) and v % step}
    if bad:
        raise TLDError(f"outpaint margins must be multiples of {step} pixels, got {bad}")
    job, on_step_end = _make_job(pipe, prompt, kwargs)
    canvas, mask_px = extend_canvas(_images(pipe, image, job.batch), left, right, top, bottom)
    mask_px = mask_px[:1].to(pipe.device)
    return _inpaint(pipe, job, canvas, mask_px, feather, resample, composite, on_step_end)


def _inpaint(
    pipe: TLDPipeline,
    job: Job,
    pixels: torch.Tensor,
    mask_px: torch.Tensor,
    feather: float,
    resample: int,
    composite: bool,
    on_step_end: StepEnd | None = None,
) -> TLDOutput:
    check_int(resample, "resample", 1)
    known = pipe.vae.encode(pixels)
    mask = latent_mask(mask_px, pipe.vae.downsample_factor, feather).expand(job.batch, -1, -1, -1)
    noise, generators = initial_noise(job, tuple(known.shape[1:]), pipe.device)
    sigmas = sigmas_for(job, pipe.param, pipe.device)
    start = sigmas[0] + 1 if job.settings.original_init else sigmas[0]
    # The known region starts where a deterministic sampler would put it: known + sigma * noise.
    x = mask * noise * start + (1 - mask) * (known + sigmas[0] * noise)
    concat, pin = None, (known, mask, noise)
    if pipe.is_inpainting_model:
        concat, pin = inpaint_concat(known, (mask > 0).to(known.dtype)), None
    latents = _sample(pipe, job, x, sigmas, generators, concat, pin, resample, on_step_end)
    paste = (pixels, mask_px) if composite else None
    extra = {"feather": feather or None}
    if resample > 1:
        extra.update(resample=resample, sampler="repaint_ddim")
    return pipe.finish(job, latents, known=known, mask=mask, paste=paste, **extra)


def _sample(
    pipe: TLDPipeline,
    job: Job,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generators: Sequence[torch.Generator],
    concat: torch.Tensor | None = None,
    pin: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    resample: int = 1,
    on_step_end: StepEnd | None = None,
) -> torch.Tensor:
    """Run the sampler from x; `pin` = (known, mask, noise) pins the known region."""
    cond, uncond = with_concat(*pipe.conditioning(job), concat)
    check_first_step(pipe.denoiser, x, sigmas, cond)
    model = guided_denoiser(pipe.param, pipe.denoiser, job.settings)
    if pin is not None:
        model = KnownRegionDenoiser(model, *pin)
    extra = {"cond": cond, "uncond": uncond}
    if resample <= 1:
        return run_sampler(job, model, x, sigmas, extra, generators, on_step_end)
    renoise = partial(randn_like_seeded, generators=generators)
    return repaint_loop(model, x, sigmas, extra, resample, renoise, job.progress, on_step_end)


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
    on_step_end: StepEnd | None = None,
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
        if on_step_end is not None and on_step_end(i, sigma_next, x) is False:
            return x0  # stopped: the estimate of the clean latents from this step
    return x
