"""`tld info`: parameter count, FLOPs and tensor shapes of a denoiser config."""

from __future__ import annotations

import argparse

import torch

from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig, forward_flops


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a denoiser config: parameters, forward GFLOPs, shapes",
        description="Print the parameter count, forward GFLOPs per image and tensor shapes of a denoiser.",
    )
    p.add_argument(
        "--config",
        default="101m",
        help="preset (tiny, small, 101m), a DenoiserConfig JSON file or a model folder (default: 101m)",
    )
    p.add_argument(
        "--latent-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="latent height and width to report for (default: the config's trained size)",
    )
    p.add_argument("--json", action="store_true", help="also print the full config as JSON")
    p.set_defaults(func=run)


def describe(
    cfg: DenoiserConfig, height: int | None = None, width: int | None = None
) -> list[tuple[str, str]]:
    """(label, value) rows that `tld info` prints."""
    h = height if height is not None else cfg.latent_size[0]
    w = width if width is not None else cfg.latent_size[1]
    if h <= 0 or w <= 0 or h % cfg.patch_size or w % cfg.patch_size:
        raise TLDError(
            f"--latent-size must be positive multiples of patch_size {cfg.patch_size}, got {h} {w}"
        )
    # On the meta device nothing is allocated, so even large configs are described instantly.
    with torch.device("meta"):
        params = Denoiser(cfg).num_parameters()
    tokens = (h // cfg.patch_size) * (w // cfg.patch_size)
    text = f"(B, {cfg.text_dim}) pooled or (B, T, {cfg.text_dim}) per-token" if cfg.text_dim else "none"
    return [
        ("parameters", f"{params:,} ({params / 1e6:.1f}M)"),
        ("forward GFLOPs / image", f"{forward_flops(cfg, 1, h, w) / 1e9:.4g}"),
        ("latent in", f"(B, {cfg.in_channels}, {h}, {w})"),
        ("latent out", f"(B, {cfg.out_channels}, {h}, {w})"),
        ("tokens", f"{tokens} ({h // cfg.patch_size}x{w // cfg.patch_size} grid, patch {cfg.patch_size})"),
        (
            "width / depth / heads",
            f"{cfg.embed_dim} / {cfg.depth} / {cfg.heads} (cross {cfg.cross_attn_heads})",
        ),
        ("blocks", f"{cfg.norm_position}-norm, mlp x{cfg.mlp_ratio} with 3x3 depthwise conv"),
        ("text embedding", text),
        ("class labels", f"{cfg.num_classes} (+ null)" if cfg.num_classes else "none"),
        ("extra conditioning", str(cfg.extra_cond_dim) if cfg.extra_cond_dim else "none"),
        ("trained latent size", f"{cfg.latent_size[0]}x{cfg.latent_size[1]}"),
    ]


def run(args: argparse.Namespace) -> int:
    cfg = DenoiserConfig.load(args.config)
    height, width = args.latent_size if args.latent_size else (None, None)
    rows = describe(cfg, height, width)
    pad = max(len(label) for label, _ in rows)
    print(f"denoiser config: {args.config}")
    for label, value in rows:
        print(f"  {label:<{pad}}  {value}")
    if args.json:
        print(cfg.to_json())
    return 0
