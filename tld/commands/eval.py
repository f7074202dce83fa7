"""`tld eval fid|sweep`: FID/KID/precision-recall of a model against real images; `tld eval colours`:
colour-word obedience (`tld eval shapes`, shape words: eval_shapes.py); `tld eval train-classifier`: the
FID classifier of a class-labelled set."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from tld.errors import TLDError
from tld.eval.metrics import SmallSampleWarning


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser(
        "eval",
        help="FID, KID, precision/recall and alignment of generated images",
        description="Score a model's images against real ones (docs/eval.md).",
    )
    sub = e.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    e.set_defaults(func=lambda args: (e.print_help(), 2)[1])

    f = sub.add_parser("fid", help="one sampler setting", description="Generate N images and score them.")
    _add_common(f)
    f.add_argument("--sampler", required=True, help="sampler name, e.g. dpmpp_2m, heun, euler")
    f.add_argument("--steps", type=int, required=True, help="sampling steps")
    f.add_argument("--schedule", help="sigma schedule, e.g. tld, karras, exponential (default: the model's)")
    f.add_argument("--cfg", type=float, help="guidance scale (default: the model's)")
    f.add_argument("--out", help="write the results as JSON to this file")
    f.set_defaults(func=run_fid)

    _add_sweep(sub)
    _add_colours(sub)
    from tld.commands.eval_shapes import add_shapes  # `tld eval shapes`, in its own module

    add_shapes(sub)

    c = sub.add_parser(
        "train-classifier",
        help="train the FID classifier on a class-labelled shard folder",
        description="Train a small CNN on shards whose samples carry a 'label' (e.g. preprocess "
        "fashion-mnist); its features are --extractor classifier --classifier OUT.",
    )
    c.add_argument("train", help="class-labelled shard folder to train on")
    c.add_argument("out", help="classifier folder to write (classifier.json + classifier.safetensors)")
    c.add_argument("--test", help="class-labelled shard folder for the reported test accuracy")
    c.add_argument("--epochs", type=int, default=3)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--lr", type=float, default=2e-3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--input-size", type=int, default=32, help="images are centre-cropped/resized to this")
    c.add_argument("--limit", type=int, help="only the first N training images")
    c.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    c.add_argument("--no-progress", dest="progress", action="store_false")
    c.set_defaults(func=run_train_classifier)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sweep",
        help="a grid over sampler x steps x schedule x cfg",
        description="Score every combination; each cell is cached, so a rerun resumes. Writes results.md, "
        "results.csv and fid_vs_nfe.png to --out.",
    )
    _add_common(s)
    s.add_argument("--samplers", required=True, help="comma-separated sampler names")
    s.add_argument("--steps", required=True, help="comma-separated step counts, e.g. 5,10,15,25")
    s.add_argument(
        "--schedules", default="default", help="comma-separated schedules ('default' = the model's)"
    )
    s.add_argument(
        "--cfgs", default="default", help="comma-separated guidance scales ('default' = the model's)"
    )
    s.add_argument(
        "--option", action="append", dest="options", metavar="JSON",
        help="one more value of the options axis, a JSON object of pipeline options such as "
        '\'{"sampler_opts": {"eta": 0.5}}\' or \'{"threshold": {"percentile": 0.995}}\'; "none" = no options; '
        "repeat for several (default: none)",
    )  # fmt: skip
    s.add_argument(
        "--out", required=True, help="output folder (cells/, results.md, results.csv, fid_vs_nfe.png)"
    )
    s.set_defaults(func=run_sweep)


def _add_colours(sub: argparse._SubParsersAction) -> None:
    from tld.eval.colours import DEFAULT_COLOURS, DEFAULT_OBJECTS

    c = sub.add_parser(
        "colours",
        help='colour-word obedience: "<colour> <object>" prompts against their images\' dominant colour',
        description='For every "<colour> <object>" prompt and seed, is the dominant colour of the image '
        "the named one? One column per guidance scale; --data adds the same check on the real images "
        "captioned that way (the ceiling of the heuristic).",
    )
    c.add_argument("--model", help="model folder or hub repo id (default: the bundled model)")
    c.add_argument("--colours", default=",".join(DEFAULT_COLOURS), help="comma-separated colour words")
    c.add_argument("--objects", default=",".join(DEFAULT_OBJECTS), help="comma-separated object words")
    c.add_argument("--seeds", type=int, default=8, help="seeds per prompt (default 8)")
    c.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    c.add_argument(
        "--cfgs", default="default", help="comma-separated guidance scales ('default' = the model's)"
    )
    c.add_argument(
        "--cfg-schedule", action="append", dest="cfg_schedules", metavar="SIGMA:SCALE[,...]",
        help="guidance by noise level, e.g. '2:4' (scale 4 while sigma >= 2, the --cfgs value below); "
        "'none' = a constant scale; repeat for more columns (default: the model's schedule with its "
        "cfg, none with a --cfgs value)",
    )  # fmt: skip
    c.add_argument("--sampler", help="sampler (default: the model's)")
    c.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    c.add_argument("--schedule", help="sigma schedule (default: the model's)")
    c.add_argument("--data", help="shard folder of real images: adds the real-image ceiling column")
    c.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    c.add_argument("--out", help="write every prompt's result as JSON to this file")
    c.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    c.set_defaults(func=run_colours)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder or hub repo id")
    p.add_argument("--data", required=True, help="real images: a shard folder (*.tar) or a folder of images")
    p.add_argument(
        "-n", "--num-images", dest="n", type=int, default=5000, help="images generated per setting"
    )
    p.add_argument("--real-n", type=int, help="real images in the reference (default: = -n)")
    p.add_argument(
        "--extractor",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (offline, default), inception, or classifier (with --classifier)",
    )
    p.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (default: download)")
    p.add_argument("--classifier", help="classifier folder from `tld eval train-classifier`")
    p.add_argument("--batch-size", type=int, default=16, help="images per pipeline call (default 16)")
    p.add_argument("--seed", type=int, default=0, help="image k uses seed + k (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", help="pipeline dtype: float32, float16 or bfloat16")
    p.add_argument(
        "--cache-dir", help="reference statistics cache (default $TLD_EVAL_CACHE or ~/.cache/tld/eval)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _split(text: str, kind: type, what: str) -> list[Any]:
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part == "default" and kind is not int:
            values.append(None)
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise TLDError(
                f"{what} must be comma-separated {kind.__name__}s, got {part!r} in {text!r}"
            ) from None
    if not values:
        raise TLDError(f"{what} is empty: {text!r}")
    return values


def _setup(args: argparse.Namespace):
    """Check the cheap inputs first, then load the extractor, the pipeline and the reference set."""
    from tld.eval.evaluate import EvalConfig, generation_identity
    from tld.eval.extractors import load_extractor
    from tld.eval.reference import dataset_fingerprint, files_fingerprint, reference_set

    config = EvalConfig(n=args.n, seed=args.seed, batch_size=args.batch_size, progress=args.progress)
    config.validate()
    real_n = args.n if args.real_n is None else args.real_n
    data_key = dataset_fingerprint(args.data)  # a missing or empty data folder fails here, before any loading
    extractor = load_extractor(
        args.extractor, args.device, inception_weights=args.inception_weights, classifier=args.classifier
    )
    from tld import TLDPipeline

    pipe = TLDPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    model = Path(args.model)
    ref = reference_set(args.data, extractor, pipe.default_size, real_n, args.cache_dir, args.progress)
    identity = {
        "model": str(args.model),
        # A hub id is its own identity; a folder is also identified by its files.
        "model_files": files_fingerprint(model, sorted(model.rglob("*"))) if model.is_dir() else "",
        "data": str(Path(args.data).resolve()),
        "data_files": data_key,
        "extractor": extractor.name,
        "n_real": len(ref.features),
        **generation_identity(pipe),
    }
    return config, extractor, pipe, ref, identity


def _summary(r: dict[str, Any]) -> str:
    return (
        f"FID {r['fid']:.3f}  KID {r['kid_mean']:.5f} +- {r['kid_std']:.5f}  precision {r['precision']:.3f}  "
        f"recall {r['recall']:.3f}  caption top-1 {r['align_top1']:.3f} (chance {r['align_chance_top1']:.3f})  "
        f"NFE {r['nfe']}  [{r['n']} generated vs {r['n_real']} real, {r['extractor']}]"
        + (f"  class accuracy {r['class_accuracy']:.3f}" if "class_accuracy" in r else "")
    )


def _report_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Print each distinct small-sample warning once, as one line; return them."""
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, SmallSampleWarning)})
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    return notes


def run_fid(args: argparse.Namespace) -> int:
    from tld.eval.evaluate import SampleSettings, evaluate_setting

    settings = SampleSettings(sampler=args.sampler, steps=args.steps, schedule=args.schedule, cfg=args.cfg)
    settings.validate()
    config, extractor, pipe, ref, identity = _setup(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        result = evaluate_setting(pipe, ref, extractor, settings, config)
    notes = _report_warnings(caught)
    print(_summary(result))
    if args.out:
        from tld.common import write_json_atomic

        write_json_atomic(args.out, {"identity": identity, "result": result, "warnings": notes})
        print(f"wrote {args.out}")
    return 0


def run_train_classifier(args: argparse.Namespace) -> int:
    from tld.eval.classifier_train import ClassifierTrainConfig, train_classifier

    cfg = ClassifierTrainConfig(
        train=args.train,
        out=args.out,
        test=args.test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        input_size=args.input_size,
        limit=args.limit,
        device=args.device,
        progress=args.progress,
    )
    record = train_classifier(cfg)
    test = (
        "no test set" if record["test_accuracy"] is None else f"test accuracy {record['test_accuracy']:.4f}"
    )
    print(
        f"classifier -> {args.out}: {record['train_images']} training images, {record['steps']} steps in "
        f"{record['seconds']:.0f} s; {test} on {record['test_images']} images"
    )
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from tld.eval.sweep import SweepGrid
    from tld.eval.sweep import run_sweep as sweep

    grid = SweepGrid(
        samplers=_split(args.samplers, str, "--samplers"),
        steps=_split(args.steps, int, "--steps"),
        schedules=_split(args.schedules, str, "--schedules"),
        cfgs=_split(args.cfgs, float, "--cfgs"),
        options=[None if o.strip().lower() == "none" else o for o in (args.options or ["none"])],
    )
    grid.cells()  # bad names fail before anything loads
    config, extractor, pipe, ref, identity = _setup(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SmallSampleWarning)
        result = sweep(pipe, ref, extractor, grid, config, args.out, identity)
    _report_warnings(caught)
    print(f"{result.computed} cell(s) computed, {result.reused} reused from {Path(args.out) / 'cells'}")
    for path in result.paths.values():
        print(f"wrote {path}")
    print(json.dumps({"best_fid": min(r["fid"] for r in result.rows)}))
    return 0


def run_colours(args: argparse.Namespace) -> int:
    from tld import TLDPipeline
    from tld.diffusion.guidance import parse_cfg_schedule
    from tld.eval.colours import check_colour_words, colour_table, real_colour_ceiling, settings_markdown

    colours = _split(args.colours, str, "--colours")
    objects = _split(args.objects, str, "--objects")
    cfgs = _split(args.cfgs, float, "--cfgs")
    schedules = args.cfg_schedules or ["default"]
    for spec in schedules:
        if spec != "default":
            parse_cfg_schedule(spec)  # before any loading; "none" is a constant scale
    check_colour_words(colours, objects, args.seeds)  # before any loading
    if args.data and not Path(args.data).is_dir():
        raise TLDError(f"--data {args.data}: no such folder")
    pipe = TLDPipeline.from_pretrained(args.model, device=args.device)
    summaries = [
        colour_table(
            pipe,
            colours,
            objects,
            seeds=args.seeds,
            cfg=cfg,
            steps=args.steps,
            seed_start=args.seed,
            sampler=args.sampler,
            schedule=args.schedule,
            cfg_schedule=None if spec == "default" else spec,
            progress=args.progress,
        )
        for cfg in cfgs
        for spec in schedules
    ]
    real = real_colour_ceiling(args.data, colours, objects) if args.data else None
    print(settings_markdown(summaries, real))
    if args.out:
        from tld.common import write_json_atomic

        write_json_atomic(args.out, {"model": args.model or "bundled", "settings": summaries, "real": real})
        print(f"wrote {args.out}")
    return 0
