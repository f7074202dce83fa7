"""Validation sample grids while training: EMA weights, fixed seeds, a few sampler steps.

Sampling itself is the generation layer's core (`tld.generation`): the same seeded noise, sigmas,
guidance and inpainting channels as `TLDPipeline`, so a grid shows what the exported model will do.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from tld.data import LatentDataset
from tld.diffusion.parameterizations import Parameterization
from tld.encoders.vae import VAE
from tld.generation import SamplingDefaults, sample_seeded
from tld.generation.decode import dataset_vae, latents_to_images
from tld.training.config import TrainConfig
from tld.training.ema import EMA


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
    param: Parameterization,
    cond: dict[str, torch.Tensor],
    n: int,
    shape: tuple[int, int, int],
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sample n latents with CFG from fixed per-row seeds (row k uses seed + k)."""
    s = config.sample
    settings = SamplingDefaults(cfg=s.cfg, steps=s.steps, sampler=s.sampler, schedule=s.schedule)
    return sample_seeded(model, param, cond, [s.seed + k for k in range(n)], shape, settings, device)


def sample_grid(
    net: nn.Module, ema: EMA, param: Parameterization, data: LatentDataset, config: TrainConfig, vae: VAE | None
) -> np.ndarray:
    """An (H, W, 3) uint8 grid of EMA samples for the validation prompts, decoded by `vae` (None:
    latent previews; `grid_vae` loads it once when training starts)."""
    device = next(net.parameters()).device
    model = ema_copy(net, ema)
    cond, n = validation_condition(data, config.sample.num)
    latents = sample_latents(model, param, cond, n, data.latent_shape, config, device)
    images = latents_to_images(latents, vae)
    grid = make_grid(images, nrow=int(np.ceil(np.sqrt(n))), padding=2)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid_vae(config: TrainConfig, data: LatentDataset, device: torch.device) -> VAE | None:
    """The VAE that decodes the sample grids: `sample.vae`, else the dataset's; None when neither
    names one (the grids show latent previews). One that does not load stops training at the start."""
    if not config.sample.every:
        return None
    return dataset_vae(data.arrays.meta, device, config.sample.vae, "sample.vae")


def save_grid(grid: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
