"""Aspect-ratio buckets end to end with real components: images of two aspect ratios -> shards ->
`encode --layout parts --buckets` (tiny random AutoencoderKL + tiny open_clip) -> training with
accelerate (masked training included) -> resume -> export -> the pipeline sampling at each bucket."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tld.preprocessing.encode import EncodeConfig, encode
from tld.preprocessing.folder import build_folder_shards

from tld.data import LatentDataset, StepBatches
from tld.data.format import open_latent_dataset, read_captions
from tld.encoders.images import center_crop_resize, pil_to_tensor
from tld.encoders.vae import VAE
from tld.errors import TLDError

# (width, height) of each image, in file order: squares and near-squares, 2:1 wide ones, and a tall
# one, which is nearer the square bucket than the wide one.
SIZES = [(32, 32), (60, 30), (34, 30), (60, 30), (32, 32), (30, 60), (64, 32)] * 2
WIDE = {i for i, (w, h) in enumerate(SIZES) if w >= 2 * h}
BUCKETS = "16x16,12x24"  # pixel height x width; the tiny VAE halves them: latents 4x8x8 and 4x6x12


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"{'wide' if i in WIDE else 'square'} picture {i}")
    return folder


@pytest.fixture(scope="module")
def bucketed(tmp_path_factory, tiny_vae_dir, tiny_clip_dir):
    root = tmp_path_factory.mktemp("buckets")
    images = _images(root / "images")
    build_folder_shards(
        images, root / "shards", image_size=None, samples_per_shard=4, image_format="png", progress=False
    )
    cfg = EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=3, progress=False)
    cfg.layout, cfg.shards_per_part, cfg.buckets = "parts", 2, [[16, 16], [12, 24]]
    encode(root / "shards", root / "ds", cfg)
    return root


def test_encode_sends_each_image_to_the_nearest_bucket_one_shape_a_part(bucketed, tiny_vae_dir):
    ds = open_latent_dataset(bucketed / "ds")
    meta = ds.meta
    assert meta.latent_shape == [4, 8, 8] and meta.image_size == [16, 16] and meta.count == len(SIZES)
    assert meta.buckets == [
        {"image_size": [16, 16], "latent_shape": [4, 8, 8], "rows": len(SIZES) - len(WIDE)},
        {"image_size": [12, 24], "latent_shape": [4, 6, 12], "rows": len(WIDE)},
    ]
    assert len(ds.parts) == 4 and all(p.name.endswith(("-16x16", "-12x24")) for p in ds.parts)
    for part in ds.parts:
        folder = bucketed / "ds" / "parts" / part.name
        shape = [4, 6, 12] if part.name.endswith("-12x24") else [4, 8, 8]
        assert part.arrays["latents.npy"]["shape"][1:] == shape  # one shape per part
        captions = pd.read_parquet(folder / "captions.parquet")["caption"]
        assert all(c.startswith("wide" if shape == [4, 6, 12] else "square") for c in captions)
    # A 60x30 image is resized to 24x12 whole (no square crop): its latent is the VAE's of that resize.
    vae = VAE.from_pretrained(tiny_vae_dir, latent_scale=1.0)
    captions = read_captions(bucketed / "ds")["caption"].tolist()
    row = captions.index("wide picture 1")
    image = Image.open(bucketed / "images" / "img01.png")
    want = vae.encode(pil_to_tensor([center_crop_resize(image, (12, 24))]), batch_size=None)[0]
    np.testing.assert_allclose(ds.latent(np.array([row]))[0], want.numpy(), atol=2e-3, rtol=2e-3)


def test_bucket_options_are_checked(bucketed, tiny_vae_dir, tiny_clip_dir, tmp_path, capsys):
    cfg = EncodeConfig(
        vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), progress=False, buckets=[[16, 16]]
    )
    with pytest.raises(TLDError, match="^--buckets needs --layout parts"):
        encode(bucketed / "shards", tmp_path / "single", cfg)
    cfg.layout, cfg.buckets = "parts", [[16, 16], [12, 22]]
    with pytest.raises(TLDError, match=r"multiples of 4 pixels \(VAE factor 2 x 2\), got 12x22$"):
        encode(bucketed / "shards", tmp_path / "odd", cfg)
    cfg.buckets, cfg.add = [[16, 16]], True  # --add needs the buckets the dataset was encoded with
    with pytest.raises(TLDError, match=r"other settings \['image_size'\]"):
        encode(bucketed / "shards", bucketed / "ds", cfg)
    from tld.cli import main

    cli = [
        "preprocess",
        "encode",
        str(bucketed / "shards"),
        str(tmp_path / "cli"),
        "--vae",
        str(tiny_vae_dir),
    ]
    cli += ["--text-encoder", str(tiny_clip_dir), "--no-progress", "--layout", "parts"]
    assert main([*cli, "--buckets", "16x16,12x"]) == 1 and not (tmp_path / "cli").exists()
    assert main([*cli, "--buckets", "16x16, 12x24", "--shards-per-part", "2"]) == 0
    assert "latents [4, 8, 8] x 8, [4, 6, 12] x 6 float16" in capsys.readouterr().out
    assert (
        open_latent_dataset(tmp_path / "cli").meta.buckets
        == open_latent_dataset(bucketed / "ds").meta.buckets
    )


def test_two_bucket_dataset_trains_resumes_and_samples_at_both_sizes(bucketed, tmp_path):
    from tld.cli import main
    from tld.pipeline import TLDPipeline
    from tld.training.config import load_config
    from tld.training.loop import train

    def settings(run, *extra):
        out = [
            f"data.path={bucketed / 'ds'}",
            "model_preset=tiny",
            f"output_dir={tmp_path / run}",
            "batch_size=3",
        ]
        out += [
            "sample.every=0",
            "tracker=none",
            "progress=false",
            "optim.warmup_steps=2",
            "checkpoint_every=4",
        ]
        return out + ["mask.ratio=0.5", "data.flip=true", "seed=1", *extra]

    straight = train(load_config(None, settings("straight", "steps=8", "sample.every=8", "sample.num=4")))
    grid = Image.open(tmp_path / "straight" / "samples" / "step_0000008.png")
    assert grid.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2x2 grid of the first bucket's 16x16 images
    data = LatentDataset(bucketed / "ds")
    trained = [StepBatches(data, 3, seed=1, flip=True).bucket(k)[0] for k in range(8)]
    assert set(trained[4:]) == {0, 1}  # the trainer's batches (same seed and size) took both shapes
    step_4 = tmp_path / "straight" / "checkpoints" / "step_4"
    resumed = train(load_config(None, settings("resumed", "steps=8", f"resume={step_4}")))
    assert resumed.step == 8 and resumed.losses == straight.losses[4:] and all(np.isfinite(straight.losses))

    assert main(["export", str(tmp_path / "straight"), str(tmp_path / "model")]) == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["training"]["buckets"] == [[16, 16], [12, 24]]
    pipe = TLDPipeline.from_pretrained(tmp_path / "model", device="cpu")
    torch.manual_seed(0)
    square = pipe("square picture 0", steps=2, seed=0, progress=False)[0]
    wide = pipe("wide picture 1", steps=2, seed=0, height=12, width=24, progress=False)[0]
    assert square.size == (16, 16) and wide.size == (24, 12)


def test_bucketed_encode_resumes_after_a_kill_and_adds_shards(
    bucketed, tiny_vae_dir, tiny_clip_dir, tmp_path, monkeypatch
):
    import shutil

    import tld.preprocessing.encode as encode_module

    cfg = EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=3, progress=False)
    cfg.layout, cfg.shards_per_part, cfg.buckets = "parts", 2, [[16, 16], [12, 24]]
    real, calls = encode_module.shard_arrays, []

    def killed_after_three(*args, **kwargs):  # the first group done, the second killed half-way
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode_module, "shard_arrays", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        encode(bucketed / "shards", tmp_path / "ds", cfg)
    assert len(list((tmp_path / "ds" / "parts").iterdir())) == 2  # both bucket parts of the first group
    monkeypatch.setattr(encode_module, "shard_arrays", real)
    cfg.resume = True
    encode(bucketed / "shards", tmp_path / "ds", cfg)
    want = json.loads((bucketed / "ds" / "parts.json").read_text())
    assert json.loads((tmp_path / "ds" / "parts.json").read_text()) == want

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in ((first, ["00000.tar", "00001.tar"]), (second, ["00002.tar", "00003.tar"])):
        folder.mkdir()
        for name in names:
            shutil.copy(bucketed / "shards" / name, folder / name)
    cfg.resume = False
    encode(first, tmp_path / "added", cfg)
    cfg.add = True
    meta = encode(second, tmp_path / "added", cfg)
    assert meta.buckets == open_latent_dataset(bucketed / "ds").meta.buckets
    assert json.loads((tmp_path / "added" / "parts.json").read_text()) == want
