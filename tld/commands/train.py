"""`tld train` and `tld train-vae` (config file + --set overrides, --resume) and `tld export`."""

from __future__ import annotations

import argparse

from tld.errors import TLDError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a denoiser on a latent dataset",
        description="Train on a precomputed latent dataset. Multi-GPU: `accelerate launch -m tld.training ...`.",
    )
    add_config_arguments(p, "training")
    p.add_argument(
        "--resume-with-changes",
        action="store_true",
        help="resume (from --resume's checkpoint, else the newest) although the batch size, data, seed, "
        "optimizer or other settings differ from the checkpoint's; the run is then no exact continuation",
    )
    p.add_argument(
        "--export", metavar="OUT_DIR", help="after training, export the EMA weights as a model folder"
    )
    add_ema_decay_argument(p)
    p.add_argument(
        "--lora",
        type=int,
        metavar="RANK",
        help="train only rank-RANK LoRA adapters on the frozen init_from model (= --set lora.rank=RANK); "
        "writes OUTPUT_DIR/adapter for `tld generate --lora` (docs/adapters.md)",
    )
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
    add_ema_decay_argument(e)
    e.add_argument(
        "--all-ema",
        action="store_true",
        help="write one model folder per EMA the run tracked, OUT_DIR/ema_<decay>/ (e.g. for tld eval sweep)",
    )
    e.set_defaults(func=run_export)

    v = subparsers.add_parser(
        "train-vae",
        help="train a VAE (diffusers AutoencoderKL) from scratch on shard folders",
        description="Train a VAE on webdataset shards; the result (OUTPUT_DIR/vae) loads with every --vae option.",
    )
    v.add_argument("shards", nargs="*", help="shard folders (or `shards:` in the config)")
    add_config_arguments(v, "VAE training")
    v.add_argument("--output-dir", help="where checkpoints, logs and vae/ go (default runs/vae)")
    v.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    v.set_defaults(func=run_train_vae)


def add_ema_decay_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ema-decay",
        type=float,
        metavar="D",
        help="export the EMA of decay D: ema.decay (the default) or one of ema.extra_decays",
    )


def add_config_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--config, --set, --resume and --print-config: the same for every trainer."""
    p.add_argument("--config", help=f"{what} config (YAML or JSON); defaults apply to what it leaves out")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set steps=200 --set optim.lr=3e-4",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint in output_dir (or the given step_<N> folder)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def resolved_config(args: argparse.Namespace, extra: list[str], cls: type | None = None):
    """The config from --config + --set + `extra` overrides, or None after --print-config printed it."""
    import yaml

    from tld.training.config import load_config

    overrides = list(args.overrides) + extra
    if args.resume:
        overrides.append(f"resume={args.resume}")
    config = load_config(args.config, overrides, cls=cls)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return None
    return config


def run_train(args: argparse.Namespace) -> int:
    from tld.training import train

    extra = []
    if args.resume_with_changes:
        args.resume = args.resume or "latest"
        extra.append("resume_with_changes=true")
    if args.lora is not None:
        extra.append(f"lora.rank={args.lora}")
    config = resolved_config(args, extra)
    if config is None:
        return 0
    if config.lora.rank and args.export:
        raise TLDError("--export writes a whole model; a LoRA run writes its adapter to OUTPUT_DIR/adapter")
    _check_export_decay(args, config)
    result = train(config)
    print(f"trained to step {result.step}; last checkpoint: {result.last_checkpoint}")
    if config.lora.rank:
        print(f"adapter: {result.output_dir / 'adapter'} (load with tld generate --lora PATH[:SCALE])")
    if args.export and result.last_checkpoint is not None:
        from accelerate import PartialState

        if PartialState().is_main_process:
            run_export(
                argparse.Namespace(
                    checkpoint=result.last_checkpoint,
                    out_dir=args.export,
                    no_ema=False,
                    ema_decay=args.ema_decay,
                    all_ema=False,
                )
            )
    return 0


def _check_export_decay(args: argparse.Namespace, config) -> None:
    """A decay the run will not track is refused before training, not after it."""
    if args.ema_decay is None:
        return
    if not args.export:
        raise TLDError("--ema-decay picks the EMA that --export writes; pass --export OUT_DIR too")
    tracked = sorted([config.ema.decay, *config.ema.extra_decays])
    if args.ema_decay not in tracked:
        have = ", ".join(str(d) for d in tracked)
        raise TLDError(
            f"--ema-decay {args.ema_decay}: this run tracks the EMA decays {have} (ema.extra_decays)"
        )


def run_export(args: argparse.Namespace) -> int:
    from tld.training.export import export_checkpoint, export_every_ema

    if args.all_ema:
        if args.no_ema or args.ema_decay is not None:
            raise TLDError("--all-ema writes every EMA; it cannot go with --no-ema or --ema-decay")
        for out in export_every_ema(args.checkpoint, args.out_dir):
            print(f"exported EMA weights of {args.checkpoint} to {out}")
        return 0
    out = export_checkpoint(args.checkpoint, args.out_dir, ema=not args.no_ema, ema_decay=args.ema_decay)
    which = "raw" if args.no_ema else f"EMA{'' if args.ema_decay is None else f' {args.ema_decay}'}"
    print(f"exported {which} weights of {args.checkpoint} to {out}")
    return 0


def run_train_vae(args: argparse.Namespace) -> int:
    import yaml

    from tld.training.vae_config import VAETrainConfig
    from tld.training.vae_train import train_vae

    extra = (
        [f"shards={yaml.safe_dump(list(args.shards), default_flow_style=True).strip()}"]
        if args.shards
        else []
    )
    extra += [
        f"{key}={value}" for key, value in (("output_dir", args.output_dir), ("device", args.device)) if value
    ]
    config = resolved_config(args, extra, VAETrainConfig)
    if config is None:
        return 0
    result = train_vae(config)
    print(
        f"trained to step {result.step}; held-out PSNR {result.val_psnr:.2f} dB "
        f"(pooled {result.val_psnr_pooled:.2f} dB); VAE saved to {result.vae_dir}"
    )
    return 0
