"""encode --overwrite never destroys the old dataset (failed run, kill -9, kill mid-swap); captions
that are missing or not UTF-8 are skipped and counted, not stored as "" or "���"."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from PIL import Image
from tld.preprocessing.emoji import build_emoji_shards
from tld.preprocessing.encode import EncodeConfig, encode

from tld.data.format import open_latent_dataset
from tld.errors import TLDError

SIZE = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emoji_shards")
    build_emoji_shards(folder, size=SIZE, limit=12, samples_per_shard=4, progress=False)
    return folder


@pytest.fixture
def cfg(tiny_vae_dir, tiny_clip_dir):
    return EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=4, progress=False)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_overwrite_that_fails_on_a_truncated_shard_keeps_the_old_dataset(shards, cfg, tmp_path):
    ds = tmp_path / "ds"
    encode(shards, ds, cfg)
    before = _snapshot(ds)
    bad = tmp_path / "bad_shards"
    shutil.copytree(shards, bad)
    data = (bad / "00002.tar").read_bytes()
    (bad / "00002.tar").write_bytes(data[: len(data) // 2])
    cfg.overwrite = True
    with pytest.raises(TLDError, match="00002.tar is truncated"):
        encode(bad, ds, cfg)
    assert _snapshot(ds) == before
    assert open_latent_dataset(ds).latents.shape[0] == 12


def test_overwrite_killed_mid_run_keeps_the_old_dataset_and_resumes(
    shards, cfg, tmp_path, tiny_vae_dir, tiny_clip_dir
):
    ds = tmp_path / "ds"
    encode(shards, ds, cfg)
    (ds / "notes.md").write_text("mine")  # a file of the user's own survives the swap
    before = _snapshot(ds)
    script = textwrap.dedent(
        f"""
        import os, signal
        import tld.preprocessing.encode as m
        real = m.encode_shard
        def killed_after_one(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        m.encode_shard = killed_after_one
        cfg = m.EncodeConfig(vae={str(tiny_vae_dir)!r}, text_encoder={str(tiny_clip_dir)!r},
                             batch_size=4, progress=False, overwrite=True, val_holdout=2)
        m.encode({str(shards)!r}, {str(ds)!r}, cfg)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == -9, run.stderr[-2000:]
    assert _snapshot(ds) == before
    staged = tmp_path / ".ds.encoding" / ".work"
    assert sorted(p.name for p in staged.iterdir() if p.is_dir()) == ["00000"]
    cfg.overwrite, cfg.resume, cfg.val_holdout = True, True, 2
    assert encode(shards, ds, cfg).count == 10
    assert open_latent_dataset(ds).latents.shape[0] == 10
    assert (ds / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging or old folder left


def test_kill_between_the_two_renames_puts_the_old_dataset_back(shards, cfg, tmp_path):
    ds = tmp_path / "ds"
    encode(shards, ds, cfg)
    before = _snapshot(ds)
    os.replace(ds, tmp_path / ".ds.replaced")  # the first rename of the swap happened, the second not
    with pytest.raises(TLDError, match="already holds a dataset of 12 samples"):
        encode(shards, ds, cfg)
    assert _snapshot(ds) == before and not (tmp_path / ".ds.replaced").exists()


def test_missing_and_non_utf8_captions_are_skipped_and_counted(cfg, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(5):
            buf = io.BytesIO()
            Image.new("RGB", (SIZE, SIZE), (40 * i, 0, 0)).save(buf, format="PNG")
            sample = {"__key__": f"{i:09d}", "png": buf.getvalue(), "json": b"{}"}
            if i != 1:
                sample["txt"] = b"caf\xe9 latin-1" if i == 3 else f"image {i}".encode()
            sink.write(sample)
    meta = encode(folder, tmp_path / "ds", cfg)
    assert meta.count == 3 and meta.extra["samples_in_shards"] == 5
    assert meta.extra["failed"] == {"no caption in sample": 1, "caption is not UTF-8": 1}
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")["caption"].tolist()
    assert captions == ["image 0", "image 2", "image 4"]
    assert np.isfinite(open_latent_dataset(tmp_path / "ds").latent(np.arange(3))).all()


def test_open_clip_folder_with_a_garbled_weights_file_is_one_line(tmp_path, tiny_clip_dir):
    from tld.encoders import load_text_encoder

    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, folder)
    (folder / "model.safetensors").write_bytes(b"garbage" * 20)
    with pytest.raises(
        TLDError, match=f"cannot load open_clip text weights {folder / 'model.safetensors'}: "
    ):
        load_text_encoder(str(folder))
