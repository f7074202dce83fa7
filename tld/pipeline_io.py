"""Files around generation: the model folder's config.json, PNG files with settings, grids, dtypes.

Kept apart from `tld.pipeline` so the CLI and the examples can read/write images and metadata
without building a model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from tld.common import first_line, is_hub_id
from tld.errors import TLDError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "denoiser.safetensors"
FORMAT_NAME = "tld-pipeline"
FORMAT_VERSION = 1
# PNG text chunk holding the JSON settings; "parameters" is a human-readable copy that common
# image viewers and web UIs already show.
PNG_KEY = "tld"


# ---------------------------------------------------------------------------------------------
# Model folder


def local_model_folder(path_or_repo_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; an 'owner/name' that is not one is downloaded from the Hugging Face hub."""
    local = Path(path_or_repo_id)
    if local.exists():
        return local
    ref = str(path_or_repo_id)
    if not is_hub_id(ref):
        raise TLDError(f"model folder not found: {ref!r} (expected a local folder or a hub id 'owner/name')")
    from huggingface_hub import snapshot_download  # only needed for hub ids

    try:
        return Path(snapshot_download(ref, revision=revision))
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, auth: all mean "cannot get it"
        raise TLDError(
            f"model folder not found locally and could not download hub repo {ref!r}: {first_line(exc)}"
        ) from None


def read_model_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model folder's config.json; name every missing file in one error."""
    root = Path(folder)
    if not root.is_dir():
        raise TLDError(f"expected a model folder (config.json + {WEIGHTS_NAME}), got {str(folder)!r}")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (root / name).is_file()]
    config: dict[str, Any] = {}
    if CONFIG_NAME not in missing:
        try:
            config = json.loads((root / CONFIG_NAME).read_text())
        except json.JSONDecodeError as exc:
            raise TLDError(f"{root / CONFIG_NAME} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise TLDError(f"{root / CONFIG_NAME} must hold a JSON object, got {type(config).__name__}")
        for key in ("vae", "text_encoder"):
            ref = config.get(key)
            if isinstance(ref, str) and not is_hub_id(ref) and not (root / ref).is_dir():
                missing.append(f"{ref}/")
        if "denoiser" not in config:
            raise TLDError(f"{root / CONFIG_NAME} has no 'denoiser' entry; is this a tld model folder?")
        if config.get("vae") is None:
            raise TLDError(f"{root / CONFIG_NAME} names no VAE ('vae': a subfolder name or a hub spec)")
    if missing:
        raise TLDError(f"model folder {str(root)!r} is missing {', '.join(missing)}")
    version = config.get("version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise TLDError(f"model folder format version {version} is newer than this tld ({FORMAT_VERSION})")
    return config


def write_model_config(folder: str | os.PathLike, entries: dict[str, Any]) -> Path:
    """Merge `entries` into folder/config.json (the denoiser's save_pretrained writes it too)."""
    path = Path(folder) / CONFIG_NAME
    config: dict[str, Any] = {}
    if path.is_file():
        config = json.loads(path.read_text())
    config.update({"format": FORMAT_NAME, "version": FORMAT_VERSION})
    config.update(entries)
    path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Images and PNG metadata


def make_grid(images: Sequence[Image.Image], ncols: int | None = None, pad: int = 4) -> Image.Image:
    """Paste equally sized images into a near-square grid with `pad` white pixels between them."""
    if not images:
        raise TLDError("make_grid needs at least one image, got none")
    width, height = images[0].size
    if any(im.size != (width, height) for im in images):
        raise TLDError(f"grid images must share one size, got {sorted({im.size for im in images})}")
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    grid = Image.new("RGB", (ncols * width + (ncols - 1) * pad, nrows * height + (nrows - 1) * pad), "white")
    for k, image in enumerate(images):
        row, col = divmod(k, ncols)
        grid.paste(image, (col * (width + pad), row * (height + pad)))
    return grid


def save_png(image: Image.Image, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Save `image` as PNG with `metadata` (JSON-serialisable) in its text chunks."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise TLDError(f"expected an output path ending in .png, got {str(path)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text(PNG_KEY, json.dumps(metadata, sort_keys=True))
        info.add_text("parameters", _human_readable(metadata))
    image.save(out, pnginfo=info)
    return out


def read_png_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The settings `save_png` stored in a PNG file (empty dict for a PNG written elsewhere)."""
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except FileNotFoundError:
        raise TLDError(f"image file not found: {path}") from None
    if PNG_KEY not in text:
        return {}
    return json.loads(text[PNG_KEY])


def _human_readable(metadata: dict[str, Any]) -> str:
    prompt = metadata.get("prompt", "")
    rest = ", ".join(f"{k}: {v}" for k, v in sorted(metadata.items()) if k != "prompt")
    return f"{prompt}\n{rest}" if prompt else rest


def numbered_paths(path: str | os.PathLike, count: int) -> list[Path]:
    """out.png -> [out.png] for one image, [out_0.png, out_1.png, ...] for several."""
    out = Path(path)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(count)]
