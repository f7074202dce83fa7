"""What one more EMA length (`ema.extra_decays`) costs per optimizer step: one `EMA.update`.

    OMP_NUM_THREADS=1 python bench/ema_cost.py                  # the bundled demo's denoiser
    OMP_NUM_THREADS=1 python bench/ema_cost.py --preset small   # a fresh preset

The time is process CPU time (single-threaded), so background load on a shared machine inflates it
less than wall time; the minimum and the median of --repeats updates are printed with the copy's size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tld.training.ema import EMA


def _network(preset: str | None) -> torch.nn.Module:
    if preset is None:
        from tld.pipeline import TLDPipeline

        return TLDPipeline.from_pretrained().denoiser
    from tld.model import Denoiser, DenoiserConfig

    return Denoiser(DenoiserConfig.preset(preset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="a DenoiserConfig preset instead of the bundled model")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = _network(args.preset)
    ema = EMA(net, 0.9999)
    times = []
    for _ in range(args.repeats):
        start = time.process_time()
        ema.update(net, 10_000)
        times.append(time.process_time() - start)
    params = sum(p.numel() for p in net.parameters())
    size = sum(v.numel() * v.element_size() for v in ema.shadow.values())
    print(
        f"{params / 1e6:.2f}M parameters, {size / 1e6:.1f} MB per EMA copy; one update: "
        f"min {min(times) * 1e3:.2f} ms, median {statistics.median(times) * 1e3:.2f} ms CPU time"
    )


if __name__ == "__main__":
    main()
