"""Datasets in parts: the loader over a manifest (lazy, O(parts)), per-batch value checks, the
computed epoch permutation, and encode --layout parts (same rows as the merged layout, kill and
resume, adding shards) with no merge and no second copy."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import tld.preprocessing.encode as encode_module
from tld.preprocessing.emoji import build_emoji_shards
from tld.preprocessing.encode import EncodeConfig, encode

from tld.data import LatentDataset, StepBatches, shuffle
from tld.data.format import DatasetMeta, open_latent_dataset, read_captions, write_meta
from tld.data.parts import PartIndex, manifest_lock, part_name, read_manifest, write_manifest, write_part
from tld.errors import TLDError


def write_parts(folder, sizes=(5, 3, 4), nan_in=None, labels=False):
    """A parts dataset; row r of the whole dataset has latents filled with r and embedding r."""
    parts, start = [], 0
    for i, n in enumerate(sizes):
        rows = np.arange(start, start + n, dtype=np.float32)
        arrays = {
            "latents.npy": np.broadcast_to(rows[:, None, None, None], (n, 2, 4, 4)).astype(np.float16),
            "text_emb.npy": np.broadcast_to(rows[:, None], (n, 8)).astype(np.float16),
        }
        if labels:
            arrays["labels.npy"] = (np.arange(start, start + n) % 3).astype(np.int64)
        if nan_in == i:
            arrays["text_emb.npy"][1, 0] = np.nan
        captions = pd.DataFrame({"caption": [f"row {r}" for r in range(start, start + n)]})
        parts.append(write_part(folder / "parts" / f"p{i}", arrays, captions, PartIndex(f"p{i}", n)))
        start += n
    write_manifest(folder, parts)
    write_meta(folder, DatasetMeta(count=start, latent_shape=[2, 4, 4], text_dim=8, layout="parts"))
    return folder


def test_parts_read_as_one_array_by_arithmetic(tmp_path):
    ds = open_latent_dataset(write_parts(tmp_path / "d"))
    assert len(ds) == 12 and ds.latents.shape == (12, 2, 4, 4) and not ds.latents._maps
    rows = np.array([11, 0, 5, 4, 7, 5])
    np.testing.assert_array_equal(ds.latent(rows)[:, 0, 0, 0], rows)
    np.testing.assert_array_equal(ds.text_emb[2:7][:, 0], np.arange(2, 7))
    assert sorted(ds.latents._maps) == [0, 1, 2]  # each part's memmap is opened when first read
    assert read_captions(tmp_path / "d")["caption"].tolist() == [f"row {r}" for r in range(12)]
    batch = LatentDataset(tmp_path / "d").get(np.array([3, 9]))
    assert batch.latents[:, 0, 0, 0].tolist() == [3.0, 9.0]


def test_manifest_lock_serialises_concurrent_manifest_updates(tmp_path):
    """Two `encode --add` runs finishing together: each reads the manifest, adds its parts and rewrites
    it under the lock, so no run's parts are lost (without it, read-modify-write races drop entries)."""
    write_manifest(tmp_path, [])

    def add(tag: str) -> None:
        for i in range(40):
            with manifest_lock(tmp_path):
                parts = read_manifest(tmp_path)
                write_manifest(tmp_path, [*parts, PartIndex(f"{tag}{i}", 1)])

    workers = [threading.Thread(target=add, args=(tag,)) for tag in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    names = [p.name for p in read_manifest(tmp_path)]
    assert sorted(names) == sorted(f"{t}{i}" for t in "ab" for i in range(40))

    # While one holder has it, a second waits, and goes on once it is released.
    order: list[str] = []

    def second() -> None:
        with manifest_lock(tmp_path):
            order.append("second")

    with manifest_lock(tmp_path):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and order == []
        order.append("first")
    waiter.join(timeout=30)
    assert order == ["first", "second"]


def test_part_recorded_with_nan_is_refused_at_open_and_named(tmp_path):
    write_parts(tmp_path / "d", nan_in=1)
    with pytest.raises(TLDError, match=r"parts/p1/text_emb\.npy has NaN/Inf values, first at row 1$"):
        LatentDataset(tmp_path / "d")


def test_batch_check_names_the_part_and_row(tmp_path):
    folder = write_parts(tmp_path / "d")
    emb = np.load(folder / "parts/p2/text_emb.npy")
    emb[2, 3] = np.inf  # damaged after encoding: the manifest still says finite
    np.save(folder / "parts/p2/text_emb.npy", emb)
    data = LatentDataset(folder)
    data.get(np.arange(10))
    with pytest.raises(TLDError, match=r"parts/p2/text_emb\.npy has NaN/Inf values, first at row 2$"):
        data.get(np.array([0, 10, 11]))


def test_a_part_whose_header_changed_is_refused(tmp_path):
    folder = write_parts(tmp_path / "d")
    np.save(folder / "parts/p1/latents.npy", np.zeros((3, 2, 4, 4), dtype=np.float32))
    data = LatentDataset(folder)
    with pytest.raises(TLDError, match=r"p1/latents\.npy does not match its part index"):
        data.get(np.array([6]))


def test_class_labels_from_parts(tmp_path):
    data = LatentDataset(write_parts(tmp_path / "d", labels=True), condition="class")
    assert data.num_classes == 3 and data.get(np.array([4, 5, 8])).labels.tolist() == [1, 2, 2]


def test_computed_permutation_covers_each_row_once_per_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(shuffle, "EXACT_ROWS", 4)  # the 12 rows take the Feistel path
    data = LatentDataset(write_parts(tmp_path / "d"))
    batches = StepBatches(data, batch_size=4, seed=3)
    assert isinstance(batches._permutation(0), shuffle.FeistelPermutation)
    epoch = np.concatenate([batches.indices(k) for k in range(3)])
    assert sorted(epoch.tolist()) == list(range(12)) and epoch.tolist() != list(range(12))
    again = StepBatches(data, batch_size=4, seed=3)
    assert np.array_equal(again.indices(4), batches.indices(4))  # batch k depends only on (seed, k)


# encode --layout parts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emoji_shards")
    build_emoji_shards(folder, size=16, limit=16, samples_per_shard=4, progress=False)
    return folder


@pytest.fixture
def cfg(tiny_vae_dir, tiny_clip_dir):
    return EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=4, progress=False)


def _same_rows(a, b):
    x, y = open_latent_dataset(a), open_latent_dataset(b)
    assert len(x) == len(y) and x.meta.count == y.meta.count
    rows = np.arange(len(x))
    np.testing.assert_array_equal(x.latents[rows], y.latents[rows])
    np.testing.assert_array_equal(x.text_emb[rows], y.text_emb[rows])
    cols = ["caption", "key", "flipped"]
    pd.testing.assert_frame_equal(read_captions(a, cols), read_captions(b, cols))
    assert x.val_prompts == y.val_prompts


def test_parts_layout_holds_the_rows_of_the_merged_layout(shards, cfg, tmp_path):
    cfg.flip, cfg.val_holdout = True, 3
    encode(shards, tmp_path / "single", cfg)
    cfg.layout, cfg.shards_per_part = "parts", 2
    meta = encode(shards, tmp_path / "parts", cfg)
    assert meta.layout == "parts" and meta.count == 26 and meta.extra["parts"] == 2
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "meta.json", "parts", "parts.json", "val_prompts.txt", "val_text_emb.npy"
    ]  # fmt: skip
    _same_rows(tmp_path / "parts", tmp_path / "single")
    np.testing.assert_array_equal(
        open_latent_dataset(tmp_path / "parts").val_text_emb,
        open_latent_dataset(tmp_path / "single").val_text_emb,
    )


def test_parts_killed_and_resumed_equal_an_uninterrupted_run(shards, cfg, tmp_path, monkeypatch):
    cfg.layout = "parts"
    encode(shards, tmp_path / "full", cfg)
    real, calls = encode_module.shard_arrays, []

    def killed_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode_module, "shard_arrays", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        encode(shards, tmp_path / "ds", cfg)
    assert len(list((tmp_path / "ds" / "parts").iterdir())) == 2
    half = tmp_path / "ds" / "parts" / (part_name(["00002.tar"]) + ".tmp")  # a part killed while written
    half.mkdir()
    (half / "latents.npy").write_bytes(b"half")
    monkeypatch.setattr(encode_module, "shard_arrays", real)
    with pytest.raises(TLDError, match="pass --resume"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.resume = True
    encode(shards, tmp_path / "ds", cfg)
    assert json.loads((tmp_path / "ds/parts.json").read_text()) == json.loads(
        (tmp_path / "full/parts.json").read_text()
    )
    assert not (tmp_path / "ds/.work").exists() and not list((tmp_path / "ds/parts").glob("*.tmp"))
    _same_rows(tmp_path / "ds", tmp_path / "full")


def test_new_shards_are_added_as_parts(shards, cfg, tmp_path):
    cfg.layout = "parts"
    encode(shards, tmp_path / "all", cfg)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, names in ((first, ["00000.tar", "00001.tar"]), (second, ["00002.tar", "00003.tar"])):
        folder.mkdir()
        for name in names:
            shutil.copy(shards / name, folder / name)
    encode(first, tmp_path / "ds", cfg)
    before = (
        (tmp_path / "ds/parts").stat().st_mtime_ns,
        sorted(p.name for p in (tmp_path / "ds/parts").iterdir()),
    )
    cfg.add = True
    assert encode(second, tmp_path / "ds", cfg).count == 16
    assert sorted(p.name for p in (tmp_path / "ds/parts").iterdir())[:2] == before[1]
    _same_rows(tmp_path / "ds", tmp_path / "all")
    cfg.latent_dtype = "uint8"
    with pytest.raises(TLDError, match=r"other settings \['latent_clip', 'latent_dtype'\]; --add needs"):
        encode(second, tmp_path / "ds", cfg)


def test_two_processes_write_the_parts_of_one(shards, cfg, tmp_path, tiny_vae_dir, tiny_clip_dir):
    import os
    import subprocess
    import sys

    cfg.layout = "parts"
    encode(shards, tmp_path / "one", cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "tld.cli", "preprocess", "encode", str(shards), str(tmp_path / "two"), "--layout", "parts"]
    cmd += [
        "--vae",
        str(tiny_vae_dir),
        "--text-encoder",
        str(tiny_clip_dir),
        "--batch-size",
        "4",
        "--no-progress",
    ]
    run = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("16 samples ->") == 1
    one, two = open_latent_dataset(tmp_path / "one"), open_latent_dataset(tmp_path / "two")
    assert [p.name for p in one.parts] == [p.name for p in two.parts]  # same parts, same order
    cols = ["caption", "key", "flipped"]
    pd.testing.assert_frame_equal(
        read_captions(tmp_path / "two", cols), read_captions(tmp_path / "one", cols)
    )
    rows = np.arange(16)
    np.testing.assert_allclose(
        two.latent(rows), one.latent(rows), rtol=2e-3, atol=2e-3
    )  # thread-count rounding
    np.testing.assert_allclose(
        two.text_emb[rows].astype(np.float32), one.text_emb[rows].astype(np.float32), atol=2e-3
    )


def test_the_trainer_runs_on_a_parts_dataset(tmp_path):
    from tld.cli import main

    folder = write_parts(tmp_path / "ds", sizes=(40, 30, 50))
    args = [f"data.path={folder}", "model_preset=tiny", "tracker=none", "steps=3", "batch_size=8"]
    args += [f"output_dir={tmp_path / 'run'}", "progress=false", "sample.every=0", "checkpoint_every=0"]
    assert main(["train", *[x for a in args for x in ("--set", a)]]) == 0
    assert (tmp_path / "run/checkpoints/step_3").is_dir()
