"""Inference: `TLDPipeline` (text to image, img2img, inpaint, outpaint) and the model folder.

core.py      TLDPipeline: loading, saving, text to image
sampling.py  TLDOutput, the result of a call (the sampling core it uses is `tld.generation`,
             shared with training and `tld eval`)
edit.py      img2img / inpaint / outpaint and the training-free inpainting pieces
folder.py    the model folder (config.json + weights; local, hub or bundled; fp16 export)
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
