"""The pipeline's side of sampling: the result object of a call (`TLDOutput`) and its conversion
from latents and decoded images.

The sampling core itself (settings, the job, seeded noise, the guided sampler run) is the generation
layer, `tld.generation`, which training and `tld eval` use too; its names are re-exported here for
code written against earlier versions (`from tld.pipeline.sampling import SamplingDefaults`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from tld.encoders.images import tensor_to_pil
from tld.generation.job import OUTPUT_TYPES, SEED_MAX, SEED_MIN, Job, initial_noise, make_job, resolve_seeds
from tld.generation.run import (
    check_first_step,
    guided_denoiser,
    nudge,
    null_condition,
    run_sampler,
    sample_text_to_image,
    sigmas_for,
    with_concat,
)
from tld.generation.settings import SamplingDefaults

__all__ = [
    "OUTPUT_TYPES",
    "SEED_MAX",
    "SEED_MIN",
    "Job",
    "SamplingDefaults",
    "TLDOutput",
    "check_first_step",
    "guided_denoiser",
    "initial_noise",
    "make_job",
    "nudge",
    "null_condition",
    "resolve_seeds",
    "run_sampler",
    "sample_text_to_image",
    "sigmas_for",
    "to_output",
    "with_concat",
]


@dataclass
class TLDOutput:
    """What a pipeline call returns; it also behaves as the sequence of its images (`out[0]`, `len(out)`).

    `images`: a list of PIL images (output_type "pil"), a float32 (B, H, W, 3) array in [0, 1] ("np"),
    or the latents again ("latent"). `latents`: the final scaled latents (B, C, h, w), float32 on the
    CPU. `seeds[k]` and `prompts[k]` belong to image k; `settings` are the call's shared settings.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor
    seeds: list[int]
    prompts: list[str]
    settings: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k):
        return self.images[k]

    def __iter__(self) -> Iterator:
        return iter(self.images)

    def metadata(self, k: int) -> dict[str, Any]:
        """The settings of image k (what the CLI stores in its PNG file)."""
        meta = {**self.settings, "prompt": self.prompts[k], "seed": self.seeds[k]}
        labels = meta.pop("class_labels", None)
        if labels is not None:
            meta["class_label"] = labels[k]
        return meta


def to_output(
    job: Job, latents: torch.Tensor, images: torch.Tensor | None, settings: dict[str, Any]
) -> TLDOutput:
    """Wrap decoded images ((B, 3, H, W) in [-1, 1], or None for latents) in the requested type."""
    latents = latents.float().cpu()
    result: list[Image.Image] | np.ndarray | torch.Tensor
    if job.output_type == "latent" or images is None:
        result = latents
    elif job.output_type == "np":
        result = ((images.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    else:
        result = tensor_to_pil(images)
    return TLDOutput(result, latents, list(job.seeds), list(job.prompts), settings)
