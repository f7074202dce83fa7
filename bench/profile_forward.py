"""Where a forward pass spends its time: torch.profiler's top ops, ours and the original network.

    OMP_NUM_THREADS=1 python bench/profile_forward.py                 # CPU fp32, 101m + small
    python bench/profile_forward.py --shapes small --top 15 --train
    OMP_NUM_THREADS=1 python bench/profile_forward.py --train --cpu-time --by-shape   # on a busy machine
    python bench/profile_forward.py --device cuda --dtype bf16 --compile

Shapes, weights and inputs are bench/vs_original.py's. Prints, per shape and network, a markdown
table of the ops with the most self time (summed over `--iters` profiled calls after a warm-up).
torch.profiler times ops by the wall clock, which on a machine with more runnable processes than
cores also counts the time the process waited; `--cpu-time` instead times every aten op (forward
and backward) with the process CPU clock from a TorchDispatchMode, optionally with input shapes.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoiser import DTYPES, autocast  # noqa: E402
from vs_original import SHAPES, Shape, pair_with_inputs  # noqa: E402


def profile_calls(fn, device: torch.device, iters: int) -> list:
    fn()  # warm-up: first-call allocations and kernel selection stay out of the table
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return prof.key_averages()


@dataclass
class OpTime:
    key: str
    count: int = 0
    self_cpu_time_total: float = 0.0  # microseconds, as the profiler's events


class CPUTimeMode(TorchDispatchMode):
    """Process CPU time of every aten op run under it, keyed by op name (and input shapes)."""

    def __init__(self, shapes: bool):
        super().__init__()
        self.shapes, self.ops = shapes, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.process_time()
        out = func(*args, **(kwargs or {}))
        spent = time.process_time() - start
        key = str(func.overloadpacket)
        if self.shapes:
            key += " " + str([tuple(a.shape) for a in args if isinstance(a, torch.Tensor)])
        op = self.ops.setdefault(key, OpTime(key))
        op.count, op.self_cpu_time_total = op.count + 1, op.self_cpu_time_total + spent * 1e6
        return out


def cpu_time_calls(fn, iters: int, shapes: bool) -> list[OpTime]:
    fn()
    with CPUTimeMode(shapes) as mode:
        for _ in range(iters):
            fn()
    return list(mode.ops.values())


def print_top(title: str, events: list, top: int, device: torch.device) -> None:
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    print(f"\n{title}: {total / 1e3:.1f} ms self time in total\n")
    print("| op | calls | self ms | share |")
    print("|---|---|---|---|")
    for e in rows[:top]:
        t = getattr(e, key)
        print(f"| {e.key} | {e.count} | {t / 1e3:.1f} | {t / total:.1%} |")


def network_calls(shape: Shape, args: argparse.Namespace, device: torch.device) -> dict:
    """{name: zero-argument call} for the original and ours, forward or train step."""
    dtype = DTYPES[args.dtype]
    original, ours, _, (x, t, text) = pair_with_inputs(shape, args, device)
    runs = {
        "original": (original, lambda m: m(x, t[:, None], text)),
        "tld": (ours, lambda m: m(x, t, text_emb=text)),
    }
    calls = {}
    for name, (net, call) in runs.items():
        model = torch.compile(net) if args.compile else net

        def fn(net=net, model=model, call=call) -> None:
            if args.train:
                net.train()
                with autocast(device, dtype):
                    F.mse_loss(call(model).float(), torch.zeros_like(x)).backward()
                return
            net.eval()
            with torch.inference_mode(), autocast(device, dtype):
                call(model)

        calls[name] = fn
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="101m,small")
    ap.add_argument("--variant", default="main", choices=["main", "released"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--train", action="store_true", help="profile forward + backward instead of forward")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--cpu-time", action="store_true", help="per-op process CPU time instead of the profiler")
    ap.add_argument("--by-shape", action="store_true", help="with --cpu-time: a row per op and input shapes")
    args = ap.parse_args()
    device = torch.device(args.device)
    work = "forward+backward" if args.train else "forward (inference mode)"
    print(
        f"torch {torch.__version__}; {args.device}, {torch.get_num_threads()} threads; {args.dtype}; {work}"
    )
    for name in args.shapes.split(","):
        shape = SHAPES[name.strip()]
        for net_name, fn in network_calls(shape, args, device).items():
            if args.cpu_time:
                events = cpu_time_calls(fn, args.iters, args.by_shape)
            else:
                events = profile_calls(fn, device, args.iters)
            title = f"{shape.name} batch {shape.batch}, {net_name}, {args.iters} calls"
            print_top(title, events, args.top, device)


if __name__ == "__main__":
    main()
