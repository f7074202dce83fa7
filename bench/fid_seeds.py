"""FID of a run's newest checkpoint (EMA weights) under its own `fid` block, for several seeds.

    python bench/fid_seeds.py runs/objective/tld --seeds 0,1000,2000

The same protocol as FID during training (tld.training.fid_eval): seed s draws the condition rows and
the noise of image k (s + k), so seed 0 repeats the value the run logged at its last step, and the
spread over seeds is the noise of one FID number of that curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tld.data import LatentDataset
from tld.diffusion import get_parameterization
from tld.eval.metrics import fid_from_features, kid_from_features
from tld.model import Denoiser, DenoiserConfig
from tld.training import checkpoint as ckpt
from tld.training.config import load_config
from tld.training.fid_eval import start_fid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a training run's output_dir (config.yaml + checkpoints/)")
    p.add_argument("--seeds", default="0,1000,2000", help="comma-separated fid seeds")
    args = p.parse_args()
    config = load_config(args.run / "config.yaml")
    folder = ckpt.latest_checkpoint(args.run / "checkpoints")
    if folder is None:
        raise SystemExit(f"no complete checkpoint under {args.run / 'checkpoints'}")
    saved = ckpt.load_checkpoint(folder)
    net = Denoiser(DenoiserConfig.from_dict(saved["state"]["compat"]["model"]))
    net.load_state_dict(saved["ema"])
    net.eval()
    c = config.data
    data = LatentDataset(c.path, c.condition, c.text, check_finite=False)
    param = get_parameterization(**config.diffusion.parameterization)
    device = torch.device("cpu")
    for seed in (int(s) for s in args.seeds.split(",")):
        config.fid.seed = seed
        monitor = start_fid(config, data, device, main=True)
        feats = monitor.extractor(monitor.images(net, param, device), progress=False)
        kid, _ = kid_from_features(monitor.real, feats, seed=seed)
        row = {
            "checkpoint": folder.name,
            "seed": seed,
            "fid": fid_from_features(monitor.real, feats),
            "kid": kid,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
