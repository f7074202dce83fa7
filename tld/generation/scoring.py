"""Generate N seeded images in batches and score them: the one loop behind `tld eval`, its sweeps and
the FID monitor of training.

Image k uses seed `seed + k` and row k of whatever the sampling callable conditions on, so a run's
images do not depend on the batch size. The callable draws; the scorer measures (FID and friends
live in `tld.eval`, above this layer); this module only batches, seeds, counts and times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from tld.errors import check_int

# rows (image indices start..stop-1), their seeds -> uint8 (len(rows), H, W, 3)
SampleFn = Callable[[range, list[int]], np.ndarray]
# uint8 (N, H, W, 3) -> named scores
ScoreFn = Callable[[np.ndarray], dict[str, Any]]


@dataclass
class Scored:
    """N generated images, the scorer's values for them and what making them cost."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    scores: dict[str, Any]  # empty without a scorer
    nfe: int  # the most network calls one batch made (0: not counted)
    sample_seconds: float  # drawing the images
    seconds: float  # drawing and scoring

    @property
    def n(self) -> int:
        return len(self.images)


def generate_and_score(
    sample: SampleFn,
    n: int,
    seed: int,
    batch_size: int,
    *,
    score: ScoreFn | None = None,
    counted: nn.Module | None = None,
    progress: bool = False,
    desc: str = "sampling",
) -> Scored:
    """Images 0..n-1 in batches of `batch_size`, image k from seed + k, then `score` on them.

    `counted`: a module whose forward calls per batch are the NFE (a guided step's batched
    cond/uncond call counts once).
    """
    check_int(n, "the number of images", 1)
    check_int(batch_size, "batch_size", 1)
    calls = [0]
    handle = None
    if counted is not None:
        handle = counted.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out, nfe, start = [], 0, time.perf_counter()
    try:
        for first in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
            rows = range(first, min(first + batch_size, n))
            calls[0] = 0
            out.append(sample(rows, [seed + k for k in rows]))
            nfe = max(nfe, calls[0])
    finally:
        if handle is not None:
            handle.remove()
    images, sampled = np.concatenate(out), time.perf_counter() - start
    scores = score(images) if score is not None else {}
    return Scored(images, scores, nfe, sampled, time.perf_counter() - start)
