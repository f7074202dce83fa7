"""The epoch permutation of the training sampler, in memory that does not grow with the rows.

Up to EXACT_ROWS rows an epoch is `rng.permutation(n)` (the order every earlier run used). Beyond,
a table of n int64 would cost 8 bytes a row (800 MB at 100M rows) and seconds to draw, so the
permutation is computed instead: a 4-round Feistel network over the smallest even-bit domain >= n,
keyed from the same rng, with cycle-walking to stay inside [0, n). It is a bijection of [0, n), so
each epoch still shows every row exactly once, and any position is mapped in O(1).
"""

from __future__ import annotations

import numpy as np

EXACT_ROWS = 1 << 20
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


class FeistelPermutation:
    """perm[positions] for a keyed pseudo-random permutation of range(n); stores only its keys."""

    def __init__(self, n: int, keys: np.ndarray):
        self.n = int(n)
        bits = max(2, int(self.n - 1).bit_length())
        self.half = np.uint64((bits + 1) // 2)
        self.mask = np.uint64((1 << int(self.half)) - 1)
        self.keys = np.asarray(keys, dtype=np.uint64)

    def __len__(self) -> int:
        return self.n

    def _round_fn(self, r: np.ndarray, key: np.uint64) -> np.ndarray:
        z = (r + key) * _M1
        z ^= z >> np.uint64(31)
        z *= _M2
        z ^= z >> np.uint64(29)
        z *= _M3
        return (z ^ (z >> np.uint64(32))) & self.mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._round_fn(right, key)
        return (left << self.half) | right

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.n):
            raise IndexError(f"position out of range for a permutation of {self.n}")
        y = self._encrypt(x.astype(np.uint64))
        outside = y >= np.uint64(self.n)
        while outside.any():  # cycle-walking: at most a few steps, the domain is < 4n
            y[outside] = self._encrypt(y[outside])
            outside = y >= np.uint64(self.n)
        return y.astype(np.int64)


def epoch_permutation(rng: np.random.Generator, n: int) -> np.ndarray | FeistelPermutation:
    """The permutation of one epoch: an array for small n, else a FeistelPermutation (O(1) memory)."""
    if n <= EXACT_ROWS:
        return rng.permutation(n)
    return FeistelPermutation(n, rng.integers(0, 1 << 62, size=4, dtype=np.int64).astype(np.uint64))
