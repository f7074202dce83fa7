"""PNG files that carry their generation settings, image grids and numbered output paths.

The one writer of output PNGs: `tld generate`, the HTTP API and the web UI all go through
`output_images` (which images, with which metadata) and `save_png` / `png_bytes`.

Needs no model: the CLI and the examples read and write images and metadata with it alone.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

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


def save_png(
    image: Image.Image, target: str | os.PathLike | BinaryIO, metadata: dict[str, Any] | None = None
) -> Path | BinaryIO:
    """Write `image` as PNG with `metadata` (JSON-serialisable) in its text chunks, to a path ending in
    .png (returned as a Path) or to a binary file object (returned as is): the one PNG writer."""
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text(PNG_KEY, json.dumps(metadata, sort_keys=True))
        info.add_text("parameters", _human_readable(metadata))
    if hasattr(target, "write"):
        image.save(target, format="PNG", pnginfo=info)
        return target
    out = Path(target)
    if out.suffix.lower() != ".png":
        raise TLDError(f"expected an output path ending in .png, got {str(target)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG", pnginfo=info)
    return out


def png_bytes(image: Image.Image, metadata: dict[str, Any] | None = None) -> bytes:
    """The bytes of the PNG file `save_png` writes (for HTTP responses: no file on disk)."""
    buf = io.BytesIO()
    save_png(image, buf, metadata)
    return buf.getvalue()


def output_images(out: Any, model: str, separate: bool = True) -> list[tuple[Image.Image, dict[str, Any]]]:
    """A pipeline output (`TLDOutput`) as the (image, metadata) pairs to write: one per image with its
    own prompt and seed, or, when `separate` is False and there are several, one grid whose metadata
    lists every prompt and seed. `model` is what the metadata records as the model."""
    if separate or len(out) == 1:
        return [(image, {**out.metadata(k), "model": model}) for k, image in enumerate(out)]
    meta = {**out.settings, "prompts": out.prompts, "seeds": out.seeds, "model": model}
    return [(make_grid(list(out)), meta)]


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
