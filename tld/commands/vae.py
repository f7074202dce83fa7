"""`tld train-vae`: train our own AutoencoderKL on shards (config file + --set overrides, --resume)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-vae",
        help="train a VAE (diffusers AutoencoderKL) from scratch on shard folders",
        description="Train a VAE on webdataset shards; the result (OUTPUT_DIR/vae) loads with every --vae option.",
    )
    p.add_argument("shards", nargs="*", help="shard folders (or `shards:` in the config)")
    p.add_argument(
        "--config", help="VAE training config (YAML or JSON); defaults apply to what it leaves out"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set steps=2000 --set model.layers_per_block=2",
    )
    p.add_argument("--output-dir", help="where checkpoints, logs and vae/ go (default runs/vae)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint in output_dir (or the given step_<N> folder)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run_train_vae)


def run_train_vae(args: argparse.Namespace) -> int:
    import yaml

    from tld.training.config import load_config
    from tld.training.vae_config import VAETrainConfig
    from tld.training.vae_train import train_vae

    overrides = list(args.overrides)
    if args.shards:
        overrides.append(f"shards={yaml.safe_dump(list(args.shards), default_flow_style=True).strip()}")
    for key, value in (("output_dir", args.output_dir), ("resume", args.resume), ("device", args.device)):
        if value:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides, cls=VAETrainConfig)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    result = train_vae(config)
    print(
        f"trained to step {result.step}; held-out PSNR {result.val_psnr:.2f} dB "
        f"(pooled {result.val_psnr_pooled:.2f} dB); VAE saved to {result.vae_dir}"
    )
    return 0
