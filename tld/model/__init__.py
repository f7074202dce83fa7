"""The denoiser network: config, blocks, the Denoiser, FLOP counts and the original-TLD converter."""

from tld.model.config import PRESETS, DenoiserConfig
from tld.model.denoiser import Denoiser
from tld.model.flops import forward_flops

__all__ = ["PRESETS", "Denoiser", "DenoiserConfig", "forward_flops"]
