"""tld: text-to-image latent diffusion with a compact transformer denoiser."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `tld.TLDPipeline` without making `import tld` (and so the CLI's start) pay for torch/diffusers.
    if name == "TLDPipeline":
        from tld.pipeline import TLDPipeline

        return TLDPipeline
    raise AttributeError(f"module 'tld' has no attribute {name!r}")
