"""Training throughput: images/s and peak memory of a full optimizer step (the real objective).

    python bench/train.py                                    # CPU: small + 101m, batch 8 and 32
    python bench/train.py --device cuda --bf16 --compile --batch-sizes 64 128 256
    OMP_NUM_THREADS=1 python bench/train.py --configs 101m --batch-sizes 32 --grad-checkpointing both

Each (config, batch size, checkpointing) runs in its own subprocess so the peak-RSS column is that
run's alone. The step is the trainer's: `micro_batch_loss`, backward, `build_optimizer`'s AdamW.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(
    preset: str, batch: int, device: str, bf16: bool, compile_: bool, steps: int, warmup: int, ckpt: bool
) -> dict:
    import torch

    from tld.data import Batch
    from tld.diffusion import get_density, get_parameterization
    from tld.model import Denoiser, DenoiserConfig
    from tld.model.cpu import apply_cpu_kernels
    from tld.model.flops import train_step_flops
    from tld.training.config import TrainConfig
    from tld.training.objective import build_optimizer, micro_batch_loss

    torch.manual_seed(0)
    cfg = DenoiserConfig.preset(preset)
    net = Denoiser(cfg).to(device)
    apply_cpu_kernels(net, "auto" if str(device).startswith("cpu") else "off")
    net.grad_checkpointing = ckpt
    config = TrainConfig()
    opt = build_optimizer(net.parameters(), config.optim)
    train_net = torch.compile(net) if compile_ else net
    c, (h, w) = cfg.in_channels, cfg.latent_size
    batch_data = Batch(torch.randn(batch, c, h, w), torch.randn(batch, cfg.text_dim), None, None).to(device)
    param, density = get_parameterization("tld"), get_density("tld_beta")
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            loss = micro_batch_loss(train_net, param, density, batch_data, gen, config)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "config": preset,
        "params_M": round(net.num_parameters() / 1e6, 1),
        "batch": batch,
        "ckpt": ckpt,
        "img_s": round(steps * batch / elapsed, 1),
        "step_ms": round(1000 * elapsed / steps, 1),
        "tflops": round(train_step_flops(cfg, batch) * steps / elapsed / 1e12, 3),
        "peak_MiB": round(peak),
    }


CKPT = {"off": [False], "on": [True], "both": [False, True]}


def run_one(base: list[str], preset: str, batch: int, ckpt: bool) -> dict | str:
    """One measurement in a fresh process: its JSON row, or the last line of its error."""
    cmd = base + ["--one", f"{preset}:{batch}:{int(ckpt)}"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if run.returncode != 0:
        return run.stderr.strip().splitlines()[-1]
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["small", "101m"])
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    ap.add_argument(
        "--grad-checkpointing", choices=sorted(CKPT), default="off", help="recompute each block in backward"
    )
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    args = ap.parse_args()
    if args.one:
        preset, batch, ckpt = args.one.split(":")
        row = measure(
            preset, int(batch), args.device, args.bf16, args.compile, args.steps, args.warmup, bool(int(ckpt))
        )
        print(json.dumps(row))
        return
    mode = f"{args.device}{' bf16' if args.bf16 else ' fp32'}{' compile' if args.compile else ''}"
    print(f"tld training step ({mode}), {args.steps} timed steps after {args.warmup} warmup")
    print(
        f"{'config':>7} {'params':>7} {'batch':>6} {'ckpt':>5} {'img/s':>9} {'ms/step':>9} {'TFLOP/s':>8} "
        f"{'peak MiB':>9}"
    )
    base = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps)]
    base += ["--warmup", str(args.warmup)] + ["--bf16"] * args.bf16 + ["--compile"] * args.compile
    for preset in args.configs:
        for batch in args.batch_sizes:
            for ckpt in CKPT[args.grad_checkpointing]:
                r = run_one(base, preset, batch, ckpt)
                if isinstance(r, str):
                    print(f"{preset:>7} {'':>7} {batch:>6} {ckpt!s:>5}  failed: {r}")
                    continue
                print(
                    f"{r['config']:>7} {r['params_M']:>6}M {r['batch']:>6} {r['ckpt']!s:>5} {r['img_s']:>9} "
                    f"{r['step_ms']:>9} {r['tflops']:>8} {r['peak_MiB']:>9}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
