"""The guided sampler run: sigmas, the classifier-free-guided denoiser over the network, the sampler
with per-image noise, and the original TLD's latent nudges. Shared by text-to-image, img2img,
inpainting, the training sample grids, the FID monitor and `tld eval`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tld.diffusion import CFGDenoiser, DynamicThreshold, get_sampler, get_sigmas
from tld.diffusion.noise import seeded_noise_sampler
from tld.diffusion.parameterizations import Parameterization
from tld.errors import TLDError, check_keys
from tld.generation.job import Job, initial_noise, make_job
from tld.generation.settings import SamplingDefaults, default_schedule
from tld.model import check_inputs
from tld.model.surgery import blank_inpaint_concat


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


def guided_denoiser(param: Parameterization, network: nn.Module, settings: SamplingDefaults) -> CFGDenoiser:
    inner = param.wrap(_CastNetwork(network))
    return CFGDenoiser(
        inner,
        cfg_scale=float(settings.cfg),
        rescale=settings.cfg_rescale,
        threshold=_threshold(settings.threshold),
        schedule=settings.cfg_schedule,
    )


def sigmas_for(job: Job, param: Parameterization, device: torch.device) -> torch.Tensor:
    s = job.settings
    return get_sigmas(s.schedule, s.steps, param, device=device, **s.schedule_opts).float()


# on_step_end(step, sigma, latents) -> False to stop: called after every sampler step with the
# latents at the sigma that step reached (the pipeline's `callback_on_step_end`).
StepEnd = Callable[[int, torch.Tensor, torch.Tensor], Any]


class _StopSampling(Exception):
    def __init__(self, latents: torch.Tensor):
        super().__init__("stopped by callback_on_step_end")
        self.latents = latents


def _step_end_callback(on_step_end: StepEnd, sigmas: torch.Tensor) -> Callable[[dict[str, Any]], None]:
    """A k-diffusion sampler callback (called at step i with x at sigmas[i] and the model's estimate
    `denoised` of it) reporting the end of step i - 1; `False` stops with that estimate."""

    def report(info: dict[str, Any]) -> None:
        i = int(info["i"])
        if i > 0 and on_step_end(i - 1, sigmas[i], info["x"]) is False:
            raise _StopSampling(info["denoised"])

    return report


def run_sampler(
    job: Job,
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any],
    generators: Sequence[torch.Generator],
    on_step_end: StepEnd | None = None,
) -> torch.Tensor:
    """Run the job's sampler; stochastic samplers draw their noise from the per-image generators.

    `on_step_end(step, sigma, latents)` is called after every step (the last with sigma 0 and the
    result); where it returns False the run stops and returns the model's estimate of the clean
    latents from the latents it was given (the partially denoised result).
    """
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
    if on_step_end is not None:
        if not callable(on_step_end):
            raise TLDError(f"callback_on_step_end must be callable, got {on_step_end!r}")
        kwargs["callback"] = _step_end_callback(on_step_end, sigmas)
    try:
        x = fn(model, x, sigmas, extra_args=extra_args, disable=not job.progress, **kwargs)
    except _StopSampling as stop:
        return stop.latents
    if on_step_end is not None:
        on_step_end(len(sigmas) - 2, sigmas[-1], x)
    return x


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
    param: Parameterization,
    network: nn.Module,
    shape: tuple[int, int, int],
    device: torch.device,
    cond: dict[str, Any],
    uncond: dict[str, Any] | None,
    on_step_end: StepEnd | None = None,
) -> torch.Tensor:
    """Latents (B, *shape) from the job's seeds: noise, sigmas, the guided sampler run.

    An inpainting model gets its "nothing known" extra channels. `cond`/`uncond` are the network's
    keyword arguments for the two guidance branches (`uncond=None`: no guidance); `on_step_end`
    as in `run_sampler`.
    """
    noise, generators = initial_noise(job, shape, device)
    sigmas = sigmas_for(job, param, device)
    start = sigmas[0] + 1 if job.settings.original_init else sigmas[0]
    c = network.config
    blank = blank_inpaint_concat(noise) if c.in_channels == 2 * c.out_channels + 1 else None
    cond, uncond = with_concat(cond, uncond, blank)
    check_first_step(network, noise, sigmas, cond)
    model = guided_denoiser(param, network, job.settings)
    extra = {"cond": cond, "uncond": uncond}
    return run_sampler(job, model, noise * start, sigmas, extra, generators, on_step_end)


@torch.no_grad()
def sample_seeded(
    network: nn.Module,
    param: Parameterization,
    cond: dict[str, torch.Tensor],
    seeds: list[int],
    shape: tuple[int, int, int],
    settings: SamplingDefaults,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Latent k from `seeds[k]` and row k of `cond` (the network's condition tensors, no prompts),
    guided against the model's null condition; what training's grids and FID monitor draw."""
    n = len(seeds)
    schedule = settings.schedule or default_schedule(param.name)
    job = make_job(settings, schedule, [""] * n, seed=seeds, progress=False)
    device = torch.device(device)
    cond = {k: v.to(device) for k, v in cond.items()}
    cond["drop_cond"] = torch.zeros(n, dtype=torch.bool, device=device)
    return sample_text_to_image(job, param, network, shape, device, cond, null_condition(cond))


def nudge(latents: torch.Tensor, settings: SamplingDefaults) -> torch.Tensor:
    """The original TLD's "image editor" shifts of the final latent (channel 3 sharpness, 0 brightness)."""
    if not (settings.sharp_f or settings.bright_f) or latents.shape[1] < 4:
        return latents
    latents = latents.clone()
    latents[:, 3] += settings.sharp_f
    latents[:, 0] += settings.bright_f
    return latents
