"""Colour words for captions that lack them: "frog face, noto style" -> "green frog face, noto style".

Emoji names rarely say a colour: of the ~15k emoji captions only the few hundred hearts, circles and
squares start with one, so a text-to-image model sees too few examples to learn what "blue" means.
This pass measures each image's foreground colours with the same HSV rules as the colour-word check
(`tld.encoders.colour`) and, where one colour clearly dominates, writes its name in front of the caption.
Captions that already name a colour, images with no clear dominant colour, and unreadable images
keep their caption unchanged (an image that will not decode is left out, as `encode` would skip it);
every decision is counted. The original caption stays in each
sample's json as `caption_original`, and the added word as `colour_word`.

Caption variants (`add_caption_variants`): every sample is copied, and a sample whose caption matches
a pattern is written a second time with the match taken out. The emoji captions all end in the set's
style ("red heart, noto style"); a model trained only on those sees "red heart" as a caption it never
met and blends the four sets into a smudge. The style-free copy teaches the short prompt as well.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tld.preprocessing.shards import (
    Sample,
    iter_shard,
    list_shards,
    read_source_info,
    write_shards,
    write_source_info,
)
from tqdm.auto import tqdm

from tld.encoders.colour import CHROMATIC, COLOURS, colour_histogram, colour_words
from tld.errors import TLDError


@dataclass
class ColourTagRules:
    """When an image counts as having one clear colour.

    Chromatic: hue classes cover at least `min_chromatic` of the foreground, and the top hue class at
    least `min_share` of those. Achromatic (black/white/grey): hues cover at most `max_chromatic` and
    the top achromatic class at least `min_share` of the foreground.
    """

    min_share: float = 0.6
    min_chromatic: float = 0.4
    max_chromatic: float = 0.1

    def validate(self) -> None:
        for name in ("min_share", "min_chromatic", "max_chromatic"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TLDError(f"{name} must be in [0, 1], got {value}")


def clear_colour(image: np.ndarray, rules: ColourTagRules | None = None) -> str | None:
    """The one colour that dominates a uint8 (H, W, 3) image's foreground, or None."""
    rules = rules or ColourTagRules()
    hist = colour_histogram(image)
    hues = hist[list(CHROMATIC)]
    chroma = float(hues.sum())
    if chroma >= rules.min_chromatic and hues.max() >= rules.min_share * chroma:
        return COLOURS[int(hues.argmax())]
    if chroma <= rules.max_chromatic:
        rest = hist[len(CHROMATIC) :]
        if rest.max() >= rules.min_share:
            return COLOURS[len(CHROMATIC) + int(rest.argmax())]
    return None


def with_colour(caption: str, colour: str) -> str:
    """Put the colour word in front of the caption's first part (the object's name)."""
    return f"{colour} {caption.strip()}"


@dataclass
class RecaptionReport:
    total: int = 0
    tagged: Counter[str] = field(default_factory=Counter)  # colour word -> images given it
    already_named: int = 0  # captions that name a colour already
    unclear: int = 0  # several colours, or too little colour to call
    unreadable: int = 0  # images that would not decode: left out (encode would skip them too)

    def summary(self) -> str:
        tagged = sum(self.tagged.values())
        words = ", ".join(f"{k} {v}" for k, v in self.tagged.most_common())
        return (
            f"{self.total} images: {tagged} given a colour word ({words}); {self.already_named} already "
            f"named one; {self.unclear} had no clear colour; {self.unreadable} unreadable images dropped"
        )


def _decoded(shards: list[Path], desc: str, progress: bool) -> Iterator[tuple[Image.Image | None, str, dict]]:
    """(image or None when it will not decode, caption, json without key and caption) per sample."""
    bar = tqdm(desc=desc, unit="img", disable=not progress)
    for shard in shards:
        for raw in iter_shard(shard):
            bar.update()
            try:
                image = Image.open(io.BytesIO(raw["image"] or b"")).convert("RGB")
            except (UnidentifiedImageError, OSError, ValueError):
                image = None
            meta = {k: v for k, v in raw["json"].items() if k not in ("key", "caption")}
            yield image, raw["caption"], meta
    bar.close()


def _recaptioned(
    shards: list[Path], rules: ColourTagRules, report: RecaptionReport, progress: bool
) -> Iterator[Sample]:
    for image, caption, meta in _decoded(shards, "colour words", progress):
        report.total += 1
        if image is None:
            report.unreadable += 1
            continue
        if colour_words(caption):
            report.already_named += 1
        elif (colour := clear_colour(np.asarray(image), rules)) is not None:
            report.tagged[colour] += 1
            meta.update(caption_original=caption, colour_word=colour)
            caption = with_colour(caption, colour)
        else:
            report.unclear += 1
        yield Sample(image, caption, meta)


def _fresh_output(src: str | os.PathLike, out: str | os.PathLike, what: str) -> list[Path]:
    """The shards of `src`, after checking that `out` is a new, empty or half-written shard folder."""
    shards = list_shards(src)
    out = Path(out)
    if out.resolve() == Path(src).resolve():
        raise TLDError(f"{what} write new shards: pass an output folder other than {src}")
    if (out / "tld-source.meta").is_file():
        raise TLDError(f"{out} already holds finished shards; write into a new or empty folder")
    if out.is_dir():
        other = [p.name for p in out.iterdir() if not p.name.endswith((".tar", ".tar.tmp"))]
        if other:
            raise TLDError(
                f"{out} holds other files ({', '.join(sorted(other)[:3])}); use a new or empty folder"
            )
        for partial in out.iterdir():  # a killed run's shards are rewritten
            partial.unlink()
    return shards


def add_colour_words(
    src: str | os.PathLike,
    out: str | os.PathLike,
    rules: ColourTagRules | None = None,
    samples_per_shard: int = 10000,
    progress: bool = True,
) -> RecaptionReport:
    """Copy the shards of `src` into `out` with colour words added to the captions (see module doc).

    Images are stored as PNG (lossless); the source record is copied, with this step noted. A
    finished `out` (one with its source record) is refused; a half-written one is started over.
    """
    rules = rules or ColourTagRules()
    rules.validate()
    shards = _fresh_output(src, out, "colour words")
    report = RecaptionReport()
    samples = _recaptioned(shards, rules, report, progress)
    write_shards(samples, out, samples_per_shard, image_format="png")
    info = read_source_info(src) or {"source": str(Path(src).resolve())}
    info["captions"] = f"colour words added by `tld preprocess colour-words`: {report.summary()}"
    write_source_info(out, info)  # written last: it marks the folder finished
    return report


STYLE_SUFFIX = r",\s*[\w-]+ style\s*$"  # "red heart, noto style" -> "red heart"


def _variants(
    shards: list[Path], pattern: re.Pattern[str], counts: Counter[str], progress: bool
) -> Iterator[Sample]:
    for image, caption, meta in _decoded(shards, "caption variants", progress):
        counts["total"] += 1
        if image is None:
            counts["unreadable"] += 1
            continue
        yield Sample(image, caption, meta)
        short = " ".join(pattern.sub(" ", caption).split()).strip(" ,")
        if short and short != caption.strip():
            counts["variants"] += 1
            yield Sample(image, short, {**meta, "caption_variant_of": caption})


def add_caption_variants(
    src: str | os.PathLike,
    out: str | os.PathLike,
    strip: str = STYLE_SUFFIX,
    samples_per_shard: int = 10000,
    progress: bool = True,
) -> dict[str, int]:
    """Copy the shards of `src` into `out`, adding for each caption that the regex `strip` matches a
    second sample with the matches removed (see module doc). Returns counts: total, variants, unreadable.
    """
    try:
        pattern = re.compile(strip, re.IGNORECASE)
    except re.error as e:
        raise TLDError(f"caption variants: --strip {strip!r} is not a regular expression ({e})") from None
    shards = _fresh_output(src, out, "caption variants")
    counts: Counter[str] = Counter(total=0, variants=0, unreadable=0)
    write_shards(_variants(shards, pattern, counts, progress), out, samples_per_shard, image_format="png")
    if not counts["variants"]:
        raise TLDError(f"caption variants: no caption of the {counts['total']} in {src} matches {strip!r}")
    info = read_source_info(src) or {"source": str(Path(src).resolve())}
    info["caption_variants"] = f"{counts['variants']} captions also written with the regex `{strip}` cut out"
    write_source_info(out, info)  # written last: it marks the folder finished
    return dict(counts)
