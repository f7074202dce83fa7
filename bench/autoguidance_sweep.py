"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself") as an
experiment through `tld eval sweep`: the guidance pair is the model's conditional prediction and a
weaker model's (GUIDE) *conditional* prediction, x0 = guide + w * (model - guide), instead of CFG's
conditional and unconditional ones. The package does not ship it: on the emoji demo it scored worse
than CFG at the same scale (docs/results_recipe.md).

    GUIDE=runs/emoji/abl/demo_v2/model python bench/autoguidance_sweep.py --model runs/emoji/abl/demo_v5/model \
        --data runs/emoji/abl/floor.images -n 1000 --real-n 1000 --batch-size 50 --cache-dir runs/emoji/eval_cache \
        --samplers dpmpp_2m --steps 15 --cfgs 2,3 --option '{"cfg_schedule": "none"}' --out runs/emoji/abl/ag_v5_by_v2

Every argument is `tld eval sweep`'s; --batch-size must divide -n (the routing below splits each
guided batch of 2 x batch-size rows into the two models' halves).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn

from tld.cli import main
from tld.pipeline.core import TLDPipeline


class RoutedPair(nn.Module):
    """A guided call stacks [conditional rows; guide rows]: the first half goes to `model`, the second
    to `guide`, both with the conditional inputs; an unguided call (batch rows only) to `model`."""

    def __init__(self, model: nn.Module, guide: nn.Module, batch: int):
        super().__init__()
        self.model, self.guide, self.batch = model, guide, batch
        self.config = model.config

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        b = self.batch
        if x.shape[0] != 2 * b:
            return self.model(x, noise_level, **kwargs)

        def part(sl: slice) -> dict[str, Any]:
            return {
                k: v[sl] if torch.is_tensor(v) and v.shape[:1] == x.shape[:1] else v
                for k, v in kwargs.items()
            }

        first, second = slice(0, b), slice(b, 2 * b)
        return torch.cat([
            self.model(x[first], noise_level[first], **part(first)),
            self.guide(x[second], noise_level[second], **part(second)),
        ])  # fmt: skip


def install(guide_dir: str, batch: int) -> None:
    """Make every TLDPipeline.from_pretrained of this process autoguided by the model in guide_dir."""
    load = TLDPipeline.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        pipe = load(cls, path, *args, **kwargs)
        guide = load(cls, guide_dir, *args, **kwargs).denoiser
        pipe.denoiser = RoutedPair(pipe.denoiser, guide, batch).eval()
        conditioning = pipe.conditioning

        def conditional_twice(job):  # the "unconditional" branch gets the conditional inputs
            cond, uncond = conditioning(job)
            return cond, None if uncond is None else dict(cond)

        pipe.conditioning = conditional_twice
        return pipe

    TLDPipeline.from_pretrained = classmethod(from_pretrained)


if __name__ == "__main__":
    args = sys.argv[1:]
    batch = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else 16
    install(os.environ["GUIDE"], batch)
    sys.exit(main(["eval", "sweep", *args]))
