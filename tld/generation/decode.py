"""Latents back to pixels outside the pipeline: the VAE a latent dataset was encoded with, and
decoded (or previewed) image batches."""

from __future__ import annotations

from typing import Any

import torch

from tld.data.format import DatasetMeta
from tld.encoders.vae import VAE
from tld.errors import TLDError


def vae_path(spec: str | dict[str, Any] | None) -> str | None:
    """The folder or hub id in a VAE spec (a string, or {"path": ..., "latent_scale": ...})."""
    path = spec if isinstance(spec, str) else (spec or {}).get("path")
    return str(path) if path else None


def dataset_vae(
    meta: DatasetMeta, device: torch.device | str, override: str | None, setting: str
) -> VAE | None:
    """The VAE of a latent dataset (`override`, else the one its meta.json records) at its latent
    scale; None when neither names one. A named VAE that does not load is a TLDError that names
    `setting`, the config field that overrides it ("fid.vae", "sample.vae")."""
    path = vae_path(override or meta.vae)
    if path is None:
        return None
    try:
        return VAE.from_pretrained(path, latent_scale=float(meta.latent_scale), device=device)
    except TLDError as e:
        where = setting.split(".")[0]
        raise TLDError(f"{where}: {e} (set {setting} to the VAE the latents were encoded with)") from None


def latents_to_images(latents: torch.Tensor, vae: VAE | None) -> torch.Tensor:
    """(B,3,H,W) in [0,1]: decoded by the VAE, or the first three latent channels, min-max scaled."""
    if vae is not None:
        return ((vae.decode(latents.float().to(vae.device)).cpu() + 1) / 2).clamp(0, 1)
    x = latents.float().cpu()
    x = x[:, :3] if x.shape[1] >= 3 else x[:, :1].expand(-1, 3, -1, -1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    return torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")
