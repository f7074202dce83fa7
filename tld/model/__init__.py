"""The denoiser network: config, blocks, the Denoiser, FLOP counts and the original-TLD converter."""

from tld.model.config import PRESETS, DenoiserConfig
from tld.model.convert import load_original_tld
from tld.model.denoiser import Denoiser
from tld.model.flops import forward_flops

__all__ = ["PRESETS", "Denoiser", "DenoiserConfig", "forward_flops", "load_original_tld"]
