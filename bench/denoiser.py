"""Denoiser throughput: forward and train-step images/s, achieved GFLOP/s, fraction of a large GEMM.

    python bench/denoiser.py                                   # CPU, fp32, small + 101m
    python bench/denoiser.py --device cuda --dtype bf16 --compile --batch 64

FLOPs come from the analytic count in `tld.model.flops` (matmuls and convs; a train step counts
as 3x the forward). The GEMM reference is one large square matmul of the same dtype on the same
device, measured in the same run, so "fraction" says how close the network gets to the
hardware's practical matmul peak.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

from tld.model import Denoiser, DenoiserConfig, forward_flops
from tld.model.cpu import apply_cpu_kernels
from tld.model.flops import train_step_flops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_rounds(
    fns: list[Callable[[], object]],
    device: torch.device,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Seconds of each call, round by round (`iters` rounds, each calling every function once).

    Taking turns gives every function the same chances of a quiet moment, so ratios stay fair when
    the load changes during the run. `clock=time.process_time` counts only the CPU time this
    process got (single-threaded runs on a machine with more runnable processes than cores, where
    wall time mostly measures the scheduler).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    rounds = []
    for r in range(iters):
        times = [0.0] * len(fns)
        # Round r starts at function r: none always runs right after the same neighbour (what
        # ran before leaves caches and the allocator in a state that helps or hurts the next).
        for i in [(r + k) % len(fns) for k in range(len(fns))]:
            start = clock()
            fns[i]()
            sync(device)
            times[i] = clock() - start
        rounds.append(times)
    return rounds


def interleaved(
    fns: list[Callable[[], object]],
    device: torch.device,
    warmup: int,
    iters: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Fastest seconds per call of each function over `interleaved_rounds`.

    The minimum, not the mean: on a shared machine other processes only ever add time.
    """
    rounds = interleaved_rounds(fns, device, warmup, iters, clock)
    return [min(times) for times in zip(*rounds)]


def gemms(n: int, dtype: torch.dtype, device: torch.device) -> list[tuple[int, Callable[[], object]]]:
    """(FLOPs, call) of square matmuls of side n/2 and n: the smaller is sometimes faster on CPU."""
    calls = []
    for side in (n // 2, n):
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        calls.append((2 * side**3, lambda a=a, b=b: a @ b))
    return calls


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def bench_config(name: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    cfg = DenoiserConfig.preset(name)
    batch = args.batch or (8 if device.type == "cpu" else 64)
    torch.manual_seed(0)
    net = Denoiser(cfg).to(device)
    apply_cpu_kernels(net, "auto" if str(device).startswith("cpu") else "off")
    h, w = cfg.latent_size
    x = torch.randn(batch, cfg.in_channels, h, w, device=device)
    t = torch.rand(batch, device=device)
    text = torch.randn(batch, cfg.text_dim, device=device)
    target = torch.randn(batch, cfg.out_channels, h, w, device=device)
    model = torch.compile(net) if args.compile else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def forward() -> None:
        net.eval()
        with torch.inference_mode(), autocast(device, dtype):
            model(x, t, text_emb=text)

    def train_step() -> None:
        net.train()
        with autocast(device, dtype):
            loss = torch.nn.functional.mse_loss(model(x, t, text_emb=text).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reference = gemms(args.gemm_size or (4096 if device.type == "cpu" else 8192), dtype, device)
    seconds = interleaved(
        [call for _, call in reference] + [forward, train_step], device, args.warmup, args.iters
    )
    gemm = max(flops / s for (flops, _), s in zip(reference, seconds)) / 1e9
    fwd_s, train_s = seconds[-2:]
    return {
        "config": name,
        "params": net.num_parameters(),
        "batch": batch,
        "fwd_img_s": batch / fwd_s,
        "train_img_s": batch / train_s,
        "fwd_gflops": forward_flops(cfg, batch) / fwd_s / 1e9,
        "train_gflops": train_step_flops(cfg, batch) / train_s / 1e9,
        "gemm_gflops": gemm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="small,101m", help="comma-separated presets (tiny, small, 101m)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (and GEMM dtype)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--batch", type=int, default=0, help="batch size (default 8 on CPU, 64 on GPU)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--gemm-size", type=int, default=0, help="GEMM side (default 4096 CPU, 8192 GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()} threads"
    )
    print(f"device: {name}; dtype {args.dtype}; compile {args.compile}; torch {torch.__version__}")
    print("GEMM: best of square matmuls of side n/2 and n (--gemm-size), timed in turns with the network\n")
    header = (
        "| config | params | batch | fwd img/s | train img/s | fwd GFLOP/s | train GFLOP/s | GEMM GFLOP/s "
        "| fwd / GEMM | train / GEMM |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for config in args.configs.split(","):
        r = bench_config(config.strip(), args, device, dtype)
        print(
            f"| {r['config']} | {r['params'] / 1e6:.1f}M | {r['batch']} | {r['fwd_img_s']:.2f} | "
            f"{r['train_img_s']:.2f} | {r['fwd_gflops']:.1f} | {r['train_gflops']:.1f} | {r['gemm_gflops']:.1f} | "
            f"{r['fwd_gflops'] / r['gemm_gflops']:.0%} | {r['train_gflops'] / r['gemm_gflops']:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
