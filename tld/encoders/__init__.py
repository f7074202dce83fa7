"""Frozen encoders: the VAE (images <-> latents) and text encoders (captions -> embeddings).

Heavy libraries (diffusers, open_clip, transformers, sentence-transformers) are imported only when
an encoder is built, so `import tld.encoders` stays cheap.
"""

from tld.encoders.images import load_image, pil_to_tensor, tensor_to_pil, to_rgb
from tld.encoders.text import DEFAULT_TEXT_SPEC, TEXT_BACKENDS, load_text_encoder
from tld.encoders.text_base import TextEmbeddings, TextEncoder
from tld.encoders.vae import DEFAULT_LATENT_SCALE, DEFAULT_VAE, VAE

__all__ = [
    "DEFAULT_LATENT_SCALE",
    "DEFAULT_TEXT_SPEC",
    "DEFAULT_VAE",
    "TEXT_BACKENDS",
    "VAE",
    "TextEmbeddings",
    "TextEncoder",
    "load_image",
    "load_text_encoder",
    "pil_to_tensor",
    "tensor_to_pil",
    "to_rgb",
]
