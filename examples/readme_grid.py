"""The README's picture: a grid of the bundled demo model's outputs, one prompt per row.

    python examples/readme_grid.py                       # -> docs/images/demo_grid.png
    python examples/readme_grid.py --model runs/emoji/model --seeds 6 --scale 2

Every image comes straight from `TLDPipeline.__call__` (seeds 0..N-1, the settings printed below the
grid are the ones used); nothing is picked by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from tld import TLDPipeline

PROMPTS = (
    "red heart",
    "blue heart, noto style",
    "green circle, twemoji style",
    "star",
    "grinning face, fluent style",
    "cat face, openmoji style",
    "red apple",
    "rocket, twemoji style",
)


def guidance_text(pipe: TLDPipeline, cfg: float | None) -> str:
    """'cfg 2' for a constant scale; 'cfg 1.5, 4 while sigma >= 2' for the model's schedule."""
    if cfg is not None:
        return f"cfg {cfg:g}"
    pieces = [f"{scale:g} while sigma >= {sigma:g}" for sigma, scale in pipe.sampling.cfg_schedule or []]
    return ", ".join([f"cfg {pipe.sampling.cfg:g}", *pieces])


def draw_label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: str = "black") -> None:
    """Draw `text` word by word, a letter's width apart: Pillow's default font has a 2 px space,
    which ran "noto style" together into "notostyle" in the grid."""
    x, y = xy
    gap = draw.textlength("n")
    for word in text.split(" "):
        draw.text((x, y), word, fill=fill)
        x += draw.textlength(word) + gap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the bundled demo model)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--cfg", type=float, help="constant guidance (default: the model's cfg and cfg_schedule)")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--scale", type=int, default=2, help="upscale each 64 px image (nearest) for display")
    ap.add_argument("--out", default="docs/images/demo_grid.png")
    args = ap.parse_args()

    pipe = TLDPipeline.from_pretrained(args.model)
    label_w, rows = 230, []
    guidance = {} if args.cfg is None else {"cfg": args.cfg}
    for prompt in PROMPTS:
        images = pipe(
            prompt, steps=args.steps, seed=list(range(args.seeds)), num_images=args.seeds, **guidance
        )
        rows.append((prompt, images))
    side = rows[0][1][0].width * args.scale
    grid = Image.new("RGB", (label_w + side * args.seeds, side * len(rows) + 24), "white")
    draw = ImageDraw.Draw(grid)
    for r, (prompt, images) in enumerate(rows):
        draw_label(draw, (6, r * side + side // 2 - 6), prompt)
        for c, image in enumerate(images):
            grid.paste(image.resize((side, side), Image.Resampling.NEAREST), (label_w + c * side, r * side))
    note = f"tld-emoji, {guidance_text(pipe, args.cfg)}, {args.steps} steps, seeds 0-{args.seeds - 1}"
    draw_label(draw, (6, side * len(rows) + 6), note, fill="gray")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
