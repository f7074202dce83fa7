"""The model folder's `config.json` on disk: its names, format stamp, and the one reader and writer.

Lives below the pipeline so `Denoiser.save_pretrained` and the training export write the same
file the same way; `tld.pipeline.folder` adds what a model folder must hold on top of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tld.common import write_json_atomic
from tld.errors import TLDError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "denoiser.safetensors"
FORMAT_NAME = "tld-pipeline"
FORMAT_VERSION = 1


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; invalid JSON is a one-line TLDError naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise TLDError(f"{path} is not valid JSON: {exc}") from None


def read_config_json(folder: str | os.PathLike) -> dict[str, Any]:
    """folder/config.json as a dict ({} when absent); bad JSON or a non-object is a TLDError."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return {}
    config = read_json(path)
    if not isinstance(config, dict):
        raise TLDError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def update_config_json(folder: str | os.PathLike, entries: dict[str, Any]) -> Path:
    """Merge `entries` into folder/config.json, stamped with the format and version; atomic."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    config.update({k: v for k, v in read_config_json(folder).items() if k not in config})
    config.update(entries)
    write_json_atomic(folder / CONFIG_NAME, config)
    return folder / CONFIG_NAME
