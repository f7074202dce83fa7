"""Grow a panorama by repeated outpainting (the original TLD's demo), with any model folder.

    python examples/panorama.py "green circle" --tiles 3            # the bundled demo model
    python examples/panorama.py "a lake in mountains in the fall at sunset" --model models/my-model \
        --tiles 4 --shift 128 --seed 11 -o panorama.png
    python examples/panorama.py "a cute owl" --original state_dict_378000.pth --tiles 6

Each tile takes the right-most (width - shift) columns of the panorama so far as the known part,
outpaints `shift` new columns on its right and appends them. The model always works at its own
size, and `composite=True` keeps every earlier column exactly as it was generated.
"""

from __future__ import annotations

import argparse

from PIL import Image

from tld.pipeline import TLDPipeline
from tld.pipeline.images import save_png


def grow_panorama(
    pipe: TLDPipeline,
    prompt: str,
    tiles: int,
    shift: int,
    seed: int = 0,
    feather: float = 1.0,
    progress: bool = True,
    **options,
) -> Image.Image:
    """A first image, then `tiles` outpainting steps of `shift` pixels to the right."""
    first = pipe(prompt, seed=seed, progress=progress, **options)[0]
    width, height = first.size
    if not 0 < shift < width:
        raise SystemExit(f"--shift must be between 0 and the image width {width}, got {shift}")
    panorama = first
    for k in range(1, tiles + 1):
        window = panorama.crop((panorama.width - (width - shift), 0, panorama.width, height))
        tile = pipe.outpaint(
            window, prompt, right=shift, seed=seed + k, feather=feather, progress=progress, **options
        )[0]
        grown = Image.new("RGB", (panorama.width + shift, height))
        grown.paste(panorama, (0, 0))
        grown.paste(tile.crop((width - shift, 0, width, height)), (panorama.width, 0))
        panorama = grown
    return panorama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="model folder or hub repo id (default: the bundled demo model)")
    source.add_argument("--original", help="the original TLD checkpoint (state_dict_378000.pth)")
    parser.add_argument("--tiles", type=int, default=4, help="outpainting steps (default 4)")
    parser.add_argument(
        "--shift", type=int, default=None, help="new pixels per step (default: half the width)"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--feather", type=float, default=1.0, help="mask feathering in latent cells (default 1)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("-o", "--output", default="panorama.png")
    args = parser.parse_args()

    if args.original:
        pipe = TLDPipeline.from_original(args.original, device=args.device)
    else:
        pipe = TLDPipeline.from_pretrained(args.model, device=args.device)
    width = pipe.denoiser.config.latent_size[1] * pipe.vae.downsample_factor
    # Half the model's width by default, rounded down to what outpaint accepts.
    shift = args.shift or width // 2 // pipe.latent_factor * pipe.latent_factor
    panorama = grow_panorama(
        pipe,
        args.prompt,
        args.tiles,
        shift,
        seed=args.seed,
        cfg=args.cfg,
        steps=args.steps,
        feather=args.feather,
    )
    meta = {
        "prompt": args.prompt,
        "seed": args.seed,
        "tiles": args.tiles,
        "shift": shift,
        "model": args.model or ("original:" + args.original if args.original else "bundled:tld-emoji"),
    }
    print(save_png(panorama, args.output, meta), panorama.size)


if __name__ == "__main__":
    main()
