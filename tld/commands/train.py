"""`tld train` (config file + --set overrides, --resume) and `tld export` (checkpoint -> model folder)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a denoiser on a latent dataset",
        description="Train on a precomputed latent dataset. Multi-GPU: `accelerate launch -m tld.training ...`.",
    )
    p.add_argument("--config", help="training config (YAML or JSON); defaults apply to what it leaves out")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set model.embed_dim=128 --set steps=200",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint in output_dir (or the given step_<N> folder)",
    )
    p.add_argument(
        "--export", metavar="OUT_DIR", help="after training, export the EMA weights as a model folder"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "export",
        help="export a training checkpoint as a model folder",
        description="Write a model folder (config.json + denoiser.safetensors [+ vae/, text_encoder/]).",
    )
    e.add_argument(
        "checkpoint", help="a step_<N> checkpoint folder, or a run's output_dir (newest checkpoint)"
    )
    e.add_argument("out_dir", help="model folder to write")
    e.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    e.set_defaults(func=run_export)


def run_train(args: argparse.Namespace) -> int:
    import yaml

    from tld.training import load_config, train

    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    result = train(config)
    print(f"trained to step {result.step}; last checkpoint: {result.last_checkpoint}")
    if args.export and result.last_checkpoint is not None:
        from accelerate import PartialState

        if PartialState().is_main_process:
            run_export(
                argparse.Namespace(checkpoint=result.last_checkpoint, out_dir=args.export, no_ema=False)
            )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tld.training.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out_dir, ema=not args.no_ema)
    print(f"exported {'raw' if args.no_ema else 'EMA'} weights of {args.checkpoint} to {out}")
    return 0
