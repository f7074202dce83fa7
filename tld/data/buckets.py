"""Aspect-ratio buckets: a dataset in parts may hold latents of several shapes, one shape per part.

Encode (`--buckets 64x64,48x80,80x48`, pixel height x width) sends each image to the bucket whose
aspect ratio is nearest (distance of log aspect ratios, ties to the first listed), resized to cover it
and centre-cropped by the least amount, so no image is cut down to a square. meta.json lists the
buckets (`DatasetMeta.buckets`: image size, latent shape and training rows of each); the first is the
dataset's `latent_shape` (the model's latent_size). A dataset without the key has one shape.

Training draws each batch from one bucket: `BucketSchedule` picks the bucket of step k with
probability proportional to its rows, from (seed, k) alone, and counts how often that bucket was
drawn before k, so the rows of a bucket come from its own endless stream of shuffled epochs and a
resumed run continues the same sequence. `BucketRows` maps a bucket's positions to global rows
through the parts' kept row ranges, without any per-row table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tld.errors import TLDError

# Bucket sizes in pixels must be multiples of the VAE's downsample factor times this: the default
# patch size, so every bucket's latent splits into whole patches.
PATCH_MULTIPLE = 2
SCHEDULE_BLOCK = 1024  # steps whose buckets are drawn together (one rng per block)


def parse_buckets(text: str) -> list[tuple[int, int]]:
    """'64x64,48x80' -> [(64, 64), (48, 80)] (pixel height x width); a one-line TLDError otherwise."""
    sizes = []
    for item in str(text).split(","):
        h, sep, w = item.strip().lower().partition("x")
        if not sep or not h.isdigit() or not w.isdigit() or int(h) <= 0 or int(w) <= 0:
            raise TLDError(
                f"--buckets takes pixel sizes HxW separated by commas (e.g. 64x64,48x80), got {text!r}"
            )
        sizes.append((int(h), int(w)))
    return sizes


def check_buckets(buckets: list[tuple[int, int]], factor: int) -> None:
    """Refuse an empty list, repeated sizes, and sizes that are not multiples of factor x PATCH_MULTIPLE."""
    step = factor * PATCH_MULTIPLE
    if not buckets:
        raise TLDError("--buckets needs at least one size HxW")
    if len(set(map(tuple, buckets))) != len(buckets):
        raise TLDError(f"--buckets lists a size twice: {_text(buckets)}")
    bad = [f"{h}x{w}" for h, w in buckets if h % step or w % step]
    if bad:
        raise TLDError(
            f"bucket sizes must be multiples of {step} pixels (VAE factor {factor} x {PATCH_MULTIPLE}), "
            f"got {', '.join(bad)}"
        )


def _text(buckets: list[tuple[int, int]]) -> str:
    return ",".join(f"{h}x{w}" for h, w in buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> int:
    """Index of the bucket whose aspect ratio is nearest the image's (log ratios; ties: first listed)."""
    ratio = math.log(width / height)
    distances = [round(abs(ratio - math.log(w / h)), 9) for h, w in buckets]  # rounded: exact ties
    return distances.index(min(distances))


def bucket_records(parts: list[Any], buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """meta.json's `buckets`: each one's image size, latent shape and training rows over `parts`."""
    rows = {tuple(b["latent_shape"]): 0 for b in buckets}
    for part in parts:
        shape = tuple(part.arrays["latents.npy"]["shape"][1:])
        rows[shape] += sum(b - a for a, b in part.kept_ranges())
    return [{**b, "rows": rows[tuple(b["latent_shape"])]} for b in buckets]


def check_bucket_parts(root: Any, meta: Any, parts: list[Any]) -> None:
    """meta.json's buckets against the parts: first bucket = latent_shape, rows per shape as recorded."""
    where = f"meta.json of {root}"
    shapes = [list(b.get("latent_shape") or []) for b in meta.buckets]
    if meta.layout != "parts" or not shapes or shapes[0] != list(meta.latent_shape):
        raise TLDError(f"{where}: buckets need layout 'parts' and the first bucket's shape as latent_shape")
    have = bucket_records(parts, meta.buckets)
    wrong = [
        f"{r['latent_shape']}: {r['rows']}" for r, b in zip(have, meta.buckets) if r["rows"] != b.get("rows")
    ]
    if wrong:
        raise TLDError(f"{where}: the parts hold other bucket row counts than recorded ({'; '.join(wrong)})")


class BucketRows:
    """Global rows of each latent shape of a PartedArray, as segments (start row, length) of its kept ranges."""

    def __init__(self, latents: Any, shapes: list[tuple[int, ...]]):
        part_shape = [tuple(p.arrays["latents.npy"]["shape"][1:]) for p in latents.parts]
        seg_shape = [shapes.index(part_shape[int(p)]) for p in latents.seg_part]
        self.shapes = shapes
        self.starts, self.cum = [], []
        for b in range(len(shapes)):
            sel = np.flatnonzero(np.array(seg_shape, dtype=np.int64) == b)
            self.starts.append(latents.offsets[sel].astype(np.int64))
            lengths = latents.offsets[sel + 1] - latents.offsets[sel]
            self.cum.append(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def count(self, b: int) -> int:
        return int(self.cum[b][-1])

    def rows(self, b: int, positions: np.ndarray) -> np.ndarray:
        """Global rows at positions 0..count(b)-1 of bucket b (in dataset order)."""
        positions = np.asarray(positions, dtype=np.int64)
        seg = np.searchsorted(self.cum[b], positions, side="right") - 1
        return self.starts[b][seg] + positions - self.cum[b][seg]

    def all_rows(self, b: int) -> np.ndarray:
        return self.rows(b, np.arange(self.count(b), dtype=np.int64))


class BucketSchedule:
    """The bucket of every step, drawn with probability proportional to `weights` from (seed, step).

    `draw(k)` returns (bucket, r): r is how many earlier steps drew the same bucket, i.e. the
    position of step k in that bucket's own batch stream. Steps are drawn in blocks of
    SCHEDULE_BLOCK; the running counts at each block start are kept (a few bytes per block)."""

    def __init__(self, seed: int, weights: list[int]):
        total = float(sum(weights))
        if total <= 0:
            raise TLDError("the bucket sampler needs at least one row")
        self.seed, self.p = int(seed), np.asarray(weights, dtype=np.float64) / total
        self._starts = [np.zeros(len(weights), dtype=np.int64)]  # counts before each block
        self._block, self._labels = -1, np.empty(0, dtype=np.int64)

    def labels(self, block: int) -> np.ndarray:
        if block != self._block:
            rng = np.random.default_rng([self.seed, 0xB0C7, block])
            self._block = block
            self._labels = rng.choice(len(self.p), size=SCHEDULE_BLOCK, p=self.p).astype(np.int64)
        return self._labels

    def draw(self, k: int) -> tuple[int, int]:
        block, offset = divmod(int(k), SCHEDULE_BLOCK)
        while len(self._starts) <= block:
            done = len(self._starts) - 1
            self._starts.append(self._starts[-1] + np.bincount(self.labels(done), minlength=len(self.p)))
        labels = self.labels(block)
        bucket = int(labels[offset])
        return bucket, int(self._starts[block][bucket] + np.count_nonzero(labels[:offset] == bucket))
