"""`tld generate`, `tld img2img`, `tld inpaint`, `tld outpaint` and `tld convert`.

Every PNG written carries its prompt(s), seed(s) and settings in a text chunk that
`tld.pipeline.images.read_png_metadata` reads back (and a human-readable "parameters" copy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tld.errors import TLDError, check_number


def register(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser(
        "generate",
        help="text to image with a model folder (or the original TLD weights)",
        description="Sample images for one or more prompts and save them as PNG (settings in the metadata).",
    )
    g.add_argument("prompt", nargs="*", help="one or more prompts (or --prompts-file)")
    g.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="one prompt per line (blank lines and lines starting with # are skipped): one PNG per line "
        "(per image with -n), named OUTPUT_STEM_line<N>_seed<S>.png; line N uses seed + (N - 1) * n",
    )
    _add_common(g)
    g.add_argument("--height", type=int, help="image height in pixels (default: the trained size)")
    g.add_argument("--width", type=int, help="image width in pixels (default: the trained size)")
    g.add_argument(
        "--class-label",
        dest="class_labels",
        type=int,
        nargs="+",
        help="class-conditional models: the class of each prompt (one label, or one per prompt); "
        "the prompts then only name the images",
    )
    g.set_defaults(func=run_generate)

    i = subparsers.add_parser("img2img", help="redraw an image guided by a prompt")
    i.add_argument("image", help="input image file")
    i.add_argument("prompt", nargs="+")
    _add_common(i)
    i.add_argument(
        "--strength", type=float, default=0.6, help="0 keeps the image, 1 ignores it (default 0.6)"
    )
    i.set_defaults(func=run_img2img)

    p = subparsers.add_parser("inpaint", help="repaint the white part of a mask")
    p.add_argument("image", help="input image file")
    p.add_argument("mask", help="mask image of the same size: white = repaint, black = keep")
    p.add_argument("prompt", nargs="+")
    _add_common(p)
    _add_inpaint(p, composite_default=False)
    p.set_defaults(func=run_inpaint)

    o = subparsers.add_parser("outpaint", help="extend an image's canvas and fill the new border")
    o.add_argument("image", help="input image file")
    o.add_argument("prompt", nargs="+")
    _add_common(o)
    for side in ("left", "right", "top", "bottom"):
        o.add_argument(f"--{side}", type=int, default=0, help=f"pixels to add on the {side}")
    _add_inpaint(o, composite_default=True)
    o.set_defaults(func=run_outpaint)
    _register_convert(subparsers)


def _register_convert(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser(
        "convert",
        help="turn the original TLD checkpoint into a model folder",
        description="Write a model folder from the original release's state_dict_378000.pth; its VAE and "
        "CLIP are recorded as hub ids and downloaded when the folder is first loaded.",
    )
    c.add_argument("state_dict", help="original checkpoint (.pth), e.g. state_dict_378000.pth")
    c.add_argument("-o", "--output", required=True, help="model folder to write")
    c.add_argument("--vae", default=None, help="VAE hub id (default madebyollin/sdxl-vae-fp16-fix)")
    c.add_argument("--clip-model", default="ViT-L-14", help="open_clip model name (default ViT-L-14)")
    c.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag (default openai)")
    c.add_argument(
        "--variant",
        choices=("released", "main"),
        default="released",
        help="which upstream network trained the checkpoint: 'released' (the published weights; "
        "post-norm) or 'main' (upstream's main branch; pre-norm). Default released",
    )
    c.set_defaults(func=run_convert)


def _add_common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="model folder or hub repo id (default: the bundled demo model)")
    src.add_argument("--original", metavar="PTH", help="the original TLD checkpoint (state_dict_378000.pth)")
    p.add_argument("--cfg", type=float, help="guidance scale (default: the model's own)")
    p.add_argument(
        "--cfg-schedule", metavar="SIGMA:SCALE[,...]",
        help="guidance by noise level: '2:4' guides with 4 while sigma >= 2 and with --cfg below; "
        "'none' = constant (default: the model's schedule, none when --cfg is given)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's, usually 15)")
    p.add_argument("--sampler", help="sampler name, e.g. dpmpp_2m, euler_ancestral, heun, ddim")
    p.add_argument("--schedule", help="sigma schedule, e.g. tld, karras, exponential")
    p.add_argument(
        "--seed", type=int, help="seed of the first image; image k uses seed + k (default: random)"
    )
    p.add_argument("-n", "--num-images", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--negative", dest="negative_prompt", help="negative prompt (default: the null condition)")
    p.add_argument("--sharp", dest="sharp_f", type=float, help="original TLD sharpness nudge (e.g. 0.1)")
    p.add_argument("--bright", dest="bright_f", type=float, help="original TLD brightness nudge (e.g. 0.1)")
    p.add_argument("--threshold", type=float, help="clamp the guided x0 latents to [-T, T]")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH[:SCALE]",
        help="load a LoRA adapter folder (`tld train --lora`) at SCALE (default 1); repeat for several",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float16 on CUDA)")
    p.add_argument("-o", "--output", default="out.png", help="PNG file to write (default out.png)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--grid", dest="separate", action="store_false", help="one grid image (default)")
    layout.add_argument(
        "--separate", dest="separate", action="store_true", help="one file per image: out_0.png, out_1.png..."
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser (pays off on a GPU)")
    p.add_argument(
        "--vae-tile", type=int, default=0, help="decode in tiles of this many latent pixels (large images)"
    )
    p.set_defaults(separate=False)  # two actions share the dest; argparse would take --grid's True


def _add_inpaint(p: argparse.ArgumentParser, composite_default: bool) -> None:
    p.add_argument("--feather", type=float, default=0.0, help="soften the mask border (latent cells)")
    p.add_argument("--resample", type=int, default=1, help="RePaint passes per step (default 1 = off)")
    p.add_argument(
        "--composite",
        action=argparse.BooleanOptionalAction,
        default=composite_default,
        help="paste the input's pixels over the kept region",
    )


def _load(args: argparse.Namespace):
    from tld.pipeline import TLDPipeline

    adapters = [parse_lora(spec) for spec in getattr(args, "lora", None) or []]
    if args.original:
        pipe = TLDPipeline.from_original(args.original, device=args.device, dtype=args.dtype)
    else:
        pipe = TLDPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    if args.compile:
        pipe.compile()
    if args.vae_tile:
        pipe.vae.tile = args.vae_tile
    for path, scale in adapters:
        pipe.load_lora(path, scale=scale)
    return pipe


def parse_lora(spec: str) -> tuple[str, float]:
    """'PATH[:SCALE]' -> (PATH, SCALE); the path must be an adapter folder (checked before loading)."""
    path, scale = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            path, scale = head, float(tail)
        except ValueError:
            pass  # a ':' inside the path
    if not (Path(path) / "adapter_config.json").is_file():
        raise TLDError(f"--lora expects an adapter folder (with adapter_config.json)[:SCALE], got {spec!r}")
    return path, scale


def _call_args(args: argparse.Namespace) -> dict[str, Any]:
    names = ("cfg", "steps", "sampler", "schedule", "seed", "num_images", "negative_prompt", "progress")
    call = {n: getattr(args, n) for n in names}
    call.update(
        {n: getattr(args, n) for n in ("sharp_f", "bright_f", "threshold") if getattr(args, n) is not None}
    )
    if args.cfg_schedule is not None:
        call["cfg_schedule"] = args.cfg_schedule  # "none" is a constant scale (parse_cfg_schedule)
    return call


def _prompt(args: argparse.Namespace) -> str | list[str]:
    return args.prompt[0] if len(args.prompt) == 1 else list(args.prompt)


def save_output(out, output: str | Path, separate: bool, source: str) -> list[Path]:
    """Write a TLDOutput as one grid PNG or one PNG per image, with settings in the metadata."""
    from tld.pipeline.images import numbered_paths, output_images, save_png

    pairs = output_images(out, source, separate)
    paths = numbered_paths(output, len(pairs))
    return [save_png(image, path, meta) for (image, meta), path in zip(pairs, paths)]


def model_source(args: argparse.Namespace) -> str:
    """What the PNG metadata records as the model: the folder or hub id, the original checkpoint,
    or the bundled model's name when neither was given."""
    if args.original:
        return f"original:{args.original}"
    if args.model:
        return str(args.model)
    from tld.pipeline.folder import BUNDLED_MODEL

    return f"bundled:{BUNDLED_MODEL}"


def _finish(args: argparse.Namespace, out) -> int:
    source = model_source(args)
    print(used_settings(args, out.settings, out.seeds), file=sys.stderr)
    for path in save_output(out, args.output, args.separate, source):
        print(path)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    _check_output(args.output)
    if bool(args.prompt) == bool(args.prompts_file):
        raise TLDError("give the prompts on the command line or with --prompts-file FILE (one of the two)")
    if args.prompts_file:
        return generate_from_file(args)
    _check_sizes(args, None, height=args.height, width=args.width)
    pipe = _load(args)
    size = dict(height=args.height, width=args.width)
    return _finish(args, pipe(_prompt(args), **size, class_labels=args.class_labels, **_call_args(args)))


def run_img2img(args: argparse.Namespace) -> int:
    from tld.encoders.images import load_image

    _check_output(args.output)
    check_number(args.strength, "strength", 0, 1)
    image = load_image(args.image)
    _check_sizes(args, "the input image's sides", width=image.width, height=image.height)
    pipe = _load(args)
    return _finish(args, pipe.img2img(image, _prompt(args), strength=args.strength, **_call_args(args)))


def run_inpaint(args: argparse.Namespace) -> int:
    from tld.encoders.images import load_image

    _check_output(args.output)
    image, mask = load_image(args.image), load_image(args.mask)
    _check_sizes(args, "the input image's sides", width=image.width, height=image.height)
    pipe = _load(args)
    opts = dict(feather=args.feather, resample=args.resample, composite=args.composite)
    return _finish(args, pipe.inpaint(image, mask, _prompt(args), **opts, **_call_args(args)))


def run_outpaint(args: argparse.Namespace) -> int:
    from tld.encoders.images import load_image

    _check_output(args.output)
    margins = dict(left=args.left, right=args.right, top=args.top, bottom=args.bottom)
    _check_sizes(args, "outpaint margins", **margins)
    image = load_image(args.image)
    _check_sizes(args, "the input image's sides", width=image.width, height=image.height)
    pipe = _load(args)
    opts = dict(feather=args.feather, resample=args.resample, composite=args.composite)
    return _finish(args, pipe.outpaint(image, _prompt(args), **margins, **opts, **_call_args(args)))


def run_convert(args: argparse.Namespace) -> int:
    from tld.pipeline import ORIGINAL_VAE, TLDPipeline

    text = {"backend": "open_clip", "model": args.clip_model, "pretrained": args.clip_pretrained}
    folder = TLDPipeline.convert_original(
        args.state_dict, args.output, vae=args.vae or ORIGINAL_VAE, text_encoder=text, variant=args.variant
    )
    print(json.dumps({"model_folder": str(folder), "vae": args.vae or ORIGINAL_VAE, "text_encoder": text}))
    return 0


def used_settings(args: argparse.Namespace, settings: dict[str, Any], seeds: list[int]) -> str:
    """One line naming the model defaults a run used (what the command line left out) and its seed."""
    given = {"cfg_schedule": args.cfg_schedule is not None or args.cfg is not None}
    shown = []
    for name in ("cfg", "cfg_schedule", "steps", "sampler", "schedule"):
        value = settings.get(name)
        if value not in (None, "repaint_ddim") and not given.get(name, getattr(args, name) is not None):
            text = ",".join(f"{s:g}:{w:g}" for s, w in value) if name == "cfg_schedule" else value
            shown.append(f"{name}={text}")
    line = f"model defaults: {' '.join(shown)}" if shown else "model defaults: none used"
    if args.seed is None:
        line += f"; random seed {seeds[0]} (--seed {seeds[0]} repeats this run)"
    return line


def _check_sizes(args: argparse.Namespace, what: str | None, **sizes: int | None) -> None:
    # A local model folder's pixel step is known from its config files: refuse before loading it.
    if not args.original:
        from tld.pipeline.folder import check_pixel_multiples

        check_pixel_multiples(args.model, sizes, what)


def _check_output(output: str) -> None:
    # Fail before minutes of loading and sampling, not after.
    if Path(output).suffix.lower() != ".png":
        raise TLDError(f"expected an output path ending in .png, got {output!r}")


def read_prompts_file(path: str) -> list[tuple[int, str]]:
    """(line number, prompt) of every non-blank line of `path` not starting with '#'."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TLDError(f"cannot read --prompts-file {path}: {exc}") from None
    rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    rows = [(n, p) for n, p in rows if p and not p.startswith("#")]
    if not rows:
        raise TLDError(f"--prompts-file {path} holds no prompts")
    return rows


def generate_from_file(args: argparse.Namespace, chunk: int = 16) -> int:
    """One PNG per line (per image with -n), named by line number and seed; seeds stable per line."""
    import secrets

    from tld.pipeline.images import output_images, save_png

    rows = read_prompts_file(args.prompts_file)
    _check_sizes(args, None, height=args.height, width=args.width)
    pipe = _load(args)
    n = args.num_images
    base = secrets.randbelow(2**31) if args.seed is None else args.seed
    call = {**_call_args(args), "num_images": n}
    out_path, source = Path(args.output), model_source(args)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        seeds = [base + (line - 1) * n + k for line, _ in part for k in range(n)]
        call["seed"] = seeds
        out = pipe([p for _, p in part], height=args.height, width=args.width, **call)
        names = [(line, seed) for (line, _), seed in zip([r for r in part for _ in range(n)], seeds)]
        for (image, meta), (line, seed) in zip(output_images(out, source, True), names):
            path = out_path.with_name(f"{out_path.stem}_line{line}_seed{seed}{out_path.suffix}")
            print(save_png(image, path, meta))
    if args.seed is None:
        print(f"random seed {base} (--seed {base} repeats this run)", file=sys.stderr)
    return 0
