"""The web UI's Edit tab without gradio: an image editor's value (background + painted layers) and
the chosen mode become one call of the pipeline's img2img / inpaint / outpaint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from tld.errors import TLDError

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline
    from tld.pipeline.sampling import TLDOutput

EDIT_MODES = ("inpaint", "outpaint", "img2img")
EDIT_SIDES = ("left", "right", "top", "bottom")


@dataclass
class EditRequest:
    mode: str
    prompt: str
    strength: float = 0.6
    margins: tuple[int, int, int, int] = (0, 0, 0, 0)  # EDIT_SIDES order, pixels
    max_size: int = 512


def painted_mask(layers: list[Image.Image | None], size: tuple[int, int]) -> Image.Image:
    """White where any layer has paint (alpha > 0), black elsewhere: the inpainting mask."""
    mask = Image.new("L", size, 0)
    for layer in layers:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A").resize(size, Image.NEAREST)
        mask.paste(255, mask=alpha.point(lambda a: 255 if a > 0 else 0))
    return mask


def fit_to_model(image: Image.Image, step: int, max_size: int) -> Image.Image:
    """Shrink to at most `max_size` a side, then crop to multiples of the latent factor (centred)."""
    scale = min(1.0, max_size / max(image.size))
    if scale < 1.0:
        image = image.resize((max(step, round(image.width * scale)), max(step, round(image.height * scale))))
    w, h = (image.width // step) * step, (image.height // step) * step
    if not w or not h:
        raise TLDError(f"the image must be at least {step}x{step} pixels, got {image.width}x{image.height}")
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def run_edit(
    pipe: TLDPipeline, editor: dict[str, Any] | None, req: EditRequest, args: dict[str, Any]
) -> TLDOutput:
    """Run one edit; `editor` is gr.ImageEditor's value ({"background", "layers", "composite"})."""
    background = (editor or {}).get("background")
    if background is None:
        raise TLDError("upload an image first")
    if req.mode not in EDIT_MODES:
        raise TLDError(f"mode must be one of {EDIT_MODES}, got {req.mode!r}")
    original = background.convert("RGB")
    image = fit_to_model(original, pipe.latent_factor, req.max_size)
    if req.mode == "img2img":
        return pipe.img2img(image, req.prompt, strength=req.strength, **args)
    if req.mode == "outpaint":
        margins = dict(zip(EDIT_SIDES, req.margins))
        return pipe.outpaint(image, req.prompt, feather=1.0, **margins, **args)
    mask = painted_mask(editor.get("layers") or [], original.size)
    if mask.getbbox() is None:
        raise TLDError("paint over the part of the image to redraw (the mask is empty)")
    mask = fit_to_model(mask, pipe.latent_factor, req.max_size)
    return pipe.inpaint(image, mask, req.prompt, **args)
