"""The denoiser network: config, blocks, the Denoiser, its inputs, FLOP counts, the original-TLD
converter and model surgery (inpainting channels). Knows nothing about noise schedules or files
beyond its own folder's config.json and weights."""

from tld.model.config import PRESETS, DenoiserConfig
from tld.model.convert import load_original_tld
from tld.model.denoiser import Denoiser
from tld.model.flops import forward_flops
from tld.model.inputs import Conditioning, check_inputs

__all__ = [
    "PRESETS",
    "Conditioning",
    "Denoiser",
    "DenoiserConfig",
    "check_inputs",
    "forward_flops",
    "load_original_tld",
]
