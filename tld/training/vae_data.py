"""Images for the VAE trainer: every shard decoded once into one uint8 tensor, split, and batched.

Small-image sets (tens of thousands at 64 px) fit in memory many times over (10k x 3 x 64 x 64 =
123 MB), so images are decoded once instead of every epoch. Batch k depends only on (seed, k), like
the denoiser's `StepBatches`, so a resumed run reads exactly the batches the killed run would have.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from tld.data import derive_seed
from tld.encoders.images import decode_sample_image
from tld.errors import TLDError


@dataclass
class ImageSet:
    train: torch.Tensor  # (N, 3, H, W) uint8
    val: torch.Tensor  # (M, 3, H, W) uint8, never trained on
    failed: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        bad = ", ".join(f"{n} {why}" for why, n in sorted(self.failed.items()))
        return f"{len(self.train)} training + {len(self.val)} held-out images" + (
            f"; skipped {bad}" if bad else ""
        )


def load_shard_images(folders: list[str], size: int, progress: bool = True) -> tuple[torch.Tensor, Counter]:
    """All images of the shard folders, centre-cropped and resized to size x size, in shard order."""
    from tld.preprocessing.shards import iter_shard, list_shards

    shards = [s for folder in folders for s in list_shards(folder)]
    failed: Counter = Counter()
    rows: list[np.ndarray] = []
    for shard in tqdm(shards, desc="reading shards", unit="shard", disable=not progress):
        for sample in iter_shard(shard):
            image = decode_sample_image(sample["image"], size, failed)
            if image is not None:
                rows.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    if not rows:
        bad = f" ({dict(failed)})" if failed else ""
        raise TLDError(f"no decodable images in {len(shards)} shard(s) of {', '.join(folders)}{bad}")
    return torch.from_numpy(np.stack(rows)), failed


def split_images(images: torch.Tensor, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random hold-out (sources are often sorted by name; the last rows would be one theme)."""
    if holdout >= len(images):
        raise TLDError(f"val_holdout={holdout} leaves no training images out of {len(images)}")
    order = np.random.default_rng(derive_seed(seed, 0x5A1)).permutation(len(images))
    return images[order[holdout:]], images[order[:holdout]]


def batch_at(images: torch.Tensor, step: int, batch_size: int, seed: int, flip: bool) -> torch.Tensor:
    """Micro-batch `step` as float in [-1, 1]: consecutive slices of per-epoch permutations."""
    n = len(images)
    positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    index = np.empty_like(positions)
    for epoch in np.unique(positions // n):
        sel = positions // n == epoch
        perm = np.random.default_rng(derive_seed(seed, 0xBA7C, int(epoch))).permutation(n)
        index[sel] = perm[positions[sel] % n]
    x = images[torch.from_numpy(index)].float().div_(127.5).sub_(1.0)
    if flip:
        mirror = np.random.default_rng(derive_seed(seed, 0xF11B, step)).random(batch_size) < 0.5
        x[torch.from_numpy(mirror)] = x[torch.from_numpy(mirror)].flip(-1)
    return x
