"""Inference: `TLDPipeline` (text to image, img2img, inpaint, outpaint) and the model folder.

core.py      TLDPipeline: loading, saving, text to image
sampling.py  the one sampling core (settings, seeds, guidance, sampler run), also used by the
             training sample grids
edit.py      img2img / inpaint / outpaint and the training-free inpainting pieces
folder.py    the model folder (config.json + weights; local, hub or bundled)
images.py    PNG files with their settings, grids
"""

from tld.pipeline.core import ORIGINAL_SAMPLING, ORIGINAL_TEXT_ENCODER, ORIGINAL_VAE, TLDPipeline
from tld.pipeline.sampling import SamplingDefaults, TLDOutput

__all__ = [
    "ORIGINAL_SAMPLING",
    "ORIGINAL_TEXT_ENCODER",
    "ORIGINAL_VAE",
    "SamplingDefaults",
    "TLDOutput",
    "TLDPipeline",
]
