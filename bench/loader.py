"""Latent loader throughput: latents/s through the trainer's DataLoader path, against what a GPU eats.

    OMP_NUM_THREADS=1 python bench/loader.py                      # 101M latents (4x32x32), batch 64/256
    python bench/loader.py --count 50000 --workers 0 2 --flip

Writes a synthetic dataset in the on-disk format (tld.data.format: latents.npy, text_emb.npy,
meta.json) to a temp folder, once per latent dtype (float16 and uint8 are what `tld preprocess`
writes; float32 is read the same way), then times `step_loader(StepBatches(LatentDataset(...)))`,
the trainer's loader: memory-mapped arrays, rows of a seeded per-epoch permutation, sorted reads,
dequantised to float32 tensors. The files were just written, so they are read from the page cache:
this is the loader's own cost, not the disk's. Wall-clock rates count whatever else the machine
runs; "latents per CPU s" (workers = 0) is the rate one free core would give.

The GPU side is an estimate, not a measurement: the analytic train-step FLOPs per latent
(tld.model.flops: 3 x the forward) at a model-FLOPs utilisation of `--mfu` of `--peak-tflops`
(H100 SXM dense bf16: 989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tld.data import LatentDataset, StepBatches, step_loader
from tld.data.format import LATENTS, META, TEXT_EMB, DatasetMeta, quantize_latents, write_meta
from tld.model import DenoiserConfig
from tld.model.flops import train_step_flops

CLIP = 4.0  # uint8 quantisation range of the synthetic latents


def write_dataset(
    folder: Path, count: int, shape: tuple[int, int, int], dtype: str, text_dim: int, tokens: int = 0
) -> None:
    """A `count`-row dataset of random latents and text embeddings (pooled, or `tokens` per row)."""
    latents = np.lib.format.open_memmap(folder / LATENTS, mode="w+", dtype=dtype, shape=(count, *shape))
    rng = np.random.default_rng(0)
    for start in range(0, count, 4096):
        block = rng.standard_normal((min(4096, count - start), *shape), dtype=np.float32)
        latents[start : start + len(block)] = quantize_latents(block, CLIP) if dtype == "uint8" else block
    latents.flush()
    del latents
    text_shape = (count, tokens, text_dim) if tokens else (count, text_dim)
    text = np.lib.format.open_memmap(folder / TEXT_EMB, mode="w+", dtype=np.float16, shape=text_shape)
    for start in range(0, count, 4096):
        text[start : start + 4096] = rng.standard_normal(text[start : start + 4096].shape, dtype=np.float32)
    text.flush()
    del text
    clip = CLIP if dtype == "uint8" else None
    meta = DatasetMeta(
        count=count,
        latent_shape=list(shape),
        latent_dtype=dtype,
        latent_clip=clip,
        text_dim=text_dim,
        text_tokens=tokens,
    )
    write_meta(folder, meta)


def latents_per_second(
    folder: Path, batch: int, steps: int, workers: int, flip: bool, repeats: int
) -> tuple[float, float]:
    """(latents per wall second, latents per CPU second of this process), each the best of `repeats`
    passes over `steps` micro-batches (a fresh loader each, as a resumed run). With workers = 0 the
    loading runs in this process, so the second is the loader's throughput per busy core."""
    data = LatentDataset(folder, check_finite=False)
    wall = cpu = float("inf")
    for r in range(repeats):
        batches = StepBatches(data, batch, seed=r, flip=flip)
        start, start_cpu = time.perf_counter(), time.process_time()
        for b in step_loader(batches, 0, steps, workers):
            assert b.latents.shape[0] == batch
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return steps * batch / wall, steps * batch / cpu


def gpu_latents_per_second(cfg: DenoiserConfig, peak_tflops: float, mfu: float, text_tokens: int) -> float:
    return peak_tflops * 1e12 * mfu / train_step_flops(cfg, 1, text_tokens=max(1, text_tokens))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="101m", help="denoiser preset: latent shape, text dim, FLOPs")
    ap.add_argument("--count", type=int, default=20000, help="rows in the synthetic dataset")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dtypes", nargs="+", default=["float16", "uint8", "float32"])
    ap.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader num_workers")
    ap.add_argument("--flip", action="store_true", help="random horizontal flips (data.flip)")
    ap.add_argument("--text-tokens", type=int, default=0, help="per-token text (T, D) instead of pooled")
    ap.add_argument("--latents", type=int, default=16384, help="latents per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM)")
    ap.add_argument("--mfu", type=float, default=0.45)
    args = ap.parse_args()
    cfg = DenoiserConfig.preset(args.config)
    shape = (cfg.in_channels, *cfg.latent_size)
    need = gpu_latents_per_second(cfg, args.peak_tflops, args.mfu, args.text_tokens)
    gflop = train_step_flops(cfg, 1, text_tokens=max(1, args.text_tokens)) / 1e9
    text = f"{args.text_tokens} x {cfg.text_dim}-d tokens" if args.text_tokens else f"pooled {cfg.text_dim}-d"
    print(
        f"{args.config}: latents {shape}, text {text}; {args.count} rows; flip {args.flip}\n"
        f"GPU estimate: {gflop:.1f} GFLOP per latent per train step; at {args.mfu:.0%} of "
        f"{args.peak_tflops:.0f} TFLOP/s = {need:,.0f} latents/s\n"
    )
    print("| latents | batch | workers | latents/s (wall) | MB/s | x GPU estimate | latents per CPU s |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        with tempfile.TemporaryDirectory(prefix="tld-loader-") as tmp:
            folder = Path(tmp)
            write_dataset(folder, args.count, shape, dtype, cfg.text_dim, args.text_tokens)
            assert (folder / META).is_file()
            text_bytes = 2 * cfg.text_dim * max(1, args.text_tokens)
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(shape)) + text_bytes
            for batch in args.batch_sizes:
                for workers in args.workers:
                    steps = max(4, args.latents // batch)
                    rate, per_cpu = latents_per_second(folder, batch, steps, workers, args.flip, args.repeats)
                    cpu_col = f"{per_cpu:,.0f}" if workers == 0 else "(in workers)"
                    print(
                        f"| {dtype} | {batch} | {workers} | {rate:,.0f} | {rate * row_bytes / 1e6:,.0f} "
                        f"| {rate / need:.1f}x | {cpu_col} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
