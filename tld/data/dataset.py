"""Latent datasets for training: memory-mapped arrays served as deterministic, resumable batches.

Batch k of a run depends only on (seed, k, rank): sample order is a fresh permutation per epoch
drawn from (seed, epoch) (of the rows repeated by their balance counts, if any; see
tld/data/balance.py), and flips from (seed, k, rank). Resuming at step k therefore needs no
sampler state, and any number of DataLoader workers gives the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tld.data.buckets import BucketRows, BucketSchedule
from tld.data.format import LABELS, LATENTS, TEXT_EMB, LatentArrays, open_latent_dataset
from tld.data.parts import PartedArray
from tld.data.shuffle import epoch_permutation
from tld.errors import TLDError


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of ints; nearby tuples give unrelated streams."""
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


@dataclass
class Batch:
    latents: torch.Tensor  # (B, C, H, W) float32
    text_emb: torch.Tensor | None  # (B, D) or (B, T, D) float32
    text_mask: torch.Tensor | None  # (B, T) bool
    labels: torch.Tensor | None  # (B,) long

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.latents), move(self.text_emb), move(self.text_mask), move(self.labels))


def pool_tokens(tokens: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean over the real tokens: the pooled view of per-token embeddings."""
    if mask is None:
        return tokens.mean(axis=1)
    weights = mask.astype(np.float32)[..., None]
    return (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


class LatentDataset:
    """A validated, memory-mapped latent dataset with the chosen condition."""

    def __init__(
        self,
        folder: str | os.PathLike,
        condition: str = "text",
        text: str = "auto",
        check_finite: bool = True,
    ):
        if condition not in ("text", "class", "none"):
            raise TLDError(f"data.condition must be 'text', 'class' or 'none', got {condition!r}")
        if text not in ("auto", "pooled", "tokens"):
            raise TLDError(f"data.text must be 'auto', 'pooled' or 'tokens', got {text!r}")
        self.arrays: LatentArrays = open_latent_dataset(folder)
        if len(self.arrays) == 0:
            raise TLDError(f"latent dataset {folder} holds no samples; encode images into it first")
        self.condition = condition
        stored_tokens = self.arrays.text_emb.ndim == 3
        if text == "tokens" and not stored_tokens:
            raise TLDError(
                f"data.text='tokens' but {folder} holds pooled text embeddings {self.arrays.text_emb.shape}"
            )
        self.tokens = stored_tokens if text == "auto" else text == "tokens"
        self.labels = self._load_labels(self.arrays.folder) if condition == "class" else None
        # Values were checked when the parts were written (opening refuses a part recorded with
        # NaN/Inf); here each batch is checked as it is read, so start-up reads no array data.
        self.check_finite = check_finite

    def _load_labels(self, folder: Path) -> np.ndarray | PartedArray:
        parts = self.arrays.parts
        if parts is not None:
            if not parts or any(LABELS not in p.arrays for p in parts):
                raise TLDError(f"data.condition='class' needs {LABELS} in every part of {folder}")
            self._label_max = max(int(p.label_max if p.label_max is not None else -1) for p in parts)
            return PartedArray(folder, parts, LABELS, self.arrays.latents.opener)
        path = folder / LABELS
        if not path.is_file():
            raise TLDError(f"data.condition='class' needs {path} ((N,) integer class labels)")
        labels = np.load(path, allow_pickle=False)
        if labels.shape != (len(self),) or not np.issubdtype(labels.dtype, np.integer):
            raise TLDError(f"{path} must be ({len(self)},) integers, got {labels.shape} {labels.dtype}")
        self._label_max = int(labels.max()) if len(labels) else -1
        return labels

    def _check_batch(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """One-line TLDError naming the file (part) and row of the first NaN/Inf in a batch just read."""
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if not bad.any():
            return
        row = int(rows[bad].min())
        array = self.arrays.latents if name == LATENTS else self.arrays.text_emb
        if isinstance(array, PartedArray):
            part, local = array.locate(np.array([row]))
            where, row = array.part_folder(int(part[0])) / name, int(local[0])
        else:
            where = self.arrays.folder / name
        raise TLDError(f"{where} has NaN/Inf values, first at row {row}")

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.arrays.latents.shape[1:])  # type: ignore[return-value]

    @property
    def bucket_shapes(self) -> list[tuple[int, int, int]]:
        """The latent shapes of the dataset's aspect-ratio buckets, first = latent_shape (one without)."""
        buckets = self.arrays.meta.buckets
        return [tuple(int(s) for s in b["latent_shape"]) for b in buckets] if buckets else [self.latent_shape]

    def buckets(self) -> BucketRows | None:
        """The rows of each latent shape when more than one shape has rows (None: one shape)."""
        if self.arrays.meta.buckets is None:
            return None
        rows = BucketRows(self.arrays.latents, self.bucket_shapes)
        return rows if sum(rows.count(b) > 0 for b in range(len(rows.shapes))) > 1 else None

    @property
    def text_dim(self) -> int:
        return int(self.arrays.text_emb.shape[-1])

    @property
    def num_classes(self) -> int:
        return self._label_max + 1 if self.labels is not None else 0

    def text_condition(
        self, emb: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Stored embeddings (rows) in the form the model sees: pooled, or tokens + mask."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 3 and not self.tokens:
            return pool_tokens(emb, mask), None
        return emb, None if mask is None else np.asarray(mask, dtype=bool)

    def get(self, indices: np.ndarray, flip: np.ndarray | None = None) -> Batch:
        # Sorted reads keep a memmap sequential; `inverse` restores the requested order.
        order, inverse = np.unique(indices, return_inverse=True)
        latents = self.arrays.latent(order)
        if self.check_finite and self.arrays.latents.dtype.kind == "f":
            self._check_batch(LATENTS, order, latents)
        latents = latents[inverse]
        if flip is not None and flip.any():
            latents[flip] = latents[flip, :, :, ::-1]
        text_emb = text_mask = labels = None
        if self.condition == "text":
            mask = None if self.arrays.text_mask is None else self.arrays.text_mask[order][inverse]
            stored = self.arrays.text_emb[order]
            if self.check_finite:
                self._check_batch(TEXT_EMB, order, stored)
            emb, mask = self.text_condition(stored[inverse], mask)
            text_emb = torch.from_numpy(np.ascontiguousarray(emb))
            text_mask = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
        elif self.condition == "class":
            labels = torch.from_numpy(np.asarray(self.labels[indices]).astype(np.int64))
        return Batch(torch.from_numpy(np.ascontiguousarray(latents)), text_emb, text_mask, labels)


class RowStream:
    """An endless stream of rows: epoch e is a permutation of `n` rows drawn from derive_seed(*key, e).

    `table` lists the stream's dataset rows (balance repeats); `rows` maps stream positions to
    dataset rows arithmetically (a bucket's rows in the parts); neither: the identity."""

    def __init__(
        self, n: int, key: tuple[int, ...], table: np.ndarray | None = None, rows: Callable | None = None
    ):
        self.n, self.key, self.table, self.rows = n, key, table, rows
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng(derive_seed(*self.key, epoch))
            # With a table the stream is O(rows) already; without, large epochs use O(1) memory.
            perm = rng.permutation(self.n) if self.table is not None else epoch_permutation(rng, self.n)
            self._epoch, self._perm = epoch, perm if self.table is None else self.table[perm]
        return self._perm

    def take(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty_like(positions)
        for epoch in np.unique(positions // self.n):
            sel = positions // self.n == epoch
            out[sel] = self.permutation(int(epoch))[positions[sel] % self.n]  # an array or a Feistel map
        return out if self.rows is None else self.rows(out)


class StepBatches(Dataset):
    """Item k is micro-batch k of this process: use with DataLoader(batch_size=None, sampler=range(...)).

    A dataset with several latent shapes (aspect-ratio buckets) has one stream per shape: micro-batch
    k takes the next batch of the bucket drawn for k (tld/data/buckets.py), the same on every rank."""

    def __init__(
        self,
        data: LatentDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        flip: bool = False,
        repeats: np.ndarray | None = None,
    ):
        if batch_size < 1:
            raise TLDError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world, self.flip = rank, world, flip
        rows = self._epoch_rows(len(data), repeats)
        buckets = data.buckets()
        if buckets is None:
            self.streams = [RowStream(len(data) if rows is None else len(rows), (seed, 0xDA7A), rows)]
            self.schedule = None
            return
        self.streams = []
        for b in range(len(buckets.shapes)):
            key = (seed, 0xDA7A, 0xB0C7, b)
            if rows is None:
                self.streams.append(RowStream(buckets.count(b), key, rows=partial(buckets.rows, b)))
            else:  # balance repeats: each of the bucket's rows repeated, as a table like the rows'
                table = buckets.all_rows(b)
                table = np.repeat(table, np.asarray(repeats)[table])
                self.streams.append(RowStream(len(table), key, table))
        self.schedule = BucketSchedule(seed, [s.n for s in self.streams])

    @staticmethod
    def _epoch_rows(n: int, repeats: np.ndarray | None) -> np.ndarray | None:
        """Row ids of one epoch before shuffling: each row `repeats[i]` times (None: each once; 0: never)."""
        if repeats is None:
            return None
        repeats = np.asarray(repeats)
        bad = repeats.shape != (n,) or not np.issubdtype(repeats.dtype, np.integer)
        if bad or (repeats < 0).any() or not repeats.any():
            raise TLDError(
                f"repeats must be {n} integers >= 0 (one per row, 0 = left out, not all 0), got "
                f"{repeats.dtype} {repeats.shape}"
            )
        return np.repeat(np.arange(n, dtype=np.int64), repeats)

    @property
    def epoch_size(self) -> int:
        return sum(s.n for s in self.streams)

    def __len__(self) -> int:
        return 1 << 62  # unbounded: the sampler decides which steps are read

    def _permutation(self, epoch: int) -> np.ndarray:
        return self.streams[0].permutation(epoch)

    def bucket(self, k: int) -> tuple[int, int]:
        """(bucket, how many earlier micro-batches drew it) of micro-batch k; (0, k) with one shape."""
        return (0, k) if self.schedule is None else self.schedule.draw(k)

    def indices(self, k: int) -> np.ndarray:
        """Dataset rows of micro-batch k for this rank: consecutive slices of its bucket's sample stream."""
        b, r = self.bucket(k)
        start = (r * self.world + self.rank) * self.batch_size
        return self.streams[b].take(np.arange(start, start + self.batch_size, dtype=np.int64))

    def __getitem__(self, k: int) -> Batch:
        idx = self.indices(k)
        flip = None
        if self.flip:
            flip = np.random.default_rng(derive_seed(self.seed, 0xF11, k, self.rank)).random(len(idx)) < 0.5
        return self.data.get(idx, flip)


def collate_identity(batch: Batch) -> Batch:
    return batch


def step_loader(batches: StepBatches, first: int, stop: int, num_workers: int = 0) -> DataLoader:
    """The DataLoader of micro-batches first..stop-1 (the trainer's; bench/loader.py times it)."""
    return DataLoader(
        batches,
        batch_size=None,
        sampler=range(first, stop),
        num_workers=num_workers,
        collate_fn=collate_identity,
    )
