"""Draw the example inputs the docs use: `examples/apple.png` (a red apple, 64 px on white, the
bundled model's size) and `examples/mask.png` (white = repaint: the apple's right half).

Drawn with Pillow, no third-party data: `python examples/make_examples.py` rewrites both files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64


def draw_apple(size: int = SIZE) -> Image.Image:
    """A red apple with a brown stem and a green leaf, centred on white."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    s = size / 64
    draw.ellipse((10 * s, 16 * s, 36 * s, 56 * s), fill=(205, 25, 30))
    draw.ellipse((28 * s, 16 * s, 54 * s, 56 * s), fill=(205, 25, 30))
    draw.ellipse((18 * s, 22 * s, 26 * s, 32 * s), fill=(240, 120, 120))  # highlight
    draw.line((32 * s, 18 * s, 35 * s, 7 * s), fill=(100, 60, 20), width=max(1, round(3 * s)))
    draw.ellipse((35 * s, 6 * s, 48 * s, 14 * s), fill=(60, 160, 50))
    return image


def draw_mask(size: int = SIZE) -> Image.Image:
    """White (repaint) over the right half, black (keep) elsewhere."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((size // 2, 0, size - 1, size - 1), fill=255)
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE), help="folder to write apple.png and mask.png into")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    draw_apple().save(out / "apple.png")
    draw_mask().save(out / "mask.png")
    print(out / "apple.png", out / "mask.png")


if __name__ == "__main__":
    main()
