"""Draw the worked example's training set: 24 "zorp" images (a new object for the bundled model).

A zorp is a pink five-pointed star with a dark outline and a white dot, drawn here with Pillow at
64 px on white (no outside data, no licence to track): sizes, rotations, positions and the pink's
hue vary per image. Each PNG gets a `.txt` caption sidecar for `tld preprocess folder`. `--prior`
adds 54 images the bundled model draws for colour-word prompts (prior preservation, `prior`).

    python examples/lora_zorp/make_images.py runs/zorp/images --prior
"""

from __future__ import annotations

import colorsys
import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
COUNT = 24
CAPTIONS = ("zorp", "a zorp", "zorp emoji")


def star(cx: float, cy: float, outer: float, inner: float, turn: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = outer if k % 2 == 0 else inner
        a = turn + k * math.pi / 5
        points.append((cx + r * math.sin(a), cy - r * math.cos(a)))
    return points


def zorp(rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE * 4, SIZE * 4), "white")  # drawn 4x, downsampled: smooth edges
    draw = ImageDraw.Draw(image)
    outer = rng.uniform(20, 28) * 4
    cx, cy = (SIZE / 2 + rng.uniform(-3, 3)) * 4, (SIZE / 2 + rng.uniform(-3, 3)) * 4
    hue = rng.uniform(0.86, 0.93)  # 310-335 degrees: pink
    fill = tuple(
        int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 0.85), rng.uniform(0.85, 1.0))
    )
    outline = tuple(int(c * 0.45) for c in fill)
    draw.polygon(
        star(cx, cy, outer, outer * 0.45, rng.uniform(-0.3, 0.3)), fill=fill, outline=outline, width=8
    )
    dot = outer * 0.16
    draw.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill="white")
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def prior(folder: Path) -> int:
    """Prior preservation (DreamBooth): the base model's own images of colour-word prompts, trained on
    next to the zorps so the adapter keeps what the other words draw. Seeds 1000+ (the colour table
    evaluates seeds 0-7)."""
    from tld.pipeline import TLDPipeline

    pipe = TLDPipeline.from_pretrained(device="cpu")
    prompts = [f"{c} {o}" for o in PRIOR_OBJECTS for c in PRIOR_COLOURS]
    seeds = [1000 + k for k in range(len(prompts))]
    for k, (prompt, image) in enumerate(zip(prompts, pipe(prompts, seed=seeds, progress=False))):
        image.save(folder / f"prior_{k:03d}.png")
        (folder / f"prior_{k:03d}.txt").write_text(prompt + "\n")
    return len(prompts)


PRIOR_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white")
PRIOR_OBJECTS = ("heart", "circle", "square", "star", "flower", "apple")


def main(out: str, with_prior: bool) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for k in range(COUNT):
        zorp(rng).save(folder / f"zorp_{k:02d}.png")
        (folder / f"zorp_{k:02d}.txt").write_text(CAPTIONS[k % len(CAPTIONS)] + "\n")
    extra = prior(folder) if with_prior else 0
    print(f"wrote {COUNT} zorp images and {extra} prior images to {folder}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--prior"]
    main(args[0] if args else "runs/zorp/images", "--prior" in sys.argv[1:])
