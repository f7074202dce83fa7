"""Speed of the bundled demo model on this machine: the README's main command and a batch of 16.

    python bench/demo_model.py                    # the bundled model (weights/tld-emoji)
    python bench/demo_model.py --model runs/emoji/model --repeats 5

Rows: `tld generate "red heart" -o x.png` from process start to PNG (a fresh process each time, so
imports and model loading count), and in one process `pipe(prompt, num_images=16, steps=15)` split
into text encode / sampling / VAE decode. Best of N runs. Goals (2-core CPU): < 10 s and < 3 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tld import TLDPipeline


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cli_seconds(model: str | None, repeats: int) -> float:
    tld = Path(sys.executable).with_name("tld")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(tld), "generate", "red heart", "-o", str(Path(tmp) / "heart.png"), "--seed", "0"]
        cmd += ["--model", model] if model else []
        return best_of(lambda: subprocess.run(cmd, check=True, capture_output=True, env=os.environ), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the bundled demo model)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args()

    t_cli = cli_seconds(args.model, args.repeats)
    pipe = TLDPipeline.from_pretrained(args.model)
    prompts = ["red heart"] * args.batch
    call = dict(steps=args.steps, seed=list(range(args.batch)), num_images=args.batch, progress=False)
    pipe(prompts[0], steps=2, progress=False)  # warm-up
    t_text = best_of(lambda: pipe.text_encoder.encode(prompts), args.repeats)
    latents = pipe(prompts[0], output_type="latent", **call).latents
    t_sample = best_of(lambda: pipe(prompts[0], output_type="latent", **call), args.repeats)
    t_decode = best_of(lambda: pipe.vae.decode(latents.to(pipe.device)), args.repeats)
    t_total = best_of(lambda: pipe(prompts[0], **call), args.repeats)

    print(f"\nthreads={torch.get_num_threads()} model={args.model or 'bundled'} best of {args.repeats}")
    print(f"{'work':44} {'seconds':>8} {'goal':>6}")
    rows = [
        ('tld generate "red heart" (process start->PNG)', t_cli, "< 10"),
        (f"pipe: {args.batch} images x {args.steps} steps, end to end", t_total, "< 3"),
        ("  of which text encode", t_text, ""),
        ("  of which sampling (incl. text encode)", t_sample, ""),
        ("  of which VAE decode", t_decode, ""),
    ]
    for name, seconds, goal in rows:
        print(f"{name:44} {seconds:>8.3f} {goal:>6}")


if __name__ == "__main__":
    main()
