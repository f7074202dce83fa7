"""Offline text alignment: do a generated image's nearest real images carry its prompt?

No CLIP weights exist offline, so the image-text check goes through the real data: for each
generated image, its k nearest real images in feature space are ranked by distance, and the rank
of the first one whose caption equals the prompt is recorded (a miss when none of the k has it).
Top-1/top-5 hit rates and the mean reciprocal rank summarise it; the chance level (what
neighbours drawn at random would score) is reported alongside, since repeated captions raise it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tld.errors import TLDError
from tld.eval.metrics import check_features


def _normalise(caption: str) -> str:
    return " ".join(caption.lower().split())


@dataclass
class AlignmentResult:
    top1: float  # share of images whose nearest real image has the prompt as caption
    top5: float  # ... one of the 5 nearest
    mrr: float  # mean reciprocal rank within the k nearest (0 for a miss)
    chance_top1: float  # expected top1 for random neighbours
    chance_top5: float
    k: int

    def to_dict(self) -> dict[str, float]:
        return {f"align_{key}": value for key, value in asdict(self).items()}


def nearest_real(gen: np.ndarray, real: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices (N_gen, k) of each generated row's k nearest real rows, nearest first."""
    out = np.empty((len(gen), k), dtype=np.int64)
    real_sq = (real * real).sum(1)
    for start in range(0, len(gen), chunk):
        g = gen[start : start + chunk]
        d = real_sq[None, :] - 2 * g @ real.T  # |g|^2 is the same along a row
        part = (
            np.argpartition(d, k - 1, axis=1)[:, :k]
            if k < len(real)
            else np.tile(np.arange(len(real)), (len(g), 1))
        )
        order = np.take_along_axis(d, part, 1).argsort(axis=1, kind="stable")
        out[start : start + chunk] = np.take_along_axis(part, order, 1)
    return out


def caption_rank_alignment(
    gen_features: np.ndarray,
    prompts: Sequence[str],
    real_features: np.ndarray,
    real_captions: Sequence[str],
    k: int = 10,
) -> AlignmentResult:
    """Rank each prompt among the captions of its image's k nearest real images (see module doc)."""
    gen = check_features(gen_features, "generated features", min_rows=1)
    real = check_features(real_features, "real features", min_rows=1)
    if gen.shape[1] != real.shape[1]:
        raise TLDError(f"feature dimensions differ: {gen.shape[1]} vs {real.shape[1]}")
    if len(prompts) != len(gen) or len(real_captions) != len(real):
        raise TLDError(
            f"need one prompt per generated image and one caption per real image; got {len(prompts)} "
            f"for {len(gen)} and {len(real_captions)} for {len(real)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise TLDError(f"alignment k must be an integer >= 1, got {k!r}")
    k = min(k, len(real))
    captions = np.array([_normalise(c) for c in real_captions])
    counts = Counter(captions.tolist())
    neighbours = nearest_real(gen, real, k)
    ranks, chance1, chance5 = [], [], []
    for prompt, row in zip(prompts, neighbours):
        p = _normalise(prompt)
        hits = np.flatnonzero(captions[row] == p)
        ranks.append(int(hits[0]) + 1 if len(hits) else 0)
        share = counts.get(p, 0) / len(real)
        chance1.append(share)
        chance5.append(1 - (1 - share) ** min(5, k))
    ranks_arr = np.array(ranks)
    hit = ranks_arr > 0
    return AlignmentResult(
        top1=float((ranks_arr == 1).mean()),
        top5=float((hit & (ranks_arr <= 5)).mean()),
        mrr=float(np.where(hit, 1.0 / np.maximum(ranks_arr, 1), 0.0).mean()),
        chance_top1=float(np.mean(chance1)),
        chance_top5=float(np.mean(chance5)),
        k=k,
    )
