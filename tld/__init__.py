"""tld: text-to-image latent diffusion with a compact transformer denoiser."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tld-diffusion")  # the distribution's name: PyPI's `tld` is another project
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # `tld.TLDPipeline` without making `import tld` (and so the CLI's start) pay for torch/diffusers.
    if name == "TLDPipeline":
        from tld.pipeline import TLDPipeline

        return TLDPipeline
    raise AttributeError(f"module 'tld' has no attribute {name!r}")
