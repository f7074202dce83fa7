"""Small helpers shared by the VAE and text encoder wrappers."""

from __future__ import annotations

import os

import torch

from tld.errors import TLDError


def resolve_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


# The one table of dtype names; tld.pipeline_io resolves its dtypes with it too.
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from itself or a name such as "fp16" / "bf16" / "float32"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise TLDError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")


def batch_slices(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices covering range(n); `batch_size=None` means one batch."""
    if batch_size is not None and batch_size <= 0:
        raise TLDError(f"batch_size must be a positive integer, got {batch_size}")
    size = batch_size or max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def looks_local(source: str) -> bool:
    """True when `source` is meant as a filesystem path rather than a hub id ("org/name")."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)


def first_line(error: BaseException) -> str:
    """The first line of an exception message, so wrapped errors stay one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
