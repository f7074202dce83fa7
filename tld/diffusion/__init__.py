"""Pure tensor math of diffusion: parameterizations, training densities, schedules, samplers, guidance.

Everything works on k-diffusion's convention: a denoiser ``D(x, sigma, **extra_args) -> x0`` on the
variance-exploding scale ``x = x0 + sigma * eps``, and sampling schedules that are 1-D sigma tensors ending in 0.
"""

from tld.diffusion.densities import DENSITIES, get_density
from tld.diffusion.guidance import CFGDenoiser, DynamicThreshold, apply_threshold
from tld.diffusion.noise import make_generators, randn_like_seeded, seeded_noise_sampler
from tld.diffusion.parameterizations import (
    PARAMETERIZATIONS,
    ParamDenoiser,
    TrainingInputs,
    get_parameterization,
)
from tld.diffusion.samplers import SAMPLERS, get_sampler
from tld.diffusion.schedules import (
    SCHEDULES,
    get_sigmas,
    get_sigmas_karras,
    get_sigmas_tld,
    quantize_sigmas,
)

__all__ = [
    "CFGDenoiser",
    "DENSITIES",
    "DynamicThreshold",
    "PARAMETERIZATIONS",
    "ParamDenoiser",
    "SAMPLERS",
    "SCHEDULES",
    "TrainingInputs",
    "apply_threshold",
    "get_density",
    "get_parameterization",
    "get_sampler",
    "get_sigmas",
    "get_sigmas_karras",
    "get_sigmas_tld",
    "make_generators",
    "quantize_sigmas",
    "randn_like_seeded",
    "seeded_noise_sampler",
]
