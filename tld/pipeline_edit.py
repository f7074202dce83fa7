"""Image-conditioned generation for TLDPipeline: img2img, inpaint and outpaint.

A mixin so the pipeline file stays about loading and text-to-image; it uses the pipeline's
`_job`, `_sample`, `_finish`, `vae`, `param`, `device` and `latent_factor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from tld.encoders.images import pil_to_tensor
from tld.errors import TLDError
from tld.generation import Job, TLDOutput, initial_noise, sigmas_for
from tld.inpaint import extend_canvas, latent_mask, mask_to_tensor
from tld.training.augment import inpaint_concat

ImageInput = Image.Image | Sequence[Image.Image] | torch.Tensor


class ImageEditing:
    """img2img / inpaint / outpaint; every other keyword argument is as in `TLDPipeline.__call__`."""

    def _images(self, image: ImageInput, batch: int) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] on the device from PIL image(s) or a tensor; checks the size."""
        x = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise TLDError(f"expected images of shape (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        step = self.latent_factor
        if x.shape[2] % step or x.shape[3] % step:
            raise TLDError(
                f"image size {x.shape[3]}x{x.shape[2]} must be a multiple of {step} pixels on each side"
            )
        if x.shape[0] not in (1, batch):
            raise TLDError(f"expected 1 or {batch} images (one per output image), got {x.shape[0]}")
        return x.to(self.device, torch.float32).expand(batch, -1, -1, -1)

    @torch.no_grad()
    def img2img(
        self, image: ImageInput, prompt: str | Sequence[str], strength: float = 0.6, **kwargs: Any
    ) -> TLDOutput:
        """Encode `image`, noise it to the sigma `strength` of the way up the schedule, sample the rest.

        strength 0 returns the VAE reconstruction, 1 ignores the image.
        """
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
            raise TLDError(f"strength must be a number in [0, 1], got {strength!r}")
        job = self._job(prompt, kwargs)
        z = self.vae.encode(self._images(image, job.batch))
        sigmas = sigmas_for(job, self.param, self.device)
        steps = len(sigmas) - 1
        sigmas = sigmas[steps - round(strength * steps) :]
        noise, generators = initial_noise(job, tuple(z.shape[1:]), self.device)
        latents = self._sample(job, z + sigmas[0] * noise, sigmas, generators, concat=self._blank_concat(z))
        return self._finish(job, latents, strength=strength)

    @torch.no_grad()
    def inpaint(
        self,
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
        job = self._job(prompt, kwargs)
        pixels = self._images(image, job.batch)
        mask_px = mask_to_tensor(mask, tuple(pixels.shape[2:])).to(self.device)
        return self._inpaint(job, pixels, mask_px, feather, resample, composite)

    @torch.no_grad()
    def outpaint(
        self,
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
        step = self.latent_factor
        margins = {"left": left, "right": right, "top": top, "bottom": bottom}
        bad = {k: v for k, v in margins.items() if isinstance(v, int) and v % step}
        if bad:
            raise TLDError(f"outpaint margins must be multiples of {step} pixels, got {bad}")
        job = self._job(prompt, kwargs)
        canvas, mask_px = extend_canvas(self._images(image, job.batch), left, right, top, bottom)
        return self._inpaint(job, canvas, mask_px[:1].to(self.device), feather, resample, composite)

    def _inpaint(
        self,
        job: Job,
        pixels: torch.Tensor,
        mask_px: torch.Tensor,
        feather: float,
        resample: int,
        composite: bool,
    ) -> TLDOutput:
        if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
            raise TLDError(f"resample must be an integer >= 1, got {resample!r}")
        known = self.vae.encode(pixels)
        mask = latent_mask(mask_px, self.vae.downsample_factor, feather).expand(job.batch, -1, -1, -1)
        noise, generators = initial_noise(job, tuple(known.shape[1:]), self.device)
        sigmas = sigmas_for(job, self.param, self.device)
        start = sigmas[0] + 1 if job.settings.original_init else sigmas[0]
        # The known region starts where a deterministic sampler would put it: known + sigma * noise.
        x = mask * noise * start + (1 - mask) * (known + sigmas[0] * noise)
        concat, pin = None, (known, mask, noise)
        if self.is_inpainting_model:
            concat, pin = inpaint_concat(known, (mask > 0).to(known.dtype)), None
        latents = self._sample(job, x, sigmas, generators, concat=concat, pin=pin, resample=resample)
        paste = (pixels, mask_px) if composite else None
        extra = {"feather": feather or None}
        if resample > 1:
            extra.update(resample=resample, sampler="repaint_ddim")
        return self._finish(job, latents, known=known, mask=mask, paste=paste, **extra)

    def _blank_concat(self, z: torch.Tensor) -> torch.Tensor | None:
        """An inpainting model's extra channels when nothing is known: a zero latent, an all-ones mask."""
        if not self.is_inpainting_model:
            return None
        return inpaint_concat(torch.zeros_like(z), torch.ones_like(z[:, :1]))
