"""tld: text-to-image latent diffusion with a compact transformer denoiser."""

__version__ = "0.1.0"
