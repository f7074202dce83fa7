"""Shape-word obedience: does the image of "<colour> <shape>" show the named shape?

The object is the largest connected part of the foreground (`tld.encoders.colour.foreground_mask`:
pixels unlike the border colour, plus the background they enclose), with its holes filled. Its
silhouette is cropped to its bounding box and stretched to a square grid, then compared by soft
intersection-over-union with templates of each shape drawn and normalised the same way: rounded
squares of several corner radii, a disc, hearts with several lobe spacings and depths, five-pointed
stars, triangles pointing up and down, a rhombus. The image gets the shape of its best template when
that template fits well (IoU >= `min_iou`), beats every other shape by `min_margin`, and the box's
aspect ratio suits the shape; otherwise, and when the object is tiny or spans the frame from edge to
edge, it is "none".

Validated on the real emoji first (`tld eval shapes --data SHARDS --data-only`, docs/eval.md): on the
bundled model's four emoji sets it names 174 of the 175 hearts, circles, squares, stars, triangles and
diamonds (the miss is OpenMoji's "white square", drawn as a 5:8 rectangle).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from tld.encoders.colour import COLOURS, foreground_mask
from tld.errors import TLDError

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline

SHAPES = ("heart", "circle", "square", "star", "triangle", "diamond")
NONE = "none"
DEFAULT_SHAPES = ("heart", "circle", "square")
# Width / height of the object's box each shape allows (hearts are wider than tall, triangles too).
ASPECT = {"heart": (0.8, 1.5), "circle": (0.8, 1.25), "square": (0.8, 1.25), "star": (0.8, 1.3),
          "triangle": (0.7, 1.6), "diamond": (0.5, 1.6)}  # fmt: skip
_SIZE_WORDS = {"large", "medium", "small", "medium-small", "light", "dark"}


@dataclass(frozen=True)
class ShapeRules:
    """The thresholds of the verdict (module doc); the defaults were set on the real emoji."""

    min_iou: float = 0.90
    min_margin: float = 0.05
    min_area: float = 0.02  # share of the image the object must cover
    grid: int = 48
    # RGB distance from the border colour that counts as foreground: half the object's contrast (its
    # 99th-percentile distance), so faint objects (Twemoji's light-grey "white circle") keep their
    # anti-aliased rim, within these bounds
    tolerance: float = 40.0
    min_tolerance: float = 12.0
    upsample: int = 4


@dataclass
class ShapeVerdict:
    shape: str  # one of SHAPES, or NONE
    scores: dict[str, float]  # best template IoU per shape (0 where the aspect ratio rules it out)
    area: float  # share of the image the object covers
    aspect: float  # width / height of its box

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "scores": {k: round(v, 4) for k, v in self.scores.items()},
                "area": round(self.area, 4), "aspect": round(self.aspect, 4)}  # fmt: skip


def object_mask(image: np.ndarray, tolerance: float = 40.0, min_tolerance: float = 12.0) -> np.ndarray:
    """The largest 8-connected foreground part of a uint8 (H, W, 3) image, holes filled (ShapeRules
    has the tolerances)."""
    from scipy import ndimage

    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float64)
    distance = np.linalg.norm(image.astype(np.float64) - np.median(border, axis=0), axis=-1)
    contrast = float(np.percentile(distance, 99))
    mask = foreground_mask(image, max(min_tolerance, min(tolerance, contrast / 2)))
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == 1 + int(sizes.argmax()))


def normalise(mask: np.ndarray, grid: int) -> np.ndarray:
    """A non-empty boolean mask cropped to its box and stretched to grid x grid, as soft coverage in [0, 1]."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    im = Image.fromarray(crop.astype(np.uint8) * 255)
    resample = Image.Resampling.BOX if min(crop.shape) >= grid else Image.Resampling.BILINEAR
    return np.asarray(im.resize((grid, grid), resample), np.float64) / 255


def _polygon(points: Iterable[tuple[float, float]], scale: float) -> list[tuple[float, float]]:
    return [(x * scale, y * scale) for x, y in points]


def _heart(draw: ImageDraw.ImageDraw, s: float, spread: float, depth: float) -> None:
    """Two lobes of radius 1 at (+-spread, 0) and the hull of their lower halves with the point (0, depth)."""
    ox, oy = spread + 1.5, 1.5  # the picture's origin, so every coordinate is positive
    from scipy.spatial import ConvexHull

    arc = [(math.cos(a), math.sin(a)) for a in np.linspace(0, math.pi, 48)]
    points = np.array(
        [(ox + side * spread + x, oy + y) for side in (-1, 1) for x, y in arc] + [(ox, oy + depth)]
    )
    hull = points[ConvexHull(points).vertices]  # the sides are the tangents from the point to the lobes
    draw.polygon(_polygon(map(tuple, hull), s), fill=255)
    for cx in (ox - spread, ox + spread):
        draw.ellipse([(cx - 1) * s, (oy - 1) * s, (cx + 1) * s, (oy + 1) * s], fill=255)


def _star(draw: ImageDraw.ImageDraw, s: float, inner: float) -> None:
    angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    pts = [(1.2 + (1 if k % 2 == 0 else inner) * math.cos(a), 1.2 + (1 if k % 2 == 0 else inner) * math.sin(a))
           for k, a in enumerate(angles)]  # fmt: skip
    draw.polygon(_polygon(pts, s), fill=255)


def _rounded(draw: ImageDraw.ImageDraw, s: float, radius: float) -> None:
    draw.rounded_rectangle([0, 0, 2 * s, 2 * s], radius=2 * s * radius, fill=255)


def _drawings() -> list[tuple[str, Any, float]]:
    """(shape, function drawing it white on a black canvas at scale s, corner rounding as a share of s)
    for every template: the emoji sets round the corners of their triangles, diamonds and stars."""
    corners = (0.0, 0.15, 0.3)
    out: list[tuple[str, Any, float]] = [
        ("circle", lambda d, s: d.ellipse([0, 0, 2 * s, 2 * s], fill=255), 0.0)
    ]
    for r in corners:
        out += [
            ("triangle", lambda d, s: d.polygon(_polygon([(1, 0), (2, 1.75), (0, 1.75)], s), fill=255), r),
            ("triangle", lambda d, s: d.polygon(_polygon([(0, 0), (2, 0), (1, 1.75)], s), fill=255), r),
            ("diamond", lambda d, s: d.polygon(_polygon([(1, 0), (2, 1), (1, 2), (0, 1)], s), fill=255), r),
        ]
        out += [("star", functools.partial(_star, inner=inner), r / 2) for inner in (0.38, 0.45, 0.52)]
    for radius in (0.0, 0.1, 0.2, 0.3):  # corner radius as a share of the side
        out.append(("square", functools.partial(_rounded, radius=radius), 0.0))
    for spread in (0.55, 0.75, 0.95):
        for depth in (1.9, 2.3, 2.7):
            out.append(("heart", functools.partial(_heart, spread=spread, depth=depth), 0.0))
    return out


def round_corners(mask: np.ndarray, radius: float) -> np.ndarray:
    """The mask opened by a disc of `radius` pixels: convex corners become arcs of that radius."""
    from scipy import ndimage

    core = ndimage.distance_transform_edt(mask) > radius
    return ndimage.distance_transform_edt(~core) <= radius


@functools.lru_cache(maxsize=4)
def templates(grid: int) -> tuple[tuple[str, np.ndarray], ...]:
    """Every template as (shape, normalised soft mask), drawn at 4x the grid's scale and normalised
    like the images."""
    out = []
    for shape, draw_fn, rounding in _drawings():
        canvas = Image.new("L", (12 * grid, 12 * grid), 0)
        draw_fn(ImageDraw.Draw(canvas), 2 * grid)
        mask = np.asarray(canvas) > 127
        if rounding:
            mask = round_corners(mask, rounding * 2 * grid)
        out.append((shape, normalise(mask, grid)))
    return tuple(out)


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-9))


def classify_shape(image: np.ndarray | Image.Image, rules: ShapeRules | None = None) -> ShapeVerdict:
    """The shape an image shows (module doc), with the evidence."""
    rules = rules or ShapeRules()
    picture = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image)
    # Segmented at `upsample` x the size, bilinearly: the threshold then cuts the anti-aliased rim
    # between pixels, which keeps a small object's thin points (a star's) in its silhouette.
    big = picture.resize(
        (picture.width * rules.upsample, picture.height * rules.upsample), Image.Resampling.BILINEAR
    )
    mask = object_mask(np.asarray(big), rules.tolerance, rules.min_tolerance)
    area = float(mask.mean())
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    spans = area > 0 and (
        (cols[0], cols[-1]) == (0, mask.shape[1] - 1) or (rows[0], rows[-1]) == (0, mask.shape[0] - 1)
    )
    if area < rules.min_area or spans:  # nothing there, or no object on a background but the whole frame
        return ShapeVerdict(NONE, {s: 0.0 for s in SHAPES}, area, 1.0)
    aspect = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    silhouette = normalise(mask, rules.grid)
    scores = {s: 0.0 for s in SHAPES}
    for shape, template in templates(rules.grid):
        lo, hi = ASPECT[shape]
        if lo <= aspect <= hi:
            scores[shape] = max(scores[shape], soft_iou(silhouette, template))
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    best, second = scores[ranked[0]], scores[ranked[1]]
    shape = ranked[0] if best >= rules.min_iou and best - second >= rules.min_margin else NONE
    return ShapeVerdict(shape, scores, area, float(aspect))


def named_shape(caption: str) -> str | None:
    """The shape a caption names as "[colour/size words] <shape>" before its first comma ("red heart,
    noto style", "black large square", "red triangle pointed up", "star"), else None."""
    words = caption.split(",")[0].strip().lower().split()
    if len(words) >= 3 and words[-2] == "pointed":
        words = words[:-2]
    if not words or words[-1] not in SHAPES:
        return None
    return words[-1] if all(w in COLOURS or w in _SIZE_WORDS for w in words[:-1]) else None


def check_shape_words(colours: Sequence[str], shapes: Sequence[str], seeds: int) -> None:
    """One-line errors for unknown colours or shapes, and fewer than one seed."""
    from tld.eval.colours import check_colour_words

    check_colour_words(colours, shapes, seeds)
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise TLDError(f"unknown shape(s) {', '.join(unknown)}; the classifier knows {', '.join(SHAPES)}")


def _tally(named: Sequence[str], got: Sequence[str], shapes: Sequence[str]) -> dict[str, Any]:
    """Accuracy per named shape and overall, and the verdicts each named shape got."""
    seen = {s: sum(n == s for n in named) for s in shapes}
    hits = {s: sum(n == g == s for n, g in zip(named, got, strict=True)) for s in shapes}
    verdicts = {s: {v: sum(n == s and g == v for n, g in zip(named, got, strict=True))
                    for v in (*SHAPES, NONE)} for s in shapes}  # fmt: skip
    return {
        "per_shape": {s: hits[s] / seen[s] if seen[s] else None for s in shapes},
        "counts": seen,
        "verdicts": {s: {v: c for v, c in row.items() if c} for s, row in verdicts.items()},
        "overall": sum(hits.values()) / max(1, sum(seen.values())),
        "images": sum(seen.values()),
    }


def real_shape_accuracy(
    folders: Sequence[str | Path], shapes: Sequence[str] = SHAPES, rules: ShapeRules | None = None
) -> dict[str, Any]:
    """The classifier on the real images whose caption names one of `shapes` (`named_shape`), in one or
    more shard folders: it must score these near 100% before it scores a model. Lists the misses."""
    from tld.preprocessing.shards import iter_shard, list_shards

    named, got, misses = [], [], []
    for folder in folders:
        for shard in list_shards(folder):
            for sample in iter_shard(shard):
                shape = named_shape(sample["caption"])
                if shape not in shapes or not sample["image"]:
                    continue
                verdict = classify_shape(Image.open(io.BytesIO(sample["image"])), rules)
                named.append(shape)
                got.append(verdict.shape)
                if verdict.shape != shape:
                    misses.append({"caption": sample["caption"], "folder": str(folder), **verdict.to_dict()})
    return {**_tally(named, got, shapes), "misses": misses}


def shape_table(
    pipe: TLDPipeline,
    colours: Sequence[str],
    shapes: Sequence[str] = DEFAULT_SHAPES,
    *,
    seeds: int = 8,
    seed_start: int = 0,
    rules: ShapeRules | None = None,
    progress: bool = False,
    suffix: str = "",
    **overrides: Any,
) -> dict[str, Any]:
    """For every "<colour> <shape>" prompt (+ `suffix`, e.g. ", noto style"), the shape each of seeds
    `seed_start ...` shows; accuracy per shape, per colour and overall. `overrides` are the sampling
    settings (cfg, steps, sampler, schedule, cfg_schedule; None = the pipeline's), as
    `tld.eval.colours.colour_table` takes them."""
    import time

    from tqdm.auto import tqdm

    from tld.eval.colours import seeded_images, settings_record, table_pipeline

    check_shape_words(colours, shapes, seeds)
    pipe, settings = table_pipeline(pipe, **overrides)
    prompts = [(colour, shape) for shape in shapes for colour in colours]
    rows, t0 = [], time.perf_counter()
    for colour, shape in tqdm(prompts, desc="shape prompts", unit="prompt", disable=not progress):
        prompt = f"{colour} {shape}{suffix}"
        got = [
            classify_shape(im, rules).shape for im in seeded_images(pipe, settings, prompt, seeds, seed_start)
        ]
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "hits": got.count(shape),
                     "seeds": seeds, "verdicts": got})  # fmt: skip
    named = [r["shape"] for r in rows for _ in r["verdicts"]]
    tally = _tally(named, [v for r in rows for v in r["verdicts"]], shapes)
    per_colour = {
        c: sum(r["hits"] for r in rows if r["colour"] == c) / (seeds * len(shapes)) for c in colours
    }
    return {**settings_record(settings, seed_start), "rows": rows, **tally, "per_colour": per_colour,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def _verdict_cell(verdicts: dict[str, int]) -> str:
    return ", ".join(f"{v} {c}" for v, c in sorted(verdicts.items(), key=lambda kv: -kv[1])) or "-"


def shapes_markdown(summary: dict[str, Any] | None, real: dict[str, Any] | None = None) -> str:
    """One row per shape: the model's share of images with the named shape and what they showed, then
    the same for the real images; the closing row is all shapes."""
    table = [t for t in (summary, real) if t]
    if not table:
        raise TLDError("nothing to tabulate: no model table and no real images")
    head = ["shape"]
    if summary:
        head += ["model: named shape", "model: verdicts"]
    if real:
        head += ["real images: named shape", "real images: verdicts"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for shape in table[0]["per_shape"]:
        cells = []
        for t in table:
            share = t["per_shape"][shape]
            cells += [
                "-" if share is None else f"{share:.0%} of {t['counts'][shape]}",
                _verdict_cell(t["verdicts"][shape]),
            ]
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    overall = [cell for t in table for cell in (f"**{t['overall']:.1%}** of {t['images']}", "")]
    lines.append("| **all** | " + " | ".join(overall) + " |")
    return "\n".join(lines)
