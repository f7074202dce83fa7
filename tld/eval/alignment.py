"""Offline text alignment: do a generated image's nearest real images carry its prompt?

No CLIP weights exist offline, so the image-text check goes through the real data: for each
generated image, its k nearest real images in feature space are ranked by distance, and the rank
of the first one whose caption equals the prompt is recorded (a miss when none of the k has it).
Top-1/top-5 hit rates and the mean reciprocal rank summarise it; the chance level (what
neighbours drawn at random would score) is reported alongside, since repeated captions raise it.

Exact matches need repeated captions (class names). For unique captions ("red apple, noto style")
the word overlap is the softer score: the mean Jaccard overlap of the prompt's words with the
nearest real image's caption, next to its chance level (the overlap with random real captions).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tld.errors import TLDError, check_int
from tld.eval.metrics import check_features

_WORD = re.compile(r"[a-z0-9]+")


def _normalise(caption: str) -> str:
    return " ".join(caption.lower().split())


def _words(caption: str) -> frozenset[str]:
    return frozenset(_WORD.findall(caption.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass
class AlignmentResult:
    top1: float  # share of images whose nearest real image has the prompt as caption
    top5: float  # ... one of the 5 nearest
    mrr: float  # mean reciprocal rank within the k nearest (0 for a miss)
    chance_top1: float  # expected top1 for random neighbours
    chance_top5: float
    overlap: float  # mean word Jaccard of the prompt with the nearest real image's caption
    chance_overlap: float  # ... with random real captions
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
    check_int(k, "alignment k", 1)
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
    overlap, chance_overlap = _word_overlap(prompts, real_captions, neighbours[:, 0])
    ranks_arr = np.array(ranks)
    hit = ranks_arr > 0
    return AlignmentResult(
        top1=float((ranks_arr == 1).mean()),
        top5=float((hit & (ranks_arr <= 5)).mean()),
        mrr=float(np.where(hit, 1.0 / np.maximum(ranks_arr, 1), 0.0).mean()),
        chance_top1=float(np.mean(chance1)),
        chance_top5=float(np.mean(chance5)),
        overlap=overlap,
        chance_overlap=chance_overlap,
        k=k,
    )


def _word_overlap(
    prompts: Sequence[str], captions: Sequence[str], nearest: np.ndarray, draws: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Mean Jaccard of each prompt with its nearest real caption, and with `draws` random real captions."""
    words = [_words(c) for c in captions]
    rng = np.random.default_rng(seed)
    near, chance = [], []
    for prompt, j in zip(prompts, nearest):
        p = _words(prompt)
        near.append(jaccard(p, words[j]))
        chance.extend(jaccard(p, words[r]) for r in rng.integers(0, len(words), draws))
    return float(np.mean(near)), float(np.mean(chance))
