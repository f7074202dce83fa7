"""Masked training's speed-up: seconds per optimizer step at several token-drop ratios, one process.

    OMP_NUM_THREADS=1 python bench/masked_throughput.py                      # the Fashion-MNIST model
    OMP_NUM_THREADS=1 python bench/masked_throughput.py --preset emoji       # the emoji demo's shape

Each step is the trainer's own (`micro_batch_loss` with `mask.ratio`, backward, AdamW) in fp32
(`--bf16`: under bf16 autocast). Ratios take turns round by round and the time is
process CPU time (single-threaded), so background load hits every ratio alike. The last column is
what the 2500-step budget of bench/ablations_fashion.sh buys at that ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoiser import interleaved_rounds  # noqa: E402

from tld.data import Batch  # noqa: E402
from tld.diffusion import get_density, get_parameterization  # noqa: E402
from tld.model import Denoiser, DenoiserConfig  # noqa: E402
from tld.model.cpu import apply_cpu_kernels  # noqa: E402
from tld.training.config import TrainConfig  # noqa: E402
from tld.training.objective import build_optimizer, micro_batch_loss  # noqa: E402

SHAPES = {
    # configs/fashion_mnist.yaml: 8x8x4 latents, patch 1, class-conditional
    "fashion": dict(
        cfg=dict(embed_dim=192, depth=4, num_heads=3, noise_embed_dim=128, patch_size=1, latent_size=(8, 8),
                 text_dim=0, num_classes=10, mlp_ratio=4),
        batch=32,
    ),
    # configs/emoji_demo.yaml: 16x16x4 latents, patch 2 (64 tokens), per-token MiniLM text
    "emoji": dict(
        cfg=dict(embed_dim=192, depth=6, num_heads=3, noise_embed_dim=128, patch_size=2, latent_size=(16, 16),
                 text_dim=384, mlp_ratio=4),
        batch=32,
    ),
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(SHAPES), default="fashion")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 0.75])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--budget-steps", type=int, default=2500)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (slower than fp32 on some CPUs)")
    args = ap.parse_args()
    shape = SHAPES[args.preset]
    cfg = DenoiserConfig(**shape["cfg"])
    b = shape["batch"]
    torch.manual_seed(0)
    latents = torch.randn(b, cfg.in_channels, *cfg.latent_size)
    text = torch.randn(b, 12, cfg.text_dim) if cfg.text_dim else None
    labels = torch.randint(0, 10, (b,)) if cfg.num_classes else None
    batch = Batch(latents, text, None, labels)
    param, density = get_parameterization("flow"), get_density("logit_normal")
    fns = []
    for ratio in args.ratios:
        net = apply_cpu_kernels(Denoiser(cfg), "auto")
        config = TrainConfig()
        config.mask.ratio = ratio
        opt = build_optimizer(net.parameters(), config.optim)
        gen = torch.Generator().manual_seed(0)

        def step(net=net, config=config, opt=opt, gen=gen) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = micro_batch_loss(net, param, density, batch, gen, config)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        fns.append(step)
    rounds = interleaved_rounds(fns, torch.device("cpu"), warmup=3, iters=args.iters, clock=time.process_time)
    base = statistics.median(r[0] for r in rounds)
    print(
        f"{args.preset}: {cfg.grid[0] * cfg.grid[1]} tokens, batch {b}, torch threads {torch.get_num_threads()}"
    )
    print("| drop ratio | tokens seen | s/step (median) | speed-up | steps in the budget |")
    print("|---|---|---|---|---|")
    n = cfg.grid[0] * cfg.grid[1]
    for i, ratio in enumerate(args.ratios):
        t = statistics.median(r[i] for r in rounds)
        seen = max(1, round((1 - ratio) * n))
        print(f"| {ratio:.2f} | {seen} | {t:.4f} | {base / t:.2f}x | {int(args.budget_steps * base / t)} |")


if __name__ == "__main__":
    main()
