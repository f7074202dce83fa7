"""End-to-end text-to-image time: text encode, sampling, VAE decode, per image.

    python bench/generation.py                                  # CPU, fp32, the 101M shape, 15 steps
    python bench/generation.py --preset small --steps 8 --batch 4
    python bench/generation.py --device cuda --dtype fp16 --batch 16

The parts have the real shapes and random weights (no pretrained weights offline): the denoiser
config preset (101m = the original model), the SDXL VAE architecture and the ViT-L-14 text tower,
so compute and therefore time are the real ones. Sampling runs `cfg` > 1, i.e. two rows per image.
"""

from __future__ import annotations

import argparse
import time

import torch
from encoders import DTYPES, sdxl_vae_architecture, sync  # bench/encoders.py

from tld.encoders.text_open_clip import OpenClipTextEncoder
from tld.model import Denoiser, DenoiserConfig
from tld.pipeline import TLDPipeline

VIT_L_TEXT = {
    "embed_dim": 768,
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
    "quick_gelu": True,
}


def timed(fn, device: str) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--preset", default="101m", help="denoiser preset: tiny, small, 101m")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--batch", type=int, default=1, help="images per call")
    ap.add_argument("--cfg", type=float, default=7.0)
    args = ap.parse_args()
    dtype = DTYPES[args.dtype]

    torch.manual_seed(0)
    text = OpenClipTextEncoder.from_config(VIT_L_TEXT, device=args.device)
    net = Denoiser(DenoiserConfig.preset(args.preset).replace(text_dim=text.dim))
    vae = sdxl_vae_architecture(torch.float32, args.device)
    pipe = TLDPipeline(net, vae, text, "tld", device=args.device, dtype=dtype)
    prompt = "a cute grey owl"
    call = dict(steps=args.steps, sampler=args.sampler, cfg=args.cfg, num_images=args.batch, progress=False)
    pipe(prompt, **{**call, "steps": 1, "num_images": 1})  # warm-up

    _, t_text = timed(lambda: pipe.text_encoder.encode([prompt] * args.batch), args.device)
    latents, t_sample = timed(lambda: pipe(prompt, output_type="latent", **call).latents, args.device)
    _, t_decode = timed(lambda: pipe.vae.decode(latents.to(pipe.device)), args.device)
    _, t_total = timed(lambda: pipe(prompt, **call), args.device)

    h, w = net.config.latent_size
    print(
        f"\ndevice={args.device} dtype={args.dtype} threads={torch.get_num_threads()} preset={args.preset} "
        f"({net.num_parameters() / 1e6:.0f}M) latents {h}x{w} -> {h * 8}x{w * 8}px, {args.sampler} "
        f"{args.steps} steps, cfg {args.cfg}, batch {args.batch}"
    )
    print(f"{'stage':28} {'s / call':>10} {'s / image':>10}")
    rows = [
        ("text encode (ViT-L-14)", t_text),
        (f"sampling ({args.steps} steps)", t_sample),
        ("VAE decode (SDXL arch.)", t_decode),
        ("pipe(...) end to end", t_total),
    ]
    for name, seconds in rows:
        print(f"{name:28} {seconds:>10.3f} {seconds / args.batch:>10.3f}")
    print(f"{'denoiser steps / s':28} {args.steps / t_sample:>10.2f}")


if __name__ == "__main__":
    main()
