"""`tld preprocess STEP`: the offline stage (download, folder, emoji, iconify, fashion-mnist, encode ...)."""

from __future__ import annotations

import argparse
import json

from tld.errors import TLDError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="build training data: sources -> webdataset shards -> latent dataset",
        description="Turn captioned images into webdataset shards, then shards into a latent dataset.",
    )
    sub = p.add_subparsers(dest="step", metavar="STEP", required=True)
    _add_download(sub)
    _add_folder(sub)
    _add_emoji(sub)
    _add_iconify(sub)
    _add_fashion_mnist(sub)
    _add_combine(sub)
    _add_colour_words(sub)
    _add_caption_variants(sub)
    _add_subset(sub)
    _add_encode(sub)


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download", help="fetch a URL + caption table (csv/tsv/parquet/jsonl) with img2dataset"
    )
    p.add_argument("table", help="CSV, TSV, Parquet or JSONL file with a URL and a caption column")
    p.add_argument("out", help="shard folder to write (rerunning fetches only the missing shards)")
    p.add_argument("--url-col", default="url")
    p.add_argument("--caption-col", default="caption")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument(
        "--resize-mode", default="center_crop", choices=["center_crop", "keep_ratio", "border", "no"]
    )
    p.add_argument("--samples-per-shard", type=int, default=10000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--timeout", type=int, default=10, help="seconds per URL")
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--distributor", default="multiprocessing", choices=["multiprocessing", "pyspark", "ray"])
    p.add_argument("--overwrite", action="store_true", help="delete OUT first instead of continuing it")
    p.set_defaults(func=run_download)


def _add_folder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("folder", help="shard a local folder of images with .txt sidecars or a captions table")
    p.add_argument("images_dir")
    p.add_argument("out")
    p.add_argument(
        "--captions", help="CSV/TSV/Parquet/JSONL mapping file names to captions (else .txt sidecars)"
    )
    p.add_argument("--file-col", default="file")
    p.add_argument("--caption-col", default="caption")
    p.add_argument("--image-size", type=int, default=256, help="center-crop size; 0 keeps images as they are")
    p.add_argument("--samples-per-shard", type=int, default=10000)
    p.add_argument("--format", default="jpg", choices=["jpg", "png", "webp"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_folder)


def _add_emoji(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emoji", help="render the bundled OpenMoji emoji (CC BY-SA 4.0) into shards")
    p.add_argument("out")
    _add_render_options(p, "append ', STYLE style' to every caption (e.g. openmoji)")
    p.add_argument(
        "--filter", metavar="WORD[,WORD...]",
        help="only emoji whose caption has one of these words, e.g. heart,circle,square,apple",
    )  # fmt: skip
    p.add_argument("--shuffle", type=int, metavar="SEED", help="random order (of this seed) before --limit")
    p.set_defaults(func=run_emoji)


def _add_render_options(p: argparse.ArgumentParser, style_help: str) -> None:
    """What every rendered emoji source takes: size, background, caption style, limit, shard size."""
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--background", default="white", help="colour name or #rrggbb")
    p.add_argument("--style", help=style_help)
    p.add_argument("--limit", type=int, help="only the first N emoji")
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--no-progress", action="store_true")


def _add_iconify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "iconify",
        help="render an Iconify emoji set from npm (twemoji, noto, fluent-emoji-flat) into shards",
    )
    p.add_argument("set", help="set name (fetched with npm pack), or a .tgz / package folder / icons.json")
    p.add_argument("out")
    _add_render_options(p, "caption style word (default: twemoji, noto, fluent, or the set prefix)")
    p.add_argument("--cache", help="where fetched sets are kept (default ~/.cache/tld/iconify)")
    p.set_defaults(func=run_iconify)


def _add_fashion_mnist(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fashion-mnist",
        help="Fashion-MNIST (MIT, Debian's dataset-fashion-mnist) into OUT/train and OUT/test shards",
    )
    p.add_argument("out", help="writes OUT/train and OUT/test (caption = class name, json 'label')")
    p.add_argument("--source", help="folder of the idx files, gz or raw (default: Debian's location)")
    p.add_argument("--size", type=int, default=32, help="image side; 32 pads the 28 px images, no resampling")
    p.add_argument("--limit", type=int, help="only the first N images of each split")
    p.add_argument("--samples-per-shard", type=int, default=10000)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_fashion_mnist)


def _add_combine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("combine", help="copy several shard folders into one (credits of each kept)")
    p.add_argument("out", help="new or empty folder")
    p.add_argument("sources", nargs="+", help="shard folders, in the order their shards are copied")
    p.set_defaults(func=run_combine)


def _add_colour_words(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "colour-words",
        help="copy shards, putting the image's dominant colour in front of captions lacking one",
    )
    p.add_argument("src", help="shard folder to read")
    p.add_argument("out", help="new or empty folder for the recaptioned shards")
    p.add_argument("--min-share", type=float, default=0.6, help="share of the top colour needed to name it")
    p.add_argument("--samples-per-shard", type=int, default=10000)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_colour_words)


def run_colour_words(args: argparse.Namespace) -> int:
    from tld.preprocessing.recaption import ColourTagRules, add_colour_words

    rules = ColourTagRules(min_share=args.min_share)
    report = add_colour_words(args.src, args.out, rules, args.samples_per_shard, not args.no_progress)
    print(f"colour words -> {args.out}: {report.summary()}")
    return 0


def _add_caption_variants(sub: argparse._SubParsersAction) -> None:
    help_ = "copy shards, adding a second copy of each sample with part of its caption cut"
    p = sub.add_parser("caption-variants", help=help_)
    p.add_argument("src", help="shard folder to read")
    p.add_argument("out", help="new or empty folder")
    p.add_argument(
        "--strip", help=r"regex cut from captions (default ',\s*[\w-]+ style\s*$': the style suffix)"
    )
    p.add_argument("--samples-per-shard", type=int, default=10000)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_caption_variants)


def run_caption_variants(args: argparse.Namespace) -> int:
    from tld.preprocessing.recaption import STYLE_SUFFIX, add_caption_variants

    strip = STYLE_SUFFIX if args.strip is None else args.strip
    counts = add_caption_variants(args.src, args.out, strip, args.samples_per_shard, not args.no_progress)
    print(
        f"caption variants -> {args.out}: {counts['total']} samples copied, {counts['variants']} also "
        f"written with a shorter caption, {counts['unreadable']} unreadable dropped"
    )
    return 0


def _add_subset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "subset", help="a seeded random sample of a shard folder (an evaluation reference set)"
    )
    p.add_argument("src", help="shard folder to sample from")
    p.add_argument("out", help="new or empty folder")
    p.add_argument("-n", type=int, required=True, help="images to keep")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_subset)


def run_subset(args: argparse.Namespace) -> int:
    from tld.preprocessing.shards import sample_shards

    count = sample_shards(args.src, args.out, args.n, args.seed)
    print(f"{count} images sampled from {args.src} -> {args.out}")
    return 0


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="encode shards with a frozen VAE + text encoder into a latent dataset")
    p.add_argument("shards_dir")
    p.add_argument("dataset_dir")
    p.add_argument(
        "--vae",
        default="madebyollin/sdxl-vae-fp16-fix",
        help="hub id, local folder, or 'bundled' (the demo model's own 64 px VAE, works offline)",
    )
    p.add_argument(
        "--latent-scale", type=float, help="latents are divided by this (default: recorded, else 8)"
    )
    p.add_argument(
        "--text-encoder",
        default="open_clip",
        help="open_clip (ViT-L-14 openai), hf_clip, minilm, or a folder",
    )
    p.add_argument("--text-tokens", action="store_true", help="store per-token embeddings + mask")
    p.add_argument("--latent-dtype", default="float16", choices=["float16", "uint8"])
    p.add_argument("--latent-clip", type=float, default=4.0, help="uint8 range is [-clip, clip]")
    p.add_argument("--image-size", type=int, help="center-crop size (default: the shards' image size)")
    p.add_argument("--flip", action="store_true", help="also store every image mirrored (doubles the data)")
    p.add_argument("--sample-posterior", action="store_true", help="sample the VAE posterior, not its mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--val-prompts", help="text file of validation prompts, one per line")
    p.add_argument("--val-holdout", type=int, default=0, help="or hold out the last N images as validation")
    p.add_argument("--resume", action="store_true", help="continue an interrupted encode")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset already in DATASET_DIR: the new one is built beside it and swapped in "
        "only when complete, so a failed or killed run keeps the old one",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the per-shard work files after merging")
    p.add_argument(
        "--layout",
        default="single",
        choices=["single", "parts"],
        help="single: merged arrays (default); parts: one part per shard group, no merge, no second copy "
        "(docs/scale.md)",
    )
    p.add_argument("--shards-per-part", type=int, default=1, help="--layout parts: shards per part")
    p.add_argument(
        "--add", action="store_true", help="--layout parts: append the parts of new shards to DATASET_DIR"
    )
    p.add_argument(
        "--buckets",
        help="--layout parts: aspect-ratio buckets as pixel sizes HxW,HxW,... (e.g. 64x64,48x80,80x48); "
        "each image goes to the nearest aspect ratio, no square crop (docs/scale.md)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_encode)


def run_download(args: argparse.Namespace) -> int:
    from tld.preprocessing.download import DownloadConfig, download

    cfg = DownloadConfig(
        url_col=args.url_col,
        caption_col=args.caption_col,
        image_size=args.image_size,
        resize_mode=args.resize_mode,
        samples_per_shard=args.samples_per_shard,
        processes=args.processes,
        threads=args.threads,
        timeout=args.timeout,
        retries=args.retries,
        distributor=args.distributor,
        overwrite=args.overwrite,
    )
    print(download(args.table, args.out, cfg).format())
    return 0


def run_folder(args: argparse.Namespace) -> int:
    from tld.preprocessing.folder import build_folder_shards

    summary = build_folder_shards(
        args.images_dir,
        args.out,
        captions=args.captions,
        file_col=args.file_col,
        caption_col=args.caption_col,
        image_size=args.image_size or None,
        samples_per_shard=args.samples_per_shard,
        image_format=args.format,
        progress=not args.no_progress,
    )
    print(summary.format())
    return 0


def run_emoji(args: argparse.Namespace) -> int:
    from tld.preprocessing.emoji import ATTRIBUTION, build_emoji_shards

    count, shards = build_emoji_shards(
        args.out,
        args.size,
        args.background,
        args.limit,
        args.samples_per_shard,
        progress=not args.no_progress,
        style=args.style,
        words=args.filter.split(",") if args.filter is not None else None,
        shuffle=args.shuffle,
    )
    print(f"{count} emoji written into {shards} shard(s) in {args.out}\n{ATTRIBUTION}")
    return 0


def run_iconify(args: argparse.Namespace) -> int:
    from tld.preprocessing.iconify import build_iconify_shards

    report = build_iconify_shards(
        args.set,
        args.out,
        size=args.size,
        background=args.background,
        style=args.style,
        limit=args.limit,
        samples_per_shard=args.samples_per_shard,
        cache=args.cache,
        progress=not args.no_progress,
    )
    print(f"{args.set} -> {args.out}: {report.summary()}")
    return 0


def run_fashion_mnist(args: argparse.Namespace) -> int:
    from tld.preprocessing.fashion_mnist import ATTRIBUTION, build_fashion_mnist_shards

    report = build_fashion_mnist_shards(
        args.out,
        source=args.source,
        size=args.size,
        limit=args.limit,
        samples_per_shard=args.samples_per_shard,
        progress=not args.no_progress,
    )
    print(f"Fashion-MNIST -> {args.out}: {report.summary()}\n{ATTRIBUTION}")
    return 0


def run_combine(args: argparse.Namespace) -> int:
    from tld.preprocessing.shards import combine_shards

    n = combine_shards(args.sources, args.out)
    print(f"{n} shard(s) from {len(args.sources)} folder(s) -> {args.out}")
    return 0


def _vae_source(name: str) -> str:
    """'bundled' is the VAE inside the bundled demo model folder; anything else is passed on."""
    if name != "bundled":
        return name
    from tld.pipeline.folder import bundled_model_path

    return str(bundled_model_path() / "vae")


def run_encode(args: argparse.Namespace) -> int:
    from tld.data.buckets import parse_buckets
    from tld.preprocessing.encode import EncodeConfig, encode

    if args.latent_clip <= 0:
        raise TLDError(f"--latent-clip must be > 0, got {args.latent_clip}")
    cfg = EncodeConfig(
        vae=_vae_source(args.vae),
        latent_scale=args.latent_scale,
        text_encoder=args.text_encoder,
        text_tokens=args.text_tokens,
        latent_dtype=args.latent_dtype,
        latent_clip=args.latent_clip,
        image_size=args.image_size,
        flip=args.flip,
        sample_posterior=args.sample_posterior,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        val_prompts=args.val_prompts,
        val_holdout=args.val_holdout,
        overwrite=args.overwrite,
        resume=args.resume,
        keep_work=args.keep_work,
        progress=not args.no_progress,
        layout=args.layout,
        shards_per_part=args.shards_per_part,
        add=args.add,
        buckets=None if args.buckets is None else [list(b) for b in parse_buckets(args.buckets)],
    )
    meta = encode(args.shards_dir, args.dataset_dir, cfg)
    if meta is not None:  # None on non-main processes under accelerate
        failed = meta.extra.get("failed") or {}
        shapes = meta.latent_shape
        if meta.buckets:  # rows per bucket: a bucket with few rows is drawn rarely (docs/scale.md)
            shapes = ", ".join(f"{b['latent_shape']} x {b['rows']}" for b in meta.buckets)
        print(
            f"{meta.count} samples -> {args.dataset_dir}: latents {shapes} {meta.latent_dtype}, "
            f"text {meta.text_dim}-d, {meta.extra.get('val_prompts', 0)} validation prompts; "
            f"skipped {json.dumps(failed) if failed else 'none'}"
        )
    return 0
