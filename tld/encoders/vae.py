"""A frozen diffusers AutoencoderKL with the latent scale TLD trains on.

The denoiser never sees raw VAE latents: `encode` returns `vae_latents / latent_scale` and `decode`
multiplies back. The original TLD divides by 8 for the SDXL VAE, which brings the latents to roughly
unit standard deviation; the scale travels with the VAE in `spec` so a dataset and a model can never
disagree about it silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tld.common import batch_slices, first_line, is_hub_id, resolve_device, resolve_dtype
from tld.encoders.tiling import tiled_decode
from tld.errors import TLDError

DEFAULT_VAE = "madebyollin/sdxl-vae-fp16-fix"
DEFAULT_LATENT_SCALE = 8.0
TLD_VAE_JSON = "tld_vae.json"
# Decoded values may overshoot [-1, 1] a little; inputs outside this band were scaled wrongly.
_RANGE_TOLERANCE = 1e-3


class VAE:
    """Encode images in [-1, 1] to scaled latents and back. Always eval mode, never builds graphs."""

    def __init__(self, model: Any, latent_scale: float = DEFAULT_LATENT_SCALE, source: str | None = None):
        if not latent_scale or latent_scale <= 0:
            raise TLDError(f"latent_scale must be a positive number, got {latent_scale!r}")
        self.model = model.eval().requires_grad_(False)
        self.latent_scale = float(latent_scale)
        self.source = source
        self.tile: int | None = None  # decode larger latents in tiles of this size (see `decode`)
        # other facts of the folder's tld_vae.json (held-out PSNR, training record): kept on re-saving
        self.record: dict[str, Any] = {}

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike = DEFAULT_VAE,
        latent_scale: float | None = None,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype | str = torch.float32,
        subfolder: str | None = None,
    ) -> VAE:
        """Load from a hub id or a local folder (a plain diffusers folder or one we saved).

        `latent_scale=None` takes the scale recorded in the folder's tld_vae.json, else 8.0.
        """
        from diffusers import AutoencoderKL

        source = str(path_or_id)
        local = Path(source) / subfolder if subfolder else Path(source)
        if local.is_dir():
            source = str(Path(source).resolve())
        elif not is_hub_id(source):
            raise TLDError(f"VAE folder not found: {source}")
        recorded = local / TLD_VAE_JSON
        record = json.loads(recorded.read_text()) if recorded.is_file() else {}
        if latent_scale is None:
            latent_scale = record.get("latent_scale")
        try:
            model = AutoencoderKL.from_pretrained(
                source, subfolder=subfolder, torch_dtype=resolve_dtype(dtype)
            )
        except (OSError, ValueError) as e:
            raise TLDError(
                f"cannot load VAE {source!r} (expected a diffusers AutoencoderKL folder "
                f"or a reachable hub id): {first_line(e)}"
            ) from e
        if not isinstance(model, AutoencoderKL):
            raise TLDError(f"expected an AutoencoderKL at {source!r}, got {type(model).__name__}")
        model = model.to(resolve_device(device))
        vae = cls(model, latent_scale if latent_scale is not None else DEFAULT_LATENT_SCALE, source)
        vae.record = {k: v for k, v in record.items() if k not in ("latent_scale", "source")}
        if subfolder:
            vae.source = str(local.resolve()) if local.is_dir() else f"{source}/{subfolder}"
        return vae

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: str | torch.device | None = "cpu", **kwargs: Any) -> VAE:
        """Load from the dict written into meta.json / config.json: {"path": ..., "latent_scale": ...}."""
        if not isinstance(spec, dict) or "path" not in spec:
            raise TLDError(f"a VAE spec must be a dict with a 'path' key, got {spec!r}")
        return cls.from_pretrained(
            spec["path"], latent_scale=spec.get("latent_scale"), device=device, **kwargs
        )

    # ---- properties -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def spec(self) -> dict[str, Any]:
        return {"path": self.source, "latent_scale": self.latent_scale}

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents for an image of (height, width) pixels."""
        f = self.downsample_factor
        if height % f or width % f:
            raise TLDError(f"image size must be divisible by {f} for this VAE, got {height}x{width}")
        return (self.latent_channels, height // f, width // f)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> VAE:
        moves: dict[str, Any] = {"device": device} if device is not None else {}
        new_dtype = resolve_dtype(dtype) if dtype is not None else None
        # diffusers warns whenever a `dtype` keyword is present (even None or a no-op cast)
        if new_dtype is not None and new_dtype != self.dtype:
            moves["dtype"] = new_dtype
        if moves:
            self.model.to(**moves)
        return self

    # ---- encode / decode --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        batch_size: int | None = 16,
        sample: bool = False,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> float32 latents / latent_scale on the input's device.

        `sample=False` takes the posterior mean (deterministic); `sample=True` draws from the
        posterior with `generator` (which must live on the VAE's device).
        """
        self._check_images(images)
        if len(images) == 0:
            return images.new_zeros((0, *self.latent_shape(*images.shape[2:])), dtype=torch.float32)
        out = []
        for part in tqdm(batch_slices(len(images), batch_size), desc="vae encode", disable=not progress):
            x = images[part].to(self.device, self.dtype)
            dist = self.model.encode(x).latent_dist
            z = dist.sample(generator=generator) if sample else dist.mean
            out.append(z.float().to(images.device))
        return torch.cat(out) / self.latent_scale

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        batch_size: int | None = 16,
        progress: bool = False,
        tile: int | None = None,
        overlap: int = 8,
    ) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> float32 images in [-1, 1] on the input's device.

        Rows are decoded `batch_size` at a time. `tile` (latent pixels; None: the VAE's `tile`
        attribute, itself None by default) decodes latents larger than tile x tile in overlapping
        tiles blended over `overlap` latent pixels (`tld.encoders.tiling`): peak memory then follows
        the tile, not the image, and the result is close to, not equal to, the untiled one.
        """
        self._check_latents(latents)
        f = self.downsample_factor
        if len(latents) == 0:
            return latents.new_zeros((0, 3, latents.shape[2] * f, latents.shape[3] * f), dtype=torch.float32)
        tile = self.tile if tile is None else tile
        out = []
        for part in tqdm(batch_slices(len(latents), batch_size), desc="vae decode", disable=not progress):
            z = latents[part].to(self.device, self.dtype) * self.latent_scale
            if tile is not None and max(z.shape[2:]) > tile:
                x = tiled_decode(lambda t: self.model.decode(t).sample, z, tile, min(overlap, tile - 1), f)
            else:
                x = self.model.decode(z).sample
            out.append(x.float().clamp(-1, 1).to(latents.device))
        return torch.cat(out)

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TLDError(f"VAE.encode expects a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise TLDError(f"VAE.encode expects images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TLDError(f"VAE.encode expects float images in [-1, 1], got dtype {images.dtype}")
        self.latent_shape(images.shape[2], images.shape[3])
        if not bool(torch.isfinite(images).all()):
            raise TLDError("VAE.encode got NaN or infinite pixel values")
        if images.numel():
            lo, hi = float(images.min()), float(images.max())
            if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
                raise TLDError(
                    f"VAE.encode expects images in [-1, 1], got values in [{lo:.3g}, {hi:.3g}] "
                    "(use tld.encoders.images.pil_to_tensor)"
                )

    def _check_latents(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor):
            raise TLDError(f"VAE.decode expects a torch.Tensor (B, C, h, w), got {type(latents).__name__}")
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise TLDError(
                f"VAE.decode expects latents of shape (B, {self.latent_channels}, h, w), got {tuple(latents.shape)}"
            )

    # ---- saving -----------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write a diffusers folder (safetensors) plus tld_vae.json recording the latent scale (and the
        loaded folder's other facts, such as a trained VAE's held-out PSNR)."""
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        record = {"latent_scale": self.latent_scale, "source": self.source, **self.record}
        (folder / TLD_VAE_JSON).write_text(json.dumps(record, indent=2) + "\n")
