"""`tld eval shapes`: shape-word obedience ("red heart" drawn as a heart?), next to `tld eval colours`."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from tld.errors import TLDError


def add_shapes(sub: argparse._SubParsersAction) -> None:
    from tld.eval.colours import DEFAULT_COLOURS
    from tld.eval.shapes import DEFAULT_SHAPES, SHAPES

    s = sub.add_parser(
        "shapes",
        help='shape-word obedience: does "<colour> <shape>" come out as that shape?',
        description='For every "<colour> <shape>" prompt and seed, the shape the image shows (its object\'s '
        f"silhouette against templates of {', '.join(SHAPES)}, or none). --data adds the same check on "
        "the real images captioned with a shape, which the classifier must pass first; --data-only runs "
        "only that check.",
    )
    s.add_argument("--model", help="model folder or hub repo id (default: the bundled model)")
    s.add_argument("--colours", default=",".join(DEFAULT_COLOURS), help="comma-separated colour words")
    s.add_argument(
        "--shapes", default=",".join(DEFAULT_SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}"
    )
    s.add_argument("--seeds", type=int, default=8, help="seeds per prompt (default 8)")
    s.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    s.add_argument("--suffix", default="", help="text after every prompt, e.g. ', noto style' (default none)")
    s.add_argument("--cfg", type=float, help="guidance scale (default: the model's)")
    s.add_argument(
        "--cfg-schedule", metavar="SIGMA:SCALE[,...]",
        help="guidance by noise level, e.g. '2:4'; 'none' = a constant scale (default: the model's)",
    )  # fmt: skip
    s.add_argument("--sampler", help="sampler (default: the model's)")
    s.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    s.add_argument("--schedule", help="sigma schedule (default: the model's)")
    s.add_argument(
        "--data", action="append", metavar="SHARDS",
        help="shard folder of real images (repeatable): adds the classifier's score on those captioned "
        "'<colour> <shape>'",
    )  # fmt: skip
    s.add_argument("--data-only", action="store_true", help="score only the real images (no model)")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    s.add_argument("--out", help="write every verdict as JSON to this file")
    s.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    s.set_defaults(func=run_shapes)


def _words(text: str, what: str) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise TLDError(f"{what} is empty: {text!r}")
    return words


def run_shapes(args: argparse.Namespace) -> int:
    from tld.diffusion.guidance import parse_cfg_schedule
    from tld.eval.shapes import (
        ShapeRules,
        check_shape_words,
        real_shape_accuracy,
        shape_table,
        shapes_markdown,
    )

    colours, shapes = _words(args.colours, "--colours"), _words(args.shapes, "--shapes")
    check_shape_words(colours, shapes, args.seeds)  # before any loading
    if args.cfg_schedule:
        parse_cfg_schedule(args.cfg_schedule)
    if args.data_only and not args.data:
        raise TLDError("--data-only needs --data SHARDS")
    for folder in args.data or []:
        if not Path(folder).is_dir():
            raise TLDError(f"--data {folder}: no such folder")
    real = real_shape_accuracy(args.data, shapes) if args.data else None
    summary = None
    if not args.data_only:
        from tld import TLDPipeline

        pipe = TLDPipeline.from_pretrained(args.model, device=args.device)
        summary = shape_table(
            pipe, colours, shapes, seeds=args.seeds, seed_start=args.seed, progress=args.progress,
            cfg=args.cfg, steps=args.steps, sampler=args.sampler, schedule=args.schedule,
            cfg_schedule=args.cfg_schedule, suffix=args.suffix,
        )  # fmt: skip
    print(shapes_markdown(summary, real))
    if args.out:
        from tld.common import write_json_atomic

        record = {"model": None if args.data_only else args.model or "bundled", "rules": asdict(ShapeRules()),
                  "settings": summary, "real": real}  # fmt: skip
        write_json_atomic(args.out, record)
        print(f"wrote {args.out}")
    return 0
