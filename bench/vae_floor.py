"""The floors of a generated-image FID: what a perfect generator scores, and what the VAE alone costs.

    python bench/vae_floor.py --vae weights/tld-emoji/vae --data runs/emoji/shards/captioned \
        -n 1000 --real-n 1000 --cache-dir runs/emoji/eval_cache --out runs/emoji/abl/floor.json

Draws n + real_n distinct images at random (seeded) from the shard folder and writes them, with their
captions, to an image folder (`<out>.images/`, in draw order): the first real_n are the reference that
`tld eval fid --data <that folder> --real-n real_n` compares generated images against, so models and
floors share one reference drawn uniformly from every emoji set (the shards are ordered by set). The
other n give two rows: the real images themselves (a perfect generator at this N) and their VAE round
trips (encode, decode: the best a denoiser on this latent space can reach).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tld.encoders.images import load_image
from tld.encoders.vae import VAE
from tld.eval import fid_from_features
from tld.eval.extractors import load_extractor
from tld.eval.reference import iter_real_samples, load_real_images, reference_set
from tld.training.vae_train import reconstruct


def draw_folder(data: Path, folder: Path, count: int, seed: int) -> None:
    """Write `count` images drawn at random from `data` to `folder` as 00000.png + 00000.txt, ..."""
    if (folder / "done").is_file():
        return
    samples = list(iter_real_samples(data))
    if len(samples) < count:
        raise SystemExit(f"{data} has {len(samples)} images; {count} are needed")
    order = np.random.default_rng(seed).choice(len(samples), size=count, replace=False)
    folder.mkdir(parents=True, exist_ok=True)
    for k, index in enumerate(order):
        source, caption, _ = samples[int(index)]
        load_image(source).convert("RGB").save(folder / f"{k:05d}.png")
        (folder / f"{k:05d}.txt").write_text(caption + "\n", encoding="utf-8")
    (folder / "done").write_text(f"{count} images from {data}, seed {seed}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", required=True, help="VAE folder")
    ap.add_argument("--data", required=True, help="shard folder of real images")
    ap.add_argument("-n", type=int, default=1000, help="images per floor row")
    ap.add_argument("--real-n", type=int, default=1000, help="images in the reference")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", required=True, help="JSON file of the results")
    args = ap.parse_args()

    out = Path(args.out)
    folder = out.with_suffix(".images")
    draw_folder(Path(args.data), folder, args.n + args.real_n, args.seed)
    size = (args.size, args.size)
    ext = load_extractor("efficientnet-lite0", device="cpu", batch_size=64)
    ref = reference_set(folder, ext, size, args.real_n, args.cache_dir, progress=False)
    both, _, _ = load_real_images(folder, args.n + args.real_n, size)
    real = both[args.real_n :]
    vae = VAE.from_pretrained(args.vae)
    with torch.no_grad():
        recon = reconstruct(vae.model, torch.from_numpy(real).permute(0, 3, 1, 2), 256)
    recon = recon.permute(0, 2, 3, 1).numpy()
    rows = {
        "real": fid_from_features(ref.features, ext(real, progress=False)),
        "vae_round_trip": fid_from_features(ref.features, ext(recon, progress=False)),
    }
    record = {"reference": str(folder), "real_n": len(ref.features), "n": len(real), "fid": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"reference: the first {args.real_n} images of {folder}")
    for name, value in rows.items():
        print(f"{name:>16}: FID {value:.2f}  ({len(real)} vs {len(ref.features)})")


if __name__ == "__main__":
    main()
