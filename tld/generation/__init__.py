"""Generation: what the pipeline, training and `tld eval` share to make images from a denoiser.

settings.py  SamplingDefaults (a model folder's recommended settings), default_schedule, default_size
job.py       Job: a call resolved to one row per image (prompt, seed, settings); seeded initial noise
run.py       the guided sampler run (sigmas, CFG denoiser, sampler with per-image noise, nudges) and
             `sample_seeded` for callers that hold condition tensors instead of prompts
decode.py    the VAE of a latent dataset, latents to image batches
scoring.py   N seeded images in batches from a sampling callable, then scored (FID monitor, tld eval)

Below the pipeline, training and eval; above the model, diffusion, data and encoders.
"""

from tld.generation.job import Job, initial_noise, make_job, resolve_seeds
from tld.generation.run import nudge, sample_seeded, sample_text_to_image
from tld.generation.scoring import Scored, generate_and_score
from tld.generation.settings import SamplingDefaults, default_schedule, default_size

__all__ = [
    "Job",
    "SamplingDefaults",
    "Scored",
    "default_schedule",
    "default_size",
    "generate_and_score",
    "initial_noise",
    "make_job",
    "nudge",
    "resolve_seeds",
    "sample_seeded",
    "sample_text_to_image",
]
