"""The original TLD network against ours: same config, same weights, same inputs, one process.

    OMP_NUM_THREADS=1 python bench/vs_original.py                  # CPU fp32, 101m + small
    python bench/vs_original.py --shapes small --iters 5
    python bench/vs_original.py --device cuda --dtype bf16 --compile

The original is `OriginalTLD` from tests/reference_tld.py (upstream main's network by default,
`--variant released` for the published weights' one); ours is `load_original_tld` of its state
dict, so both compute the same function (the max difference is printed). Three kinds of work:
forward (inference mode), train step (forward, MSE backward, AdamW step; the same AdamW for both,
and once more with tld's trainer optimizer, fused AdamW) and full sampling
(DPM-Solver++(2M), classifier-free guidance as one batched forward, the pipeline's sampling core
for both networks). Calls take turns and each time is the minimum over `--iters` rounds, so
background load hits both sides alike; the speed-up is original time / our time, and the last
column the median over rounds of the same ratio within one round (when the two disagree, the
machine was too noisy). Single-threaded CPU runs time process CPU time by default: on a machine
with more runnable processes than cores wall time mostly measures the scheduler.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/denoiser.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/reference_tld.py
from denoiser import DTYPES, autocast, interleaved_rounds  # noqa: E402
from reference_tld import OriginalTLD  # noqa: E402

from tld.diffusion import get_parameterization  # noqa: E402
from tld.model import Denoiser, load_original_tld  # noqa: E402
from tld.model.cpu import apply_cpu_kernels  # noqa: E402

CPU_KERNELS = os.environ.get("TLD_BENCH_CPU_KERNELS", "auto")  # auto|onednn|blas|off, for A/B runs
from tld.pipeline.sampling import SamplingDefaults, make_job, sample_text_to_image  # noqa: E402
from tld.training.config import OptimConfig  # noqa: E402
from tld.training.objective import build_optimizer  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """An original-TLD shape: OriginalTLD(image, noise_dims, patch, embed, layers, text)."""

    name: str
    image: int
    embed: int
    layers: int
    batch: int
    sample_images: int
    iters: int  # default rounds of forward + train step (sampling: a third of it, at least 1)
    patch: int = 2
    noise_dims: int = 256
    text: int = 768


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
SHAPES = {
    "101m": Shape("101m", image=32, embed=768, layers=12, batch=8, sample_images=2, iters=3),
    "small": Shape("small", image=16, embed=128, layers=3, batch=64, sample_images=32, iters=30),
}


class OriginalAsDenoiser(nn.Module):
    """The original network behind our Denoiser's call signature, for the shared sampling core.

    The original has no drop_cond: a dropped row gets the zero text vector, which is what the
    converted model's null condition is (no learned null), so both sample the same function.
    """

    def __init__(self, original: OriginalTLD, config):
        super().__init__()
        self.original, self.config = original, config

    def forward(self, x, noise_level, text_emb=None, drop_cond=None):
        if drop_cond is not None:
            text_emb = torch.where(drop_cond[:, None], torch.zeros_like(text_emb), text_emb)
        return self.original(x, noise_level.reshape(-1, 1), text_emb)


def build_pair(shape: Shape, variant: str, device: torch.device) -> tuple[OriginalTLD, Denoiser]:
    torch.manual_seed(0)
    s = shape
    original = OriginalTLD(s.image, s.noise_dims, s.patch, s.embed, s.layers, s.text, variant)
    ours = load_original_tld(original.state_dict(), variant=variant)
    # Ours as users run it: the CPU kernel policy on the CPU (tld.model.cpu), the plain network elsewhere.
    apply_cpu_kernels(ours, CPU_KERNELS if device.type == "cpu" else "off")
    return original.to(device), ours.to(device)


def step_fns(
    net: nn.Module,
    call: Callable,
    target: torch.Tensor,
    device,
    dtype,
    compile_: bool,
    trainer_opt: bool = False,
):
    """(forward, train step) closures; `call(model)` runs the network on the fixed inputs.

    The train step's AdamW is torch's per-parameter loop (what the original's training script gets on
    the CPU; foreach=False keeps one parameter's temporaries at a time), or with `trainer_opt` the
    optimizer tld's trainer builds (fused AdamW)."""
    model = torch.compile(net) if compile_ else net
    if trainer_opt:
        opt = build_optimizer(net.parameters(), OptimConfig(lr=1e-5))
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-5, foreach=False)

    def forward() -> None:
        net.eval()
        with torch.inference_mode(), autocast(device, dtype):
            call(model)

    def train_step() -> None:
        net.train()
        with autocast(device, dtype):
            loss = F.mse_loss(call(model).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return forward, train_step


def sample_fn(net: nn.Module, shape: Shape, steps: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """Full text-to-image sampling of `sample_images` latents through the pipeline's core."""
    settings = SamplingDefaults(cfg=6.0, steps=steps, sampler="dpmpp_2m", schedule="tld")
    job = make_job(settings, "tld", ["p"] * shape.sample_images, seed=0, progress=False)
    g = torch.Generator().manual_seed(2)
    text = torch.randn(shape.sample_images, shape.text, generator=g).to(device)
    keep = torch.zeros(shape.sample_images, dtype=torch.bool, device=device)
    cond = {"text_emb": text, "drop_cond": keep}
    uncond = {"text_emb": text, "drop_cond": torch.ones_like(keep)}
    param = get_parameterization("tld")
    latent = (4, shape.image, shape.image)

    def run() -> torch.Tensor:
        net.eval()
        with torch.inference_mode():
            return sample_text_to_image(job, param, net, latent, device, cond, uncond)

    return run


def summarize(work: str, rounds: list[list[float]], pair: tuple[int, int]) -> tuple[str, float, float, float]:
    """(work, original min s, ours min s, median over rounds of the round's original/ours ratio)."""
    o, n = pair
    ratios = [r[o] / r[n] for r in rounds]
    return work, min(r[o] for r in rounds), min(r[n] for r in rounds), statistics.median(ratios)


def pair_with_inputs(
    shape: Shape, args: argparse.Namespace, device: torch.device
) -> tuple[
    torch.nn.Module, torch.nn.Module, torch.Generator, tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]:
    """The original and our network with the same weights, the seeded generator, and (x, t, text)
    drawn from it: what the comparison and the profiler both feed the two networks."""
    original, ours = build_pair(shape, args.variant, device)
    g = torch.Generator().manual_seed(1)
    b, s = shape.batch, shape.image
    x = torch.randn(b, 4, s, s, generator=g).to(device)
    t = torch.rand(b, generator=g).to(device)
    text = torch.randn(b, shape.text, generator=g).to(device)
    return original, ours, g, (x, t, text)


def compare(
    shape: Shape, args: argparse.Namespace, device: torch.device
) -> list[tuple[str, float, float, float]]:
    """Rows of `summarize` for one shape, after a printed check that the outputs agree."""
    dtype = DTYPES[args.dtype]
    original, ours, g, (x, t, text) = pair_with_inputs(shape, args, device)
    b, s = shape.batch, shape.image
    target = torch.randn(b, 4, s, s, generator=g).to(device)
    with torch.inference_mode():
        diff = (original.eval()(x, t[:, None], text) - ours.eval()(x, t, text_emb=text)).abs().max()
    sampled = [
        sample_fn(n, shape, args.steps, device) for n in (OriginalAsDenoiser(original, ours.config), ours)
    ]
    sample_diff = (sampled[0]() - sampled[1]()).abs().max()  # also the sampling warm-up
    print(
        f"{shape.name}: max |original - ours| forward {diff:.2e}, sampled latents {sample_diff:.2e}",
        flush=True,
    )
    fwd_o, train_o = step_fns(original, lambda m: m(x, t[:, None], text), target, device, dtype, args.compile)
    call_n = lambda m: m(x, t, text_emb=text)  # noqa: E731
    fwd_n, train_n = step_fns(ours, call_n, target, device, dtype, args.compile)
    _, train_f = step_fns(ours, call_n, target, device, dtype, args.compile, trainer_opt=True)
    iters = args.iters or shape.iters
    clock = CLOCKS[args.clock]
    rounds = interleaved_rounds([fwd_o, fwd_n, train_o, train_n, train_f], device, args.warmup, iters, clock)
    sample_rounds = interleaved_rounds(sampled, device, 0, args.sample_iters or max(1, iters // 3), clock)
    w = f"batch {b}"
    return [
        summarize(f"forward, {w}", rounds, (0, 1)),
        summarize(f"train step, {w}", rounds, (2, 3)),
        summarize(f"train step, {w}, tld's fused AdamW", rounds, (2, 4)),
        summarize(f"sampling {shape.sample_images} images x {args.steps} steps (cfg)", sample_rounds, (0, 1)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="small,101m", help=f"comma-separated, of {sorted(SHAPES)}")
    ap.add_argument("--variant", default="main", choices=["main", "released"], help="upstream network")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype")
    ap.add_argument("--compile", action="store_true", help="torch.compile both networks")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=0, help="rounds of forward + train step (0: per shape)")
    ap.add_argument("--sample-iters", type=int, default=0, help="rounds of full sampling (0: iters // 3)")
    ap.add_argument("--steps", type=int, default=15, help="sampling steps")
    ap.add_argument(
        "--clock", choices=sorted(CLOCKS), help="default: cpu (process time) for 1-thread CPU runs, else wall"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.clock is None:
        args.clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"torch {torch.__version__}; {args.device} (torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={threads}); {args.dtype}; compile {args.compile}; variant {args.variant}; "
        f"{args.clock} clock; times: minimum over interleaved rounds\n"
    )
    rows = []
    for name in args.shapes.split(","):
        shape = SHAPES[name.strip()]
        rows += [(shape, *r) for r in compare(shape, args, device)]
    print("\n| shape | work | original TLD | tld | tld speed-up | median of paired ratios |")
    print("|---|---|---|---|---|---|")
    for shape, work, t_orig, t_ours, median in rows:
        label = f"{shape.name} ({shape.embed}x{shape.layers}, {shape.image}x{shape.image})"
        print(
            f"| {label} | {work} | {t_orig:.3f} s | {t_ours:.3f} s | {t_orig / t_ours:.2f}x | {median:.2f}x |"
        )


if __name__ == "__main__":
    main()
