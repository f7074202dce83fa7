"""How far a run's EMA denoiser lands from the data at fixed noise levels: mean ||D(x0 + sigma n, sigma) - x0||^2.

    python bench/denoise_error.py runs/objective/tld runs/objective/eps      # one line per run

D is the parameterization's k-diffusion denoiser (the x0 estimate every sampler step uses), on 64
training rows spread over the dataset with their own text condition, one fixed noise draw for all
runs. A value above ~1 (the latents' variance) is worse than predicting zeros.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tld.data import LatentDataset
from tld.diffusion import get_parameterization
from tld.model import Denoiser, DenoiserConfig
from tld.training import checkpoint as ckpt
from tld.training.config import load_config

SIGMAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 14.0)


@torch.no_grad()
def errors(run: Path, rows: int = 64) -> list[float]:
    config = load_config(run / "config.yaml")
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    net = Denoiser(DenoiserConfig.from_dict(saved["state"]["compat"]["model"]))
    net.load_state_dict(saved["ema"])
    denoiser = get_parameterization(**config.diffusion.parameterization).wrap(net.eval())
    c = config.data
    data = LatentDataset(c.path, c.condition, c.text, check_finite=False)
    batch = data.get(np.linspace(0, len(data) - 1, rows).astype(np.int64))
    noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(1))
    cond = {"text_emb": batch.text_emb, "text_mask": batch.text_mask, "class_labels": batch.labels}
    cond = {k: v for k, v in cond.items() if v is not None}
    out = []
    for sigma in SIGMAS:
        x0 = denoiser(batch.latents + sigma * noise, torch.full((rows,), sigma), **cond)
        out.append((x0 - batch.latents).pow(2).mean().item())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="training output folders (config.yaml + checkpoints/)")
    args = p.parse_args()
    print("| run | " + " | ".join(f"sigma {s:g}" for s in SIGMAS) + " |")
    print("|---" * (len(SIGMAS) + 1) + "|")
    for run in args.runs:
        print(f"| {run.name} | " + " | ".join(f"{e:.3f}" for e in errors(run)) + " |", flush=True)


if __name__ == "__main__":
    main()
