"""Validation sample grids while training: EMA weights, fixed seeds, a few sampler steps.

Sampling itself is the pipeline's core (`tld.pipeline.sampling`): the same seeded noise, sigmas,
guidance and inpainting channels as `TLDPipeline`, so a grid shows what the exported model will do.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from tld.data import LatentDataset
from tld.training.config import TrainConfig
from tld.training.ema import EMA

_VAE_CACHE: dict[str, Any] = {}


def ema_copy(net: nn.Module, ema: EMA) -> nn.Module:
    """A float32 eval-mode copy of `net` carrying the EMA weights (the live model is untouched)."""
    model = copy.deepcopy(net).float().eval()
    ema.copy_to(model)
    return model


def validation_condition(data: LatentDataset, num: int) -> tuple[dict[str, Any], int]:
    """Keyword arguments of the network for the validation rows, and how many rows there are."""
    if data.condition == "class":
        n = max(1, min(num, data.num_classes))
        return {"class_labels": torch.arange(n) % max(1, data.num_classes)}, n
    if data.condition == "text":
        emb, mask = validation_text(data, num)
        emb, mask = data.text_condition(emb, mask)
        cond = {"text_emb": torch.from_numpy(emb)}
        if mask is not None:
            cond["text_mask"] = torch.from_numpy(mask)
        return cond, int(emb.shape[0])
    return {}, num


def validation_text(data: LatentDataset, num: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to num validation text embeddings and, for per-token ones, their key masks.

    val_text_emb.npy stores no mask; its padding tokens are exact zeros (the encoders' contract), so
    the mask is "any feature non-zero". Without the mask the padding would be attended to, which no
    training row ever does, and the grid would not show what the pipeline draws.
    """
    arrays = data.arrays
    if arrays.val_text_emb is None:
        mask = None if arrays.text_mask is None else np.array(arrays.text_mask[:num], dtype=bool)
        return np.array(arrays.text_emb[:num]), mask
    emb = np.array(arrays.val_text_emb[:num])
    mask = (emb != 0).any(axis=-1) if emb.ndim == 3 and arrays.text_mask is not None else None
    return emb, mask


@torch.no_grad()
def sample_latents(
    model: nn.Module,
    param: Any,
    cond: dict[str, Any],
    n: int,
    shape: tuple[int, int, int],
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sample n latents with CFG from fixed per-row seeds (row k uses seed + k)."""
    from tld.pipeline.sampling import SamplingDefaults

    s = config.sample
    settings = SamplingDefaults(cfg=s.cfg, steps=s.steps, sampler=s.sampler, schedule=s.schedule)
    return sample_seeded(model, param, cond, [s.seed + k for k in range(n)], shape, settings, device)


@torch.no_grad()
def sample_seeded(
    model: nn.Module,
    param: Any,
    cond: dict[str, Any],
    seeds: list[int],
    shape: tuple[int, int, int],
    settings: Any,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Latent k from `seeds[k]` and row k of `cond`, with the pipeline's SamplingDefaults `settings`."""
    from tld.pipeline.sampling import make_job, null_condition, sample_text_to_image

    n = len(seeds)
    job = make_job(settings, settings.schedule or "tld", [""] * n, seed=seeds, progress=False)
    device = torch.device(device)
    cond = {k: v.to(device) for k, v in cond.items()}
    cond["drop_cond"] = torch.zeros(n, dtype=torch.bool, device=device)
    return sample_text_to_image(job, param, model, shape, device, cond, null_condition(cond))


def _load_vae(spec: str | dict | None, latent_scale: float, device: torch.device):
    if not spec:
        return None
    path = spec if isinstance(spec, str) else spec.get("path")
    if not path:
        return None
    key = f"{path}@{latent_scale}@{device}"
    if key not in _VAE_CACHE:
        from tld.encoders.vae import VAE

        try:
            # decode where training runs: an SDXL VAE on a CPU costs seconds per image
            _VAE_CACHE[key] = VAE.from_pretrained(path, latent_scale=latent_scale, device=device)
        except Exception as exc:  # a hub id offline, a moved folder: samples still get saved
            warnings.warn(
                f"cannot load VAE {path!r} for sample grids ({exc}); saving latent previews", stacklevel=2
            )
            _VAE_CACHE[key] = None
    return _VAE_CACHE[key]


def latents_to_images(latents: torch.Tensor, vae: Any) -> torch.Tensor:
    """(B,3,H,W) in [0,1]: decoded by the VAE, or the first three latent channels, min-max scaled."""
    if vae is not None:
        return ((vae.decode(latents.float().to(vae.device)).cpu() + 1) / 2).clamp(0, 1)
    x = latents.float().cpu()
    x = x[:, :3] if x.shape[1] >= 3 else x[:, :1].expand(-1, 3, -1, -1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    return torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")


def sample_grid(net: nn.Module, ema: EMA, param: Any, data: LatentDataset, config: TrainConfig) -> np.ndarray:
    """An (H, W, 3) uint8 grid of EMA samples for the validation prompts."""
    device = next(net.parameters()).device
    model = ema_copy(net, ema)
    cond, n = validation_condition(data, config.sample.num)
    latents = sample_latents(model, param, cond, n, data.latent_shape, config, device)
    meta = data.arrays.meta
    vae = _load_vae(config.sample.vae or meta.vae, float(meta.latent_scale), device)
    images = latents_to_images(latents, vae)
    grid = make_grid(images, nrow=int(np.ceil(np.sqrt(n))), padding=2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_grid(grid: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
