"""Colour-word obedience: for every "<colour> <object>" prompt, the share of seeds whose image's
dominant colour (`tld.encoders.colour.dominant_colour`) is the named one, under one or more sampler
settings; and the same check on real images named that way, the ceiling the heuristic allows.

`tld eval colours` (tld/commands/eval.py) prints the table; `tld recipe emoji` runs it on the model it
ships (tld/recipes/emoji.py).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tld.encoders.colour import COLOURS, dominant_colour
from tld.errors import TLDError, check_int
from tld.generation import SamplingDefaults

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline

# The demo model's table: the colours its captions use most, on the three objects every emoji set
# draws in many colours.
DEFAULT_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white")
DEFAULT_OBJECTS = ("heart", "circle", "square")


def check_colour_words(colours: Sequence[str], objects: Sequence[str], seeds: int) -> None:
    """One-line errors for an empty or unknown colour list, no objects, or fewer than one seed."""
    if not colours:
        raise TLDError("no colours given")
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise TLDError(f"unknown colour(s) {', '.join(unknown)}; the classifier knows {', '.join(COLOURS)}")
    if not objects or any(not o.strip() for o in objects):
        raise TLDError(f"objects must be non-empty words, got {list(objects)!r}")
    check_int(seeds, "seeds", 1)


def table_pipeline(
    pipe: TLDPipeline, device: str | None = None, **overrides: Any
) -> tuple[TLDPipeline, SamplingDefaults]:
    """The pipeline (moved to `device` when one is given) and its sampling defaults with the non-None
    `overrides` (cfg, steps, sampler, schedule, cfg_schedule), validated: the setting of a per-prompt
    table (this one, tld.eval.shapes). The caller loads the pipeline (`TLDPipeline.from_pretrained`):
    eval sits below the pipeline layer."""
    if not hasattr(pipe, "sampling") or not callable(pipe):
        raise TLDError(f"expected a TLDPipeline (load one with TLDPipeline.from_pretrained), got {pipe!r}")
    if device is not None:
        pipe.to(device, pipe.dtype)
    settings = pipe.sampling.updated(**overrides)
    settings.validate()
    return pipe, settings


def seeded_images(pipe: TLDPipeline, settings: SamplingDefaults, prompt: str, seeds: int, seed_start: int) -> list[Any]:
    """The images of one prompt for seeds `seed_start ... seed_start + seeds - 1` under `settings`."""
    return pipe(
        prompt, cfg=settings.cfg, steps=settings.steps, sampler=settings.sampler, schedule=settings.schedule,
        cfg_schedule=settings.cfg_schedule or [], seed=list(range(seed_start, seed_start + seeds)), num_images=seeds, progress=False,
    )  # fmt: skip


def settings_record(settings: SamplingDefaults, seed_start: int) -> dict[str, Any]:
    """The sampling setting of a table, as its summary records it."""
    return {"cfg": settings.cfg, "cfg_schedule": settings.cfg_schedule, "steps": settings.steps,
            "sampler": settings.sampler, "schedule": settings.schedule, "seed_start": seed_start}  # fmt: skip


def colour_table(
    pipe: TLDPipeline,
    colours: Sequence[str],
    objects: Sequence[str],
    *,
    seeds: int = 8,
    cfg: float | None = None,
    steps: int | None = None,
    seed_start: int = 0,
    sampler: str | None = None,
    schedule: str | None = None,
    cfg_schedule: str | list[list[float]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Share of seeds `seed_start ... seed_start + seeds - 1` whose dominant colour is the named one,
    per "<colour> <object>" prompt and per colour. None settings are the pipeline's defaults (a `cfg`
    without a `cfg_schedule` is a constant scale)."""
    from tqdm.auto import tqdm

    check_colour_words(colours, objects, seeds)
    pipe, settings = table_pipeline(
        pipe, cfg=cfg, steps=steps, sampler=sampler, schedule=schedule, cfg_schedule=cfg_schedule
    )
    prompts = [(colour, f"{colour} {obj}") for obj in objects for colour in colours]
    rows, t0 = [], time.perf_counter()
    for colour, prompt in tqdm(prompts, desc="colour prompts", unit="prompt", disable=not progress):
        images = seeded_images(pipe, settings, prompt, seeds, seed_start)
        got = [dominant_colour(np.asarray(im.convert("RGB"))) for im in images]
        rows.append({"prompt": prompt, "colour": colour, "hits": sum(g == colour for g in got),
                     "seeds": seeds, "dominant": got})  # fmt: skip
    hits, total = sum(r["hits"] for r in rows), sum(r["seeds"] for r in rows)
    per_colour = {
        c: sum(r["hits"] for r in rows if r["colour"] == c) / (seeds * len(objects)) for c in colours
    }
    return {
        **settings_record(settings, seed_start),
        "rows": rows, "per_colour": per_colour, "overall": hits / total, "images": total,
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def real_colour_ceiling(shards: str | Path, colours: Sequence[str], objects: Sequence[str]) -> dict[str, Any]:
    """The same check on the real images captioned "<colour> <object>" (or "<colour> large <object>"),
    text before the first comma: how often the heuristic agrees with the data, the ceiling for any model."""
    from PIL import Image

    from tld.preprocessing.shards import iter_shard, list_shards

    wanted = {f"{c} {o}": c for c in colours for o in objects} | {
        f"{c} large {o}": c for c in colours for o in objects
    }
    hits = {c: 0 for c in colours}
    seen = {c: 0 for c in colours}
    for shard in list_shards(shards):
        for sample in iter_shard(shard):
            colour = wanted.get(sample["caption"].split(",")[0].strip().lower())
            if colour and sample["image"]:
                image = np.asarray(Image.open(io.BytesIO(sample["image"])).convert("RGB"))
                seen[colour] += 1
                hits[colour] += dominant_colour(image) == colour
    per_colour = {c: hits[c] / seen[c] if seen[c] else None for c in colours}
    return {"per_colour": per_colour, "overall": sum(hits.values()) / max(1, sum(seen.values())),
            "images": sum(seen.values()), "counts": seen}  # fmt: skip


def _setting_name(summary: dict[str, Any]) -> str:
    schedule = f" {summary['schedule']}" if summary.get("schedule") else ""
    pieces = summary.get("cfg_schedule") or []
    above = "".join(f" ({scale:g} at sigma >= {sigma:g})" for sigma, scale in pieces)
    return f"{summary['sampler']}{schedule} {summary['steps']} steps, cfg {summary['cfg']:g}{above}"


def settings_markdown(summaries: Sequence[dict[str, Any]], real: dict[str, Any] | None = None) -> str:
    """One row per colour, one column per sampler setting (share of seeds that got the colour), then the
    real-image ceiling; closing rows: all colours, and the weakest colour."""
    colours = list(summaries[0]["per_colour"])
    head = ["colour", *(_setting_name(s) for s in summaries)] + (["real images (ceiling)"] if real else [])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for colour in colours:
        cells = [f"{s['per_colour'][colour]:.0%}" for s in summaries]
        if real:
            ceiling = real["per_colour"].get(colour)
            cells.append("-" if ceiling is None else f"{ceiling:.0%} of {real['counts'][colour]}")
        lines.append(f"| {colour} | " + " | ".join(cells) + " |")
    overall = [f"**{s['overall']:.1%}**" for s in summaries] + ([f"{real['overall']:.1%}"] if real else [])
    lines.append("| **all** | " + " | ".join(overall) + " |")
    weakest = [min(s["per_colour"].values()) for s in summaries]
    lines.append("| weakest colour | " + " | ".join(f"{w:.0%}" for w in weakest) + (" | |" if real else " |"))
    return "\n".join(lines)
