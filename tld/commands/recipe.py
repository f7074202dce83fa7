"""`tld recipe emoji`: data -> VAE -> encode -> denoiser -> export -> evaluation, resumable."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipe",
        help="reproduce a model end to end (emoji: the bundled demo model)",
        description="Run every step of a recipe; finished steps are skipped, so a rerun resumes after a kill.",
    )
    p.add_argument("name", choices=["emoji"])
    p.add_argument("--out", default="runs/emoji", help="working folder (shards, VAE, latents, runs, model)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--vae-steps", type=int, help="VAE training steps (default 3500)")
    p.add_argument(
        "--vae", metavar="DIR", help="use this VAE (a `tld train-vae` folder) instead of training one"
    )
    p.add_argument(
        "--train-steps", type=int, help="denoiser training steps (default: configs/emoji_demo.yaml's)"
    )
    p.add_argument(
        "--finish-steps", type=int,
        help="steps of the finishing phase on the style-free caption variants, 0 = none "
        "(default: configs/emoji_demo_finish.yaml's)",
    )  # fmt: skip
    p.add_argument(
        "--polish-steps", type=int,
        help="steps of the polish phase (the finishing phase's EMA weights fine-tuned with a fresh optimizer), "
        "0 = none (default: configs/emoji_demo_polish.yaml's)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=8, help="seeds per colour prompt in the evaluation")
    p.add_argument("--ship", metavar="DIR", help="also write the fp16 bundle + model card to DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_recipe_command)


def run_recipe_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tld.errors import TLDError
    from tld.recipes.card import colour_markdown
    from tld.recipes.emoji import (
        FINISH_CONFIG_FILE,
        POLISH_CONFIG_FILE,
        EmojiRecipe,
        packaged_config,
        run_recipe,
    )

    limits = (("vae_steps", 1), ("train_steps", 1), ("finish_steps", 0), ("polish_steps", 0), ("seeds", 1))
    for name, low in limits:
        value = getattr(args, name)
        if value is not None and value < low:
            raise TLDError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    finish = (
        {}
        if args.finish_steps is None
        else {"finish": {**packaged_config(FINISH_CONFIG_FILE), "steps": args.finish_steps}}
    )
    if args.polish_steps is not None:
        finish["polish"] = {**packaged_config(POLISH_CONFIG_FILE), "steps": args.polish_steps}
    recipe = EmojiRecipe(
        out=Path(args.out),
        device=args.device,
        vae_overrides={"steps": args.vae_steps} if args.vae_steps else {},
        train_overrides={"steps": args.train_steps} if args.train_steps else {},
        seeds=args.seeds,
        vae=Path(args.vae) if args.vae else None,
        progress=not args.no_progress,
        **finish,
    )
    summary = run_recipe(recipe, ship=args.ship)
    print(colour_markdown(summary))
    return 0
