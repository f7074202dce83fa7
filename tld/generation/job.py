"""A call, resolved: one row per image with its prompt, seed and the shared settings; its seeded noise.

Image k starts from noise drawn on the CPU by its own generator seeded `seeds[k]`, and the
ancestral/SDE samplers draw their per-step noise from that same generator, so an image depends only
on its prompt, its seed and the settings, never on what else is in the batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from tld.diffusion.noise import make_generators, randn_like_seeded
from tld.errors import TLDError, check_int
from tld.generation.settings import SamplingDefaults

OUTPUT_TYPES = ("pil", "np", "latent")
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass
class Job:
    """One call, resolved: a row per image."""

    prompts: list[str]
    negatives: list[str] | None
    seeds: list[int]
    settings: SamplingDefaults
    sampler_opts: dict[str, Any]
    output_type: str
    progress: bool
    class_labels: list[int] | None = None

    @property
    def batch(self) -> int:
        return len(self.prompts)

    def describe(self, **extra: Any) -> dict[str, Any]:
        s = self.settings
        info = {"cfg": s.cfg, "steps": s.steps, "sampler": s.sampler, "schedule": s.schedule}
        for name in ("sharp_f", "bright_f", "threshold", "cfg_rescale", "cfg_schedule"):
            if getattr(s, name):
                info[name] = getattr(s, name)
        if s.schedule_opts:
            info["schedule_opts"] = s.schedule_opts
        if self.sampler_opts:
            info["sampler_opts"] = self.sampler_opts
        if self.class_labels is not None:
            info["class_labels"] = self.class_labels
        if self.negatives:
            info["negative_prompt"] = self.negatives[0] if len(set(self.negatives)) == 1 else self.negatives
        return {**info, **{k: v for k, v in extra.items() if v is not None}}


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(p, str) for p in items):
        raise TLDError(f"{what} must be a string or a list of strings, got {type(value).__name__}")
    if not items:
        raise TLDError(f"{what} must not be an empty list")
    return list(items)


def _negatives(
    negative_prompt: str | Sequence[str] | None, prompts: int, num_images: int
) -> list[str] | None:
    if negative_prompt is None:
        return None
    neg = _as_list(negative_prompt, "negative_prompt")
    if len(neg) not in (1, prompts):
        raise TLDError(f"expected 1 or {prompts} negative prompts (one per prompt), got {len(neg)}")
    neg = neg * prompts if len(neg) == 1 else neg
    return [n for n in neg for _ in range(num_images)]


def _labels(class_labels: int | Sequence[int] | None, prompts: int, num_images: int) -> list[int] | None:
    if class_labels is None:
        return None
    labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
    if len(labels) not in (1, prompts) or not all(isinstance(c, int) for c in labels):
        raise TLDError(f"expected 1 or {prompts} integer class labels (one per prompt), got {class_labels!r}")
    return [c for c in labels * (prompts // len(labels)) for _ in range(num_images)]


def make_job(
    defaults: SamplingDefaults,
    default_schedule: str,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = None,
    num_images: int = 1,
    seed: int | Sequence[int] | None = None,
    output_type: str = "pil",
    progress: bool = True,
    sampler_opts: dict[str, Any] | None = None,
    class_labels: int | Sequence[int] | None = None,
    **overrides: Any,
) -> Job:
    """Check a call's arguments and expand them to one row per image (prompt-major order).

    `overrides` replace SamplingDefaults fields (None keeps the default; unknown names are an error).
    """
    prompts = _as_list(prompt, "prompt")
    check_int(num_images, "num_images", 1)
    rows = [p for p in prompts for _ in range(num_images)]
    negatives = _negatives(negative_prompt, len(prompts), num_images)
    if output_type not in OUTPUT_TYPES:
        raise TLDError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if sampler_opts is not None and not isinstance(sampler_opts, dict):
        raise TLDError(f"sampler_opts must be a dict of sampler options, got {sampler_opts!r}")
    settings = defaults.updated(**overrides)
    if settings.schedule is None:
        settings = replace(settings, schedule=default_schedule)
    settings.validate()
    return Job(
        prompts=rows,
        negatives=negatives,
        seeds=resolve_seeds(seed, len(rows)),
        settings=settings,
        sampler_opts=dict(sampler_opts or {}),
        output_type=output_type,
        progress=bool(progress),
        class_labels=_labels(class_labels, len(prompts), num_images),
    )


def resolve_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """None: a random base; an int s: s, s+1, ...; a list: one seed per image."""
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, bool):
        raise TLDError(f"seed must be an integer or a list of integers, got {seed!r}")
    if isinstance(seed, int | np.integer):
        seeds = [int(seed) + k for k in range(count)]
    else:
        seeds = list(seed)
        if len(seeds) != count or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) for s in seeds
        ):
            raise TLDError(f"expected one integer seed per image ({count}), got {seed!r}")
        seeds = [int(s) for s in seeds]
    # torch.Generator.manual_seed takes 64-bit values (negative ones wrap around).
    if not all(SEED_MIN <= s <= SEED_MAX for s in seeds):
        raise TLDError(f"seeds must be integers in [{SEED_MIN}, {SEED_MAX}], got {seed!r}")
    return seeds


def initial_noise(job: Job, shape: tuple[int, ...], device: torch.device):
    """Unit noise (B, *shape) with row k from seeds[k], plus the generators that drew it."""
    generators = make_generators(job.seeds)
    template = torch.empty(job.batch, *shape, device=device)
    return randn_like_seeded(template, generators), generators
