"""PNG files that carry their generation settings, image grids and numbered output paths.

Needs no model: the CLI and the examples read and write images and metadata with it alone.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from tld.errors import TLDError

# PNG text chunk holding the JSON settings; "parameters" is a human-readable copy that common
# image viewers and web UIs already show.
PNG_KEY = "tld"


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
