"""encode: shapes, alignment, flip doubling, validation prompts, uint8 bounds, kill-and-resume, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import tld.preprocessing.encode as encode_module
import torch
import webdataset as wds
from PIL import Image
from tld.preprocessing.emoji import build_emoji_shards
from tld.preprocessing.encode import WORK, EncodeConfig, encode

from tld.data.format import open_latent_dataset
from tld.encoders import VAE, load_text_encoder
from tld.encoders.images import pil_to_tensor
from tld.errors import TLDError

SIZE = 16  # the tiny VAE downsamples by 2: 4 x 8 x 8 latents


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emoji_shards")
    assert build_emoji_shards(folder, size=SIZE, limit=24, samples_per_shard=6, progress=False) == (24, 4)
    return folder


@pytest.fixture
def cfg(tiny_vae_dir, tiny_clip_dir):
    return EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=4, progress=False)


def _shard_images(folder):
    """(caption, PIL image) of every sample, in shard order."""
    out = []
    for shard in sorted(folder.glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            out.append((s["txt"].decode(), Image.open(io.BytesIO(s["png"])).convert("RGB")))
    return out


def test_arrays_align_with_captions_and_images(shards, cfg, tmp_path, tiny_vae_dir, tiny_clip_dir):
    meta = encode(shards, tmp_path / "ds", cfg)
    ds = open_latent_dataset(tmp_path / "ds")
    assert ds.latents.shape == (24, 4, 8, 8) and ds.latents.dtype == np.float16
    assert ds.text_emb.shape == (24, 24)
    assert (meta.count, meta.image_size, meta.license.split(" (")[0]) == (24, [SIZE, SIZE], "CC BY-SA 4.0")
    assert "OpenMoji" in meta.extra["attribution"]
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")
    pairs = _shard_images(shards)
    assert captions["caption"].tolist() == [c for c, _ in pairs]
    # Row 13 must hold exactly the latent of image 13 and the embedding of caption 13.
    vae = VAE.from_pretrained(tiny_vae_dir)
    text = load_text_encoder(tiny_clip_dir)
    z = vae.encode(pil_to_tensor([pairs[13][1]]))[0].numpy()
    np.testing.assert_allclose(ds.latent(13), z, atol=2e-3, rtol=2e-3)
    emb = text.encode([pairs[13][0]]).pooled[0].numpy()
    np.testing.assert_allclose(ds.text_emb[13].astype(np.float32), emb, atol=2e-3, rtol=2e-3)
    assert not (tmp_path / "ds" / WORK).exists()
    loaded = np.load(tmp_path / "ds" / "latents.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap)


@pytest.mark.parametrize("sample_posterior", [False, True])
def test_kill_and_resume_gives_the_same_arrays(
    shards, cfg, tmp_path, monkeypatch, tiny_vae_dir, sample_posterior
):
    cfg.sample_posterior = sample_posterior
    encode(shards, tmp_path / "full", cfg)
    if sample_posterior:  # a draw from the posterior, not its mean (the draws are seeded per shard)
        mean = VAE.from_pretrained(tiny_vae_dir).encode(pil_to_tensor([_shard_images(shards)[0][1]]))[0]
        assert np.abs(np.load(tmp_path / "full" / "latents.npy")[0] - mean.numpy()).mean() > 0.05
    real_encode_shard, calls = encode_module.encode_shard, []

    def killed_after_two(*args, **kwargs):  # the run dies while the third shard is in flight
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(real_encode_shard(*args, **kwargs))

    monkeypatch.setattr(encode_module, "encode_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        encode(shards, tmp_path / "ds", cfg)
    done = sorted(p.name for p in (tmp_path / "ds" / WORK).iterdir() if p.is_dir())
    assert done == ["00000", "00001"]
    monkeypatch.setattr(encode_module, "encode_shard", real_encode_shard)
    with pytest.raises(TLDError, match=r"unfinished encode \(2 of 4 shards done\); pass --resume"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.resume = True
    encode(shards, tmp_path / "ds", cfg)
    for name in ("latents.npy", "text_emb.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "ds" / name), np.load(tmp_path / "full" / name))
    a = pd.read_parquet(tmp_path / "ds" / "captions.parquet")
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "full" / "captions.parquet"))


def test_uint8_round_trip_error_is_bounded_by_clip(shards, cfg, tmp_path):
    encode(shards, tmp_path / "f16", cfg)
    cfg.latent_dtype, cfg.latent_clip = "uint8", 0.5
    meta = encode(shards, tmp_path / "u8", cfg)
    ref = open_latent_dataset(tmp_path / "f16").latent(np.arange(24))
    got = open_latent_dataset(tmp_path / "u8").latent(np.arange(24))
    inside = np.abs(ref) <= 0.5
    assert 0 < inside.mean() < 1  # the clip is small enough to bite, so both branches are checked
    err = np.abs(got - ref)[inside]
    assert err.max() <= 0.5 / 255 + 1e-3  # half a step of 2*clip/255, plus float16 rounding
    np.testing.assert_allclose(got[~inside], np.sign(ref[~inside]) * 0.5, atol=1e-6)
    assert meta.extra["clipped_fraction"] == pytest.approx(
        1 - inside.mean(), abs=0.005
    )  # f16 vs f32 at the edge


def test_flip_doubling_encodes_mirrored_images(shards, cfg, tmp_path, tiny_vae_dir):
    cfg.flip = True
    encode(shards, tmp_path / "ds", cfg)
    ds = open_latent_dataset(tmp_path / "ds")
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")
    assert len(ds) == 48 and captions["flipped"].sum() == 24
    # Within a shard: its 6 originals, then the same 6 mirrored.
    assert captions["caption"][6:12].tolist() == captions["caption"][0:6].tolist()
    np.testing.assert_array_equal(ds.text_emb[6], ds.text_emb[0])
    image = _shard_images(shards)[0][1]
    vae = VAE.from_pretrained(tiny_vae_dir)
    mirrored = vae.encode(pil_to_tensor([image]).flip(-1))[0].numpy()
    np.testing.assert_allclose(ds.latent(6), mirrored, atol=2e-3, rtol=2e-3)
    assert not np.allclose(ds.latent(6), ds.latent(0), atol=1e-2)


def test_validation_holdout_and_prompts_file(shards, cfg, tmp_path, tiny_clip_dir):
    cfg.val_holdout = 4
    encode(shards, tmp_path / "held", cfg)
    ds = open_latent_dataset(tmp_path / "held")
    pairs = _shard_images(shards)
    assert len(ds) == 20 and ds.val_prompts == [c for c, _ in pairs[-4:]]
    text = load_text_encoder(tiny_clip_dir)
    np.testing.assert_allclose(
        ds.val_text_emb, text.encode(ds.val_prompts).pooled.numpy(), atol=2e-3, rtol=2e-3
    )

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red heart\n\na smiling face\n")
    cfg.val_holdout, cfg.val_prompts = 0, str(prompts)
    encode(shards, tmp_path / "file", cfg)
    ds = open_latent_dataset(tmp_path / "file")
    assert len(ds) == 24 and ds.val_prompts == ["a red heart", "a smiling face"]
    assert ds.val_text_emb.shape == (2, 24)


def test_undecodable_images_are_skipped_and_counted(cfg, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(5):
            buf = io.BytesIO()
            Image.new("RGB", (SIZE, SIZE), (40 * i, 0, 0)).save(buf, format="PNG")
            data = buf.getvalue() if i != 2 else buf.getvalue()[:40]
            sink.write({"__key__": f"{i:09d}", "png": data, "txt": f"image {i}", "json": b"{}"})
        sink.write({"__key__": "000000009", "txt": "caption without image"})
    meta = encode(folder, tmp_path / "ds", cfg)
    assert meta.count == 4 and meta.extra["samples_in_shards"] == 6
    assert meta.extra["failed"] == {"cannot decode image": 1, "no image in sample": 1}
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")["caption"].tolist()
    assert captions == ["image 0", "image 1", "image 3", "image 4"]


def test_refuses_existing_dataset_unless_overwrite(shards, cfg, tmp_path):
    encode(shards, tmp_path / "ds", cfg)
    with pytest.raises(TLDError, match="already holds a dataset of 24 samples; pass --overwrite"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.overwrite, cfg.val_holdout = True, 2
    assert encode(shards, tmp_path / "ds", cfg).count == 22


def test_vae_with_other_latent_channels_is_refused(shards, cfg, tmp_path):
    from diffusers import AutoencoderKL

    encode(shards, tmp_path / "ds", cfg)
    torch.manual_seed(0)
    model = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=8,
        norm_num_groups=4,
    )
    VAE(model, latent_scale=1.0).save_pretrained(tmp_path / "vae8")
    cfg.vae = str(tmp_path / "vae8")
    with pytest.raises(TLDError, match="holds a dataset with 4-channel latents but VAE .* makes 8-channel"):
        encode(shards, tmp_path / "ds", cfg)


def test_unreadable_and_missing_shards(cfg, tmp_path):
    with pytest.raises(TLDError, match="no webdataset shards"):
        encode(tmp_path, tmp_path / "ds", cfg)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TLDError, match=r"shard folder .*notes.txt is a file, not a folder"):
        encode(tmp_path / "notes.txt", tmp_path / "ds", cfg)
    (tmp_path / "00000.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(TLDError, match=r"shard .*00000.tar is truncated or not a tar file"):
        encode(tmp_path, tmp_path / "ds", cfg)


def test_bad_settings(shards, cfg, tmp_path):
    cfg.latent_dtype = "int8"
    with pytest.raises(TLDError, match="latent dtype must be float16 or uint8, got 'int8'"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.latent_dtype, cfg.image_size = "float16", 15
    with pytest.raises(TLDError, match="divisible by 2"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.image_size, cfg.dtype = None, "int8"
    with pytest.raises(TLDError, match=r"dtype must be one of \['bf16', .*\] or a torch.dtype, got 'int8'"):
        encode(shards, tmp_path / "ds", cfg)
    cfg.dtype, cfg.text_encoder = "float32", "clip-vit"
    with pytest.raises(TLDError, match="text encoder must be one of"):
        encode(shards, tmp_path / "ds", cfg)
    assert json.dumps(EncodeConfig().to_dict())


def test_per_token_text_embeddings(shards, cfg, tmp_path, tiny_clip_dir):
    cfg.text_tokens = True
    meta = encode(shards, tmp_path / "ds", cfg)
    ds = open_latent_dataset(tmp_path / "ds")
    assert ds.text_emb.shape == (24, 16, 32) and ds.text_mask.shape == (24, 16)
    assert (meta.text_tokens, meta.text_dim) == (16, 32)
    caption = pd.read_parquet(tmp_path / "ds" / "captions.parquet")["caption"][5]
    ref = load_text_encoder(tiny_clip_dir).encode([caption], tokens=True)
    np.testing.assert_array_equal(ds.text_mask[5], ref.mask[0].numpy())
    np.testing.assert_allclose(ds.text_emb[5].astype(np.float32), ref.tokens[0].numpy(), atol=3e-3, rtol=3e-3)


def test_minilm_text_encoder_works_offline(shards, cfg, tmp_path):
    cfg.text_encoder = "minilm"
    meta = encode(shards, tmp_path / "ds", cfg)
    ds = open_latent_dataset(tmp_path / "ds")
    assert ds.text_emb.shape == (24, 384) and meta.text_encoder["backend"] == "minilm"
    emb = ds.text_emb[:].astype(np.float32)
    # Different captions give different sentence embeddings.
    assert np.abs(emb[0] - emb[1]).max() > 1e-2


def test_two_processes_split_the_shards(shards, cfg, tmp_path, tiny_vae_dir, tiny_clip_dir):
    import os
    import subprocess
    import sys

    encode(shards, tmp_path / "one", cfg)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tld.cli",
    ]
    cmd += ["preprocess", "encode", str(shards), str(tmp_path / "two"), "--vae", str(tiny_vae_dir)]
    cmd += ["--text-encoder", str(tiny_clip_dir), "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    # Only the main process merges and reports; the merged arrays are those of one process, no duplicates.
    assert run.stdout.count("24 samples ->") == 1
    a = pd.read_parquet(tmp_path / "two" / "captions.parquet")
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "one" / "captions.parquet"))
    assert a["key"].is_unique and len(a) == 24
    # Same samples in the same order; values agree to fp16 rounding only, because one thread per
    # process changes the GEMM blocking (seen: 1-ulp differences in a few elements).
    for name in ("latents.npy", "text_emb.npy"):
        two, one = np.load(tmp_path / "two" / name), np.load(tmp_path / "one" / name)
        assert two.shape == one.shape and two.dtype == one.dtype
        np.testing.assert_allclose(two.astype(np.float32), one.astype(np.float32), rtol=2e-3, atol=2e-3)
