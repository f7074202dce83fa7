"""Aspect-ratio buckets in the data layer: a parts dataset of two latent shapes, the manifest checks,
and the step sampler (one shape per batch, buckets drawn in proportion to their rows, the same
sequence after a resume and on every rank)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tld.data import LatentDataset, StepBatches
from tld.data.buckets import BucketSchedule, check_buckets, nearest_bucket, parse_buckets
from tld.data.format import DatasetMeta, open_latent_dataset, write_meta
from tld.data.parts import PartIndex, write_manifest, write_part
from tld.errors import TLDError

SQUARE, WIDE = (4, 8, 8), (4, 6, 10)


def write_bucket_parts(folder, parts=((SQUARE, 30), (WIDE, 10), (SQUARE, 20), (WIDE, 20)), record=True):
    """A parts dataset whose parts alternate between two latent shapes; row r holds the value r."""
    indexes, start = [], 0
    for i, (shape, n) in enumerate(parts):
        rows = np.arange(start, start + n, dtype=np.float32)
        arrays = {
            "latents.npy": np.broadcast_to(rows[:, None, None, None], (n, *shape)).astype(np.float16),
            "text_emb.npy": np.broadcast_to(rows[:, None], (n, 16)).astype(np.float16),
        }
        captions = pd.DataFrame({"caption": [f"row {r}" for r in range(start, start + n)]})
        indexes.append(write_part(folder / "parts" / f"p{i}", arrays, captions, PartIndex(f"p{i}", n)))
        start += n
    write_manifest(folder, indexes)
    counts = {s: sum(n for t, n in parts if t == s) for s in (SQUARE, WIDE)}
    buckets = [
        {"image_size": [s[1] * 2, s[2] * 2], "latent_shape": list(s), "rows": counts[s]}
        for s in (SQUARE, WIDE)
    ]
    meta = DatasetMeta(
        count=start, latent_shape=list(SQUARE), latent_scale=1.0, text_dim=16, layout="parts",
        buckets=buckets if record else None,
    )  # fmt: skip
    write_meta(folder, meta)
    return folder


def test_bucket_sizes_are_parsed_checked_and_images_go_to_the_nearest():
    assert parse_buckets("64x64, 48x80,80x48") == [(64, 64), (48, 80), (80, 48)]
    for bad in ("64", "64x", "0x64", "64x64;32x32", "axb"):
        with pytest.raises(TLDError, match="HxW"):
            parse_buckets(bad)
    with pytest.raises(TLDError, match=r"multiples of 16 pixels .*, got 64x60$"):
        check_buckets([(64, 64), (64, 60)], factor=8)
    with pytest.raises(TLDError, match="twice"):
        check_buckets([(64, 64), (64, 64)], factor=8)
    buckets = [(64, 64), (48, 80), (80, 48)]
    assert nearest_bucket(100, 100, buckets) == 0
    assert nearest_bucket(200, 100, buckets) == 1  # wider than 80x48's 5:3 still goes to the widest
    assert nearest_bucket(100, 170, buckets) == 2
    assert nearest_bucket(100, 100, [(48, 80), (80, 48)]) == 0  # a tie goes to the first listed


def test_a_two_shape_dataset_opens_and_reads_one_shape_per_batch(tmp_path):
    folder = write_bucket_parts(tmp_path / "d")
    data = LatentDataset(folder)
    assert len(data) == 80 and data.latent_shape == SQUARE and data.bucket_shapes == [SQUARE, WIDE]
    assert data.get(np.array([0, 45, 29])).latents.shape == (3, *SQUARE)
    assert data.get(np.array([30, 79])).latents.shape == (2, *WIDE)
    with pytest.raises(TLDError, match="different shapes"):
        data.get(np.array([0, 30]))
    buckets = data.buckets()
    assert [buckets.count(b) for b in (0, 1)] == [50, 30]
    assert buckets.all_rows(1).tolist() == list(range(30, 40)) + list(range(60, 80))


def test_parts_of_several_shapes_need_declared_buckets(tmp_path):
    with pytest.raises(TLDError, match=r"holds float16 latents of shape \[4, 6, 10\] but meta.json says"):
        open_latent_dataset(write_bucket_parts(tmp_path / "undeclared", record=False))
    folder = write_bucket_parts(tmp_path / "d")
    meta = open_latent_dataset(folder).meta
    meta.buckets[1]["rows"] = 31
    write_meta(folder, meta)
    with pytest.raises(TLDError, match=r"other bucket row counts than recorded \(\[4, 6, 10\]: 30\)"):
        open_latent_dataset(folder)


def test_the_sampler_keeps_shapes_apart_weights_buckets_by_rows_and_resumes(tmp_path):
    data = LatentDataset(write_bucket_parts(tmp_path / "d"))
    batches = StepBatches(data, batch_size=5, seed=11)
    steps = 400
    shapes = [tuple(batches[k].latents.shape[1:]) for k in range(steps)]
    assert set(shapes) == {SQUARE, WIDE}
    wide = sum(s == WIDE for s in shapes) / steps
    assert abs(wide - 30 / 80) < 0.1  # drawn with probability rows / all rows (3/8)
    # Each bucket's rows come from its own shuffled epochs: 6 batches of the wide bucket = 30 rows, once each.
    wide_steps = [k for k in range(steps) if shapes[k] == WIDE][:6]
    rows = np.concatenate([batches.indices(k) for k in wide_steps])
    assert sorted(rows.tolist()) == data.buckets().all_rows(1).tolist()
    resumed = StepBatches(data, batch_size=5, seed=11)  # a fresh process resuming at step 300
    assert [resumed.bucket(k) for k in range(300, steps)] == [batches.bucket(k) for k in range(300, steps)]
    assert all(np.array_equal(resumed.indices(k), batches.indices(k)) for k in range(300, steps))
    r0, r1 = (StepBatches(data, 5, seed=11, rank=r, world=2) for r in (0, 1))
    for k in range(50):
        assert r0.bucket(k)[0] == r1.bucket(k)[0]  # every rank draws the same bucket for step k
        assert not set(r0.indices(k)) & set(r1.indices(k))


def test_the_schedule_counts_draws_across_blocks():
    schedule = BucketSchedule(seed=3, weights=[1, 3])
    draws = [schedule.draw(k) for k in range(2500)]
    seen = [0, 0]
    for bucket, r in draws:
        assert r == seen[bucket]
        seen[bucket] += 1
    assert BucketSchedule(seed=3, weights=[1, 3]).draw(2400) == draws[2400]  # no state needed


def test_balance_repeats_weight_the_buckets_by_their_repeated_rows(tmp_path):
    data = LatentDataset(write_bucket_parts(tmp_path / "d"))
    repeats = np.ones(80, dtype=np.int64)
    repeats[30:40] = 4  # the wide bucket: 10 rows x 4 + 20 rows = 60 draws an epoch, the square one 50
    batches = StepBatches(data, batch_size=5, seed=2, repeats=repeats)
    assert [s.n for s in batches.streams] == [50, 60] and batches.epoch_size == 110
    wide_steps = [k for k in range(200) if batches.bucket(k)[0] == 1]
    assert abs(len(wide_steps) / 200 - 60 / 110) < 0.12
    rows = np.concatenate([batches.indices(k) for k in wide_steps[:12]])  # one epoch of the wide bucket
    assert np.bincount(rows, minlength=80)[30:40].tolist() == [4] * 10
    assert all(batches[k].latents.shape[1:] == WIDE for k in wide_steps[:3])
