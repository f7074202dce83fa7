"""The one sampling core, shared by text-to-image, img2img, inpainting and the training sample grids:
settings, seeds, the guided denoiser, the sampler run and the result object.

Image k of a call starts from noise drawn on the CPU by its own generator seeded `seeds[k]`, and the
ancestral/SDE samplers draw their per-step noise from that same generator, so an image depends only
on its prompt, its seed and the settings, never on what else is in the batch.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from tld.diffusion import CFGDenoiser, DynamicThreshold, get_sampler, get_sigmas
from tld.diffusion.guidance import parse_cfg_schedule
from tld.diffusion.noise import make_generators, randn_like_seeded, seeded_noise_sampler
from tld.encoders.images import tensor_to_pil
from tld.errors import TLDError, check_keys, from_dict
from tld.model import check_inputs
from tld.model.surgery import blank_inpaint_concat

OUTPUT_TYPES = ("pil", "np", "latent")
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass
class SamplingDefaults:
    """Sampling settings; a model folder stores its recommended ones, every call may override them.

    `schedule=None` means "tld" for the tld parameterization and "karras" otherwise.
    `sharp_f`/`bright_f` are the original TLD's latent nudges, added to channels 3 and 0 of the final
    latent. `original_init` starts from unit noise at the network input, as the original sampler
    does, instead of k-diffusion's `sigma_max * noise`. `threshold` is the dynamic-thresholding
    `threshold` clamps the guided x0: a number is a static clamp, {"percentile": 0.995, "floor": 1.0}
    Imagen's dynamic thresholding (None = off); `cfg_rescale` is the guidance rescale.
    `cfg_schedule` makes guidance depend on the noise level: [[sigma, scale], ...] pieces (highest
    sigma first win), `cfg` below them (tld.diffusion.guidance.CFGDenoiser). A call that sets `cfg`
    without a `cfg_schedule` gets that constant scale (the model's schedule is dropped).
    """

    cfg: float = 7.0
    steps: int = 15
    sampler: str = "dpmpp_2m"
    schedule: str | None = None
    schedule_opts: dict[str, Any] = field(default_factory=dict)
    sharp_f: float = 0.0
    bright_f: float = 0.0
    original_init: bool = False
    threshold: float | dict[str, float] | None = None
    cfg_rescale: float = 0.0
    cfg_schedule: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingDefaults:
        return from_dict(cls, d, "sampling settings")

    def updated(self, **changes: Any) -> SamplingDefaults:
        """A copy with the given (non-None) settings replaced; unknown names are an error."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "cfg" in changes and "cfg_schedule" not in changes:
            changes["cfg_schedule"] = None  # an explicit cfg alone is a constant scale
        return SamplingDefaults.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        if isinstance(self.cfg, bool) or not isinstance(self.cfg, int | float) or self.cfg < 0:
            raise TLDError(f"cfg must be a number >= 0, got {self.cfg!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise TLDError(f"steps must be an integer >= 1, got {self.steps!r}")
        get_sampler(self.sampler)  # names the valid samplers when this one is unknown
        schedule = parse_cfg_schedule(self.cfg_schedule)
        self.cfg_schedule = None if schedule is None else [list(piece) for piece in schedule]

    def guided(self) -> bool:
        """Whether any step guides (needs the unconditional branch)."""
        return self.cfg != 1 or any(scale != 1 for _, scale in self.cfg_schedule or [])


@dataclass
class TLDOutput:
    """What a pipeline call returns; it also behaves as the sequence of its images (`out[0]`, `len(out)`).

    `images`: a list of PIL images (output_type "pil"), a float32 (B, H, W, 3) array in [0, 1] ("np"),
    or the latents again ("latent"). `latents`: the final scaled latents (B, C, h, w), float32 on the
    CPU. `seeds[k]` and `prompts[k]` belong to image k; `settings` are the call's shared settings.
    """

    images: Any
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
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise TLDError(f"num_images must be an integer >= 1, got {num_images!r}")
    rows = [p for p in prompts for _ in range(num_images)]
    negatives = None
    if negative_prompt is not None:
        neg = _as_list(negative_prompt, "negative_prompt")
        if len(neg) not in (1, len(prompts)):
            raise TLDError(f"expected 1 or {len(prompts)} negative prompts (one per prompt), got {len(neg)}")
        neg = neg * len(prompts) if len(neg) == 1 else neg
        negatives = [n for n in neg for _ in range(num_images)]
    if output_type not in OUTPUT_TYPES:
        raise TLDError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if sampler_opts is not None and not isinstance(sampler_opts, dict):
        raise TLDError(f"sampler_opts must be a dict of sampler options, got {sampler_opts!r}")
    settings = defaults.updated(**overrides)
    if settings.schedule is None:
        settings = replace(settings, schedule=default_schedule)
    settings.validate()
    seeds = resolve_seeds(seed, len(rows))
    labels = None
    if class_labels is not None:
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        if len(labels) not in (1, len(prompts)) or not all(isinstance(c, int) for c in labels):
            raise TLDError(
                f"expected 1 or {len(prompts)} integer class labels (one per prompt), got {class_labels!r}"
            )
        labels = [c for c in labels * (len(prompts) // len(labels)) for _ in range(num_images)]
    return Job(
        rows, negatives, seeds, settings, dict(sampler_opts or {}), output_type, bool(progress), labels
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


class _CastNetwork(nn.Module):
    """Runs the network in its own dtype (fp16/bf16) while the sampler keeps float32 state."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        dtype = next(self.network.parameters()).dtype
        kwargs = {
            k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in kwargs.items()
        }
        return self.network(x.to(dtype), noise_level.to(dtype), **kwargs).float()


def _threshold(value: float | dict[str, float] | None) -> float | DynamicThreshold | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, dict):
        check_keys(
            value, ("percentile", "floor"), "dynamic threshold has unknown keys {unknown}; expected {known}"
        )
        return DynamicThreshold(**value)
    raise TLDError(
        f"threshold must be a number > 0 (static clamp) or {{'percentile', 'floor'}} (dynamic), got {value!r}"
    )


def guided_denoiser(param: Any, network: nn.Module, settings: SamplingDefaults) -> CFGDenoiser:
    inner = param.wrap(_CastNetwork(network))
    return CFGDenoiser(
        inner,
        cfg_scale=float(settings.cfg),
        rescale=settings.cfg_rescale,
        threshold=_threshold(settings.threshold),
        schedule=settings.cfg_schedule,
    )


def sigmas_for(job: Job, param: Any, device: torch.device) -> torch.Tensor:
    s = job.settings
    return get_sigmas(s.schedule, s.steps, param, device=device, **s.schedule_opts).float()


def run_sampler(
    job: Job,
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any],
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Run the job's sampler; stochastic samplers draw their noise from the per-image generators."""
    if len(sigmas) < 2:  # nothing to sample (img2img at strength 0)
        return x
    fn = get_sampler(job.settings.sampler)
    accepted = inspect.signature(fn).parameters
    fixed = {"model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler"}
    unknown = sorted(set(job.sampler_opts) - (set(accepted) - fixed))
    if unknown:
        options = sorted(set(accepted) - fixed) or "none"
        raise TLDError(f"sampler {job.settings.sampler!r} has no option(s) {unknown}; it takes: {options}")
    kwargs = dict(job.sampler_opts)
    if "noise_sampler" in accepted:
        kwargs["noise_sampler"] = seeded_noise_sampler(x, generators)
    return fn(model, x, sigmas, extra_args=extra_args, disable=not job.progress, **kwargs)


def null_condition(cond: dict[str, Any]) -> dict[str, Any]:
    """The model's own null condition: the same tensors with every row dropped."""
    keep = cond["drop_cond"]
    return {**cond, "drop_cond": torch.ones_like(keep)}


def with_concat(cond: dict[str, Any], uncond: dict[str, Any] | None, concat: torch.Tensor | None):
    """Add an inpainting model's extra input channels to both branches of the guidance."""
    if concat is None:
        return cond, uncond
    return {**cond, "concat": concat}, None if uncond is None else {**uncond, "concat": concat}


def check_first_step(network: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, Any]) -> None:
    """`check_inputs` once, on what the network will see at the first step (not inside its forward)."""
    concat = cond.get("concat")
    net_x = x if concat is None else torch.cat([x, concat.to(x.dtype)], dim=1)
    given = {k: v for k, v in cond.items() if k != "concat"}
    check_inputs(network.config, net_x, sigmas[:1].expand(x.shape[0]), **given)


def sample_text_to_image(
    job: Job,
    param: Any,
    network: nn.Module,
    shape: tuple[int, int, int],
    device: torch.device,
    cond: dict[str, Any],
    uncond: dict[str, Any] | None,
) -> torch.Tensor:
    """Latents (B, *shape) from the job's seeds: noise, sigmas, the guided sampler run.

    An inpainting model gets its "nothing known" extra channels. `cond`/`uncond` are the network's
    keyword arguments for the two guidance branches (`uncond=None`: no guidance).
    """
    noise, generators = initial_noise(job, shape, device)
    sigmas = sigmas_for(job, param, device)
    start = sigmas[0] + 1 if job.settings.original_init else sigmas[0]
    c = network.config
    blank = blank_inpaint_concat(noise) if c.in_channels == 2 * c.out_channels + 1 else None
    cond, uncond = with_concat(cond, uncond, blank)
    check_first_step(network, noise, sigmas, cond)
    model = guided_denoiser(param, network, job.settings)
    return run_sampler(job, model, noise * start, sigmas, {"cond": cond, "uncond": uncond}, generators)


def nudge(latents: torch.Tensor, settings: SamplingDefaults) -> torch.Tensor:
    """The original TLD's "image editor" shifts of the final latent (channel 3 sharpness, 0 brightness)."""
    if not (settings.sharp_f or settings.bright_f) or latents.shape[1] < 4:
        return latents
    latents = latents.clone()
    latents[:, 3] += settings.sharp_f
    latents[:, 0] += settings.bright_f
    return latents


def to_output(
    job: Job, latents: torch.Tensor, images: torch.Tensor | None, settings: dict[str, Any]
) -> TLDOutput:
    """Wrap decoded images ((B, 3, H, W) in [-1, 1], or None for latents) in the requested type."""
    latents = latents.float().cpu()
    if job.output_type == "latent" or images is None:
        result: Any = latents
    elif job.output_type == "np":
        result = ((images.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    else:
        result = tensor_to_pil(images)
    return TLDOutput(result, latents, list(job.seeds), list(job.prompts), settings)
