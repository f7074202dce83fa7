"""Offline-stage throughput: emoji rendering, shard writing/reading, end-to-end encode, merge, disk.

    python bench/preprocess.py                       # CPU, tiny random VAE + open_clip (pipeline overhead)
    python bench/preprocess.py --vae DIR --text-encoder DIR_OR_NAME --device cuda --size 256

With the default tiny encoders the encode row measures what the pipeline itself costs (decode,
resize, batching, writing); with a real VAE folder it is the end-to-end images/s. The merge row
copies synthetic 4x32x32 uint8 latents through the same memmap path as `encode`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_merge(tmp: Path, merge_rows: int) -> tuple[tuple, float]:
    """Merge four uint8 latent parts with the memmap copy; the table row and bytes per latent."""
    from tld.preprocessing.merge import _write_array

    src = tmp / "parts"
    src.mkdir()
    per = merge_rows // 4
    for i in range(4):
        np.save(src / f"{i}.npy", np.random.default_rng(i).integers(0, 255, (per, 4, 32, 32), dtype=np.uint8))
    parts = [(src / f"{i}.npy", np.ones(per, bool)) for i in range(4)]
    sec, shape = timed(lambda: _write_array(tmp / "merged.npy", parts))
    mb = (tmp / "merged.npy").stat().st_size / 1e6
    row = ("merge (memmap copy)", "4x32x32 uint8", shape[0], shape[0] / sec, f"rows/s ({mb / sec:.0f} MB/s)")
    per_row = (tmp / "merged.npy").stat().st_size / shape[0]
    return row, per_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji", type=int, default=400, help="emoji to render")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--vae", help="VAE folder (default: a tiny random one)")
    parser.add_argument(
        "--text-encoder", help="text encoder folder or backend (default: tiny random open_clip)"
    )
    parser.add_argument("--device")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--merge-rows", type=int, default=200_000)
    args = parser.parse_args()

    from tld.preprocessing.emoji import build_emoji_shards
    from tld.preprocessing.encode import EncodeConfig, encode
    from tld.preprocessing.shards import iter_shard, list_shards

    tmp = Path(tempfile.mkdtemp(prefix="tld_bench_"))
    rows = []
    try:
        sec, (n, _) = timed(
            lambda: build_emoji_shards(tmp / "sh", args.size, limit=args.emoji, progress=False)
        )
        rows.append(("emoji render + shard write", f"{args.size}px", n, n / sec, "img/s"))
        sec, count = timed(lambda: sum(1 for p in list_shards(tmp / "sh") for _ in iter_shard(p)))
        rows.append(("shard read", f"{args.size}px", count, count / sec, "img/s"))

        if args.vae is None or args.text_encoder is None:
            from helpers import make_tiny_open_clip, make_tiny_vae

        vae = args.vae or str(make_tiny_vae(tmp / "vae"))
        text = args.text_encoder or str(make_tiny_open_clip(tmp / "clip"))
        cfg = EncodeConfig(
            vae=vae, text_encoder=text, device=args.device, batch_size=args.batch_size, progress=False
        )
        cfg.latent_dtype = "uint8"
        sec, meta = timed(lambda: encode(tmp / "sh", tmp / "ds", cfg))
        label = "encode (tiny encoders)" if not args.vae else "encode"
        rows.append((label, f"{args.size}px -> {meta.latent_shape}", meta.count, meta.count / sec, "img/s"))

        row, per_row = bench_merge(tmp, args.merge_rows)
        rows.append(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'stage':30s} {'shape':22s} {'items':>8s} {'rate':>12s}")
    for stage, shape, n, rate, unit in rows:
        print(f"{stage:30s} {shape:22s} {n:8d} {rate:12.1f} {unit}")
    print(f"disk per uint8 latent 4x32x32: {per_row:.0f} B -> 1M images: {per_row * 1e6 / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
