"""Start-up, memory and loader throughput of the training loader at 1M, 10M and 100M rows.

    OMP_NUM_THREADS=1 python bench/scale.py                      # 1M, 10M, 100M rows, parts of 100k rows
    python bench/scale.py --rows 1000000 --part-rows 10000 --old --s3 20000

Each dataset is written in the parts layout (tld/data/parts.py) as sparse files: every part's
latents.npy (uint8 4x32x32, 4 KiB a row) and text_emb.npy (float16 768-d, 1.5 KiB a row) is created by
`np.lib.format.open_memmap`, which writes the header and extends the file without writing its data,
so 100M rows (560 GB of arrays) take a few MB of disk. Reads of the holes are page faults served
with zeros by the kernel: the numbers are the loader's own CPU cost, not a disk's.

Each size is measured in a fresh child process:
- start-up: from `LatentDataset(folder)` to the first batch out of `step_loader` (the trainer's path);
- peak anonymous memory: the largest RssAnon (/proc/self/status) seen by a 2 ms sampler thread,
  minus RssAnon after the imports (memmapped file pages are not anonymous and are not counted);
- throughput: rows/s over the next `--steps` batches of `--batch` random rows (num_workers=0), and
  over their second half (after most parts have been opened once).
`--old` also times the start-up scan the loader made before (first_nonfinite_row over every row of
text_emb.npy) on a single-file dataset of the first size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (4, 32, 32)
TEXT_DIM = 768


def rss_anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def build(folder: Path, rows: int, part_rows: int) -> None:
    """A sparse parts dataset of `rows` rows (all zeros: finite, uint8 latents)."""
    from tld.data.format import DatasetMeta, write_meta
    from tld.data.parts import PartIndex, header_checksum, write_manifest

    parts = []
    for i, start in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - start)
        name = f"{i:06d}"
        part = folder / "parts" / name
        part.mkdir(parents=True)
        index = PartIndex(name, n)
        for file, dtype, shape in (("latents.npy", "uint8", SHAPE), ("text_emb.npy", "float16", (TEXT_DIM,))):
            m = np.lib.format.open_memmap(part / file, mode="w+", dtype=dtype, shape=(n, *shape))
            del m
            index.arrays[file] = {
                "shape": [n, *shape],
                "dtype": dtype,
                "header": header_checksum(part / file),
            }
        parts.append(index)
    write_manifest(folder, parts)
    meta = DatasetMeta(
        count=rows, latent_shape=list(SHAPE), latent_dtype="uint8", latent_clip=4.0, text_dim=TEXT_DIM
    )
    meta.layout = "parts"
    write_meta(folder, meta)


def build_single(folder: Path, rows: int) -> None:
    """The old layout: one latents.npy + one text_emb.npy, sparse."""
    from tld.data.format import DatasetMeta, write_meta

    folder.mkdir(parents=True)
    np.lib.format.open_memmap(folder / "latents.npy", mode="w+", dtype="uint8", shape=(rows, *SHAPE))
    np.lib.format.open_memmap(folder / "text_emb.npy", mode="w+", dtype="float16", shape=(rows, TEXT_DIM))
    write_meta(
        folder, DatasetMeta(count=rows, latent_shape=list(SHAPE), latent_dtype="uint8", latent_clip=4.0)
    )


def child(folder: str, batch: int, steps: int) -> dict:
    """Measured in a fresh process: start-up to the first batch, peak RssAnon, rows/s."""
    from tld.data import LatentDataset, StepBatches, step_loader

    base = rss_anon_kib()
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon_kib())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    data = LatentDataset(folder)
    loader = iter(step_loader(StepBatches(data, batch, seed=0), 0, steps + 1))
    next(loader)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(steps // 2):
        next(loader)
    t2 = time.perf_counter()
    for _ in range(steps - steps // 2):
        next(loader)
    t3 = time.perf_counter()
    stop.set()
    thread.join()
    return {
        "startup_s": startup,
        "peak_anon_mib": (peak[0] - base) / 1024,
        "rows_per_s": steps * batch / (t3 - t1),
        "steady_rows_per_s": (steps - steps // 2) * batch / (t3 - t2),
    }


def old_scan(folder: Path) -> float:
    from tld.data.format import first_nonfinite_row, open_latent_dataset

    t0 = time.perf_counter()
    first_nonfinite_row(open_latent_dataset(folder).text_emb)
    return time.perf_counter() - t0


def s3_measure(rows: int, batch: int) -> str:
    """Random rows from a part on an S3-compatible server (moto, 127.0.0.1): one ranged GET per row
    (streaming) against copying the part whole and reading it memory-mapped (tld/data/storage.py)."""
    import logging
    import os

    import s3fs
    from moto.server import ThreadedMotoServer

    from tld.data.storage import RemoteDataset

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        import fsspec

        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("bench")
        tmp = Path(tempfile.mkdtemp(prefix="tld-s3-"))
        rng = np.random.default_rng(0)
        np.save(tmp / "latents.npy", rng.integers(0, 255, (rows, *SHAPE), dtype=np.uint8))
        offset = (tmp / "latents.npy").stat().st_size - rows * 4096
        fs.put(str(tmp / "latents.npy"), "bench/ds/parts/p/latents.npy")
        pick = np.sort(rng.choice(rows, size=batch, replace=False))
        t0 = time.perf_counter()
        for r in pick:
            fs.cat_file(
                "bench/ds/parts/p/latents.npy", start=offset + int(r) * 4096, end=offset + int(r + 1) * 4096
            )
        stream = batch / (time.perf_counter() - t0)
        remote = RemoteDataset("s3://bench/ds", cache=tmp / "cache")
        t0 = time.perf_counter()
        local = remote.part("parts/p")
        fetch = time.perf_counter() - t0
        mapped = np.load(local / "latents.npy", mmap_mode="r")
        t0 = time.perf_counter()
        for _ in range(20):
            np.asarray(mapped[np.sort(rng.choice(rows, size=batch, replace=False))])
        cached = 20 * batch / (time.perf_counter() - t0)
        shutil.rmtree(tmp)
    finally:
        server.stop()
    mb = rows * 4096 / 2**20
    return (
        f"S3 (moto on 127.0.0.1), one part of {rows:,} latents ({mb:.0f} MiB): ranged GET per row "
        f"{stream:,.0f} rows/s; whole-part copy {fetch:.2f} s ({mb / fetch:,.0f} MiB/s), then "
        f"{cached:,.0f} rows/s from the cache"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    p.add_argument("--part-rows", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--old", action="store_true", help="also time the old start-up scan at the first size")
    p.add_argument("--s3", type=int, default=0, help="also time S3 reads of one part of this many rows")
    p.add_argument("--dir", default=None, help="where to build (default: a temp folder)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps)))
        return
    root = Path(tempfile.mkdtemp(prefix="tld-scale-", dir=args.dir))
    print(
        "| rows | parts | build s | start-up to first batch s | peak anon MiB | loader rows/s | 2nd half rows/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for rows in args.rows:
            folder = root / f"r{rows}"
            t0 = time.perf_counter()
            build(folder, rows, args.part_rows)
            built = time.perf_counter() - t0
            cmd = [sys.executable, __file__, "--child", str(folder), "--batch", str(args.batch)]
            out = subprocess.run(
                cmd + ["--steps", str(args.steps)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            parts = -(-rows // args.part_rows)
            print(
                f"| {rows:,} | {parts:,} | {built:.1f} | {r['startup_s']:.2f} | {r['peak_anon_mib']:.1f} "
                f"| {r['rows_per_s']:,.0f} | {r['steady_rows_per_s']:,.0f} |",
                flush=True,
            )
            shutil.rmtree(folder)
        if args.old:
            folder = root / "single"
            build_single(folder, args.rows[0])
            print(f"old start-up scan of text_emb.npy, {args.rows[0]:,} rows: {old_scan(folder):.1f} s")
        if args.s3:
            print(s3_measure(args.s3, args.batch))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
