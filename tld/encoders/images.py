"""PIL images <-> tensors in the [-1, 1] convention the VAE expects.

Every image entering the package passes through `to_rgb` so that palette, alpha, grayscale, CMYK and
16-bit files all arrive as plain 8-bit RGB; transparent pixels are composited over a background
colour instead of being dropped (dropping alpha leaves arbitrary colours under transparent pixels).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tld.errors import TLDError

Background = tuple[int, int, int]
WHITE: Background = (255, 255, 255)


def to_rgb(image: Image.Image, background: Background = WHITE) -> Image.Image:
    """Return `image` as 8-bit RGB, compositing any transparency over `background`."""
    if not isinstance(image, Image.Image):
        raise TLDError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _wide_gray_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _wide_gray_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's own convert("RGB") clips 16-bit values at 255, turning most photos white.
    arr = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    else:
        peak = 65535.0 if arr.max(initial=0.0) > 255 else 255.0
    gray = np.clip(np.rint(arr / peak * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def center_crop_resize(image: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Scale so the image covers (height, width) and cut out the centre, keeping the aspect ratio."""
    height, width = (size, size) if isinstance(size, int) else size
    if height <= 0 or width <= 0:
        raise TLDError(f"image size must be positive, got {size}")
    return ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)


def pil_to_tensor(
    images: Image.Image | Sequence[Image.Image],
    size: int | tuple[int, int] | None = None,
    background: Background = WHITE,
) -> torch.Tensor:
    """Stack PIL images into a float32 (B, 3, H, W) tensor in [-1, 1].

    `size` (an int or (height, width)) center-crops and resizes every image; without it all images
    must already share one size.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if len(images) == 0:
        raise TLDError("pil_to_tensor needs at least one image, got an empty list")
    rgb = [to_rgb(im, background) for im in images]
    if size is not None:
        rgb = [center_crop_resize(im, size) for im in rgb]
    sizes = sorted({im.size for im in rgb})
    if len(sizes) > 1:
        raise TLDError(f"images have different sizes {sizes} (width, height); pass size= to resize them")
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in rgb])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Turn a (B, 3, H, W) or (3, H, W) tensor in [-1, 1] into RGB PIL images (values clamped)."""
    if not isinstance(images, torch.Tensor):
        raise TLDError(f"expected a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise TLDError(f"expected images of shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = x.permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


def load_image(source: str | os.PathLike | bytes, background: Background = WHITE) -> Image.Image:
    """Open an image file (or its bytes) fully, as upright 8-bit RGB.

    Decoding is forced here so a truncated or corrupt file fails now with a TLDError naming it,
    not later inside a batch.
    """
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        if isinstance(source, bytes | bytearray):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()
        image = ImageOps.exif_transpose(image)
    except FileNotFoundError as e:
        raise TLDError(f"image file not found: {name}") from e
    except IsADirectoryError as e:
        raise TLDError(f"expected an image file, got a directory: {name}") from e
    except UnidentifiedImageError as e:
        raise TLDError(f"not an image file (unknown format): {name}") from e
    except (OSError, SyntaxError, ValueError) as e:
        # PIL signals truncated/corrupt data with OSError or SyntaxError depending on the codec.
        raise TLDError(f"cannot decode image {name}: {e}") from e
    return to_rgb(image, background)


def decode_sample_image(raw: bytes | None, size: int | None, failed: Counter) -> Image.Image | None:
    """A shard sample's image bytes as a size x size RGB image (centre-cropped; size None: as stored),
    or None with the reason counted in `failed`: what every reader of shards does with a missing or
    broken image."""
    if raw is None:
        failed["no image in sample"] += 1
        return None
    try:
        image = load_image(raw)
    except TLDError:
        failed["cannot decode image"] += 1
        return None
    return image if size is None or image.size == (size, size) else center_crop_resize(image, size)
