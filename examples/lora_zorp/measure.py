"""Measure the worked example's adapter (docs/adapters.md) and draw its before/after grid.

- the new word: share of 16 seeds of "zorp" whose dominant colour is pink (the taught object's), and
  the mean share of pink foreground pixels, without the adapter and with it;
- prompts outside it: the bundled model's colour-word table (`tld eval colours`: 9 colours x heart,
  circle, square x 8 seeds) without the adapter, with it at scale 0 (compared image by image) and at 1.

    python examples/lora_zorp/measure.py runs/zorp/run/adapter --out runs/zorp/measure.json --grid grid.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tld.encoders.colour import COLOURS, colour_histogram, dominant_colour
from tld.eval.colours import DEFAULT_COLOURS, DEFAULT_OBJECTS, seeded_images, table_pipeline
from tld.pipeline import TLDPipeline
from tld.pipeline.images import make_grid

WORD_PROMPT, WORD_SEEDS, TABLE_SEEDS = "zorp", 16, 8


def table(pipe: TLDPipeline) -> tuple[float, list[np.ndarray]]:
    """Colour-table hit rate and every image, as `tld eval colours` with its defaults draws them."""
    pipe, settings = table_pipeline(pipe)
    hits, images = 0, []
    for obj in DEFAULT_OBJECTS:
        for colour in DEFAULT_COLOURS:
            arrays = [
                np.asarray(im.convert("RGB"))
                for im in seeded_images(pipe, settings, f"{colour} {obj}", TABLE_SEEDS, 0)
            ]
            hits += sum(dominant_colour(a) == colour for a in arrays)
            images += arrays
    return hits / len(images), images


def word(pipe: TLDPipeline) -> tuple[dict[str, float], list[Image.Image]]:
    out = pipe(WORD_PROMPT, seed=list(range(WORD_SEEDS)), num_images=WORD_SEEDS, progress=False)
    arrays = [np.asarray(im.convert("RGB")) for im in out]
    pink = [colour_histogram(a)[COLOURS.index("pink")] for a in arrays]
    share = sum(dominant_colour(a) == "pink" for a in arrays) / len(arrays)
    return {"dominant_pink": share, "pink_pixels": float(np.mean(pink))}, list(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("adapter")
    p.add_argument("--out", default="runs/zorp/measure.json")
    p.add_argument(
        "--grid", default=None, help="before/after PNG: 'zorp' base, 'zorp' adapted, 'red heart' adapted"
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    pipe = TLDPipeline.from_pretrained(device="cpu")
    base_word, base_images = word(pipe)
    base_rate, base_table = table(pipe)
    pipe.load_lora(args.adapter, scale=0.0, name="zorp")
    zero_rate, zero_table = table(pipe)
    zero_word, _ = word(pipe)
    pipe.set_lora_scale({"zorp": 1.0})
    one_word, one_images = word(pipe)
    one_rate, _ = table(pipe)
    hearts = pipe("red heart", seed=list(range(8)), num_images=8, progress=False)
    result = {
        "adapter": args.adapter,
        "adapter_bytes": (Path(args.adapter) / "adapter.safetensors").stat().st_size,
        "word": {
            "prompt": WORD_PROMPT,
            "seeds": WORD_SEEDS,
            "base": base_word,
            "scale_0": zero_word,
            "scale_1": one_word,
        },
        "colour_table": {
            "images": len(base_table),
            "base": base_rate,
            "scale_0": zero_rate,
            "scale_1": one_rate,
        },
        "scale_0_images_equal": all(np.array_equal(a, b) for a, b in zip(base_table, zero_table)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.grid:
        rows = [
            make_grid(base_images[:8], ncols=8),
            make_grid(one_images[:8], ncols=8),
            make_grid(list(hearts), ncols=8),
        ]
        make_grid(rows, ncols=1).save(args.grid)


if __name__ == "__main__":
    main()
