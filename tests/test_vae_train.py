"""VAE trainer: the loss falls, resume is exact, the export loads as a --vae, bad input is one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tld.preprocessing.shards import Sample, write_shards

from tld.cli import main
from tld.encoders.vae import VAE
from tld.errors import TLDError
from tld.training.vae_config import VAETrainConfig
from tld.training.vae_data import batch_at, load_shard_images
from tld.training.vae_train import psnr, train_vae


def blob_image(i: int, size: int = 16) -> Image.Image:
    """A coloured disc on white, position and colour varying with i: easy, but not constant."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < (size * 0.3) ** 2
    img = np.full((size, size, 3), 255, np.uint8)
    img[inside] = rng.integers(0, 256, 3)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae_shards")
    write_shards([Sample(blob_image(i), f"blob {i}", {}) for i in range(48)], folder, 20, image_format="png")
    return folder


def tiny_config(folder, out, **kw) -> VAETrainConfig:
    base = {
        "shards": [str(folder)],
        "image_size": 16,
        "val_holdout": 8,
        "model": {"block_out_channels": [8, 16], "norm_num_groups": 4},
        "lr": 3e-3,
        "warmup_steps": 2,
        "steps": 40,
        "batch_size": 8,
        "eval_every": 0,
        "checkpoint_every": 20,
        "log_every": 5,
        "tracker": "none",
        "progress": False,
        "output_dir": str(out),
    }
    return VAETrainConfig.from_dict({**base, **kw})


def test_loss_falls_and_export_loads_as_a_vae(shards, tmp_path):
    result = train_vae(tiny_config(shards, tmp_path / "run"))
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.6 * first, (first, last)
    vae = VAE.from_pretrained(result.vae_dir)
    record = json.loads((result.vae_dir / "tld_vae.json").read_text())
    assert vae.latent_scale == pytest.approx(record["latent_scale"]) and vae.latent_scale > 0
    assert record["val"]["psnr"] == pytest.approx(result.val_psnr)
    assert record["training"]["steps"] == result.step and record["training"]["batch_size"] == 8
    # re-saved (as export and the fp16 bundle do), the VAE keeps its scores and training record
    vae.save_pretrained(tmp_path / "resaved")
    again = json.loads((tmp_path / "resaved" / "tld_vae.json").read_text())
    assert again["val"] == record["val"] and again["training"] == record["training"]
    assert vae.downsample_factor == 2 and vae.latent_shape(16, 16) == (4, 8, 8)
    # The exported VAE reconstructs held-out images better than a flat grey guess does.
    images = torch.stack(
        [torch.from_numpy(np.array(blob_image(i))).permute(2, 0, 1) for i in range(100, 108)]
    )
    x = images.float() / 127.5 - 1
    recon = ((vae.decode(vae.encode(x)).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert psnr(recon, images)[0] > psnr(torch.full_like(images, 128), images)[0] + 3
    assert (tmp_path / "run" / "log.jsonl").is_file()


def test_resume_is_exact(shards, tmp_path, monkeypatch):
    from tld.training import vae_train

    full = train_vae(tiny_config(shards, tmp_path / "full", steps=12, checkpoint_every=6))
    real_step = vae_train._Run.train_step

    def killed_after_six(run):
        if run.step == 6:
            raise KeyboardInterrupt  # a kill right after the step-6 checkpoint
        return real_step(run)

    monkeypatch.setattr(vae_train._Run, "train_step", killed_after_six)
    with pytest.raises(KeyboardInterrupt):
        train_vae(tiny_config(shards, tmp_path / "part", steps=12, checkpoint_every=6))
    monkeypatch.setattr(vae_train._Run, "train_step", real_step)
    resumed = train_vae(tiny_config(shards, tmp_path / "part", steps=12, checkpoint_every=6, resume="latest"))
    assert resumed.losses == full.losses[6:]
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step_12" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "step_12" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_depend_only_on_seed_and_step():
    images = torch.arange(10 * 3 * 2 * 2, dtype=torch.uint8).reshape(10, 3, 2, 2)
    a = batch_at(images, 7, 4, seed=1, flip=True)
    assert torch.equal(a, batch_at(images, 7, 4, seed=1, flip=True))
    assert not torch.equal(a, batch_at(images, 7, 4, seed=2, flip=True))
    # An epoch of 10 images in batches of 5 visits each image exactly once.
    seen = torch.cat([batch_at(images, k, 5, 0, False) for k in range(2)])
    assert sorted(seen[:, 0, 0, 0].tolist()) == sorted((images[:, 0, 0, 0].float() / 127.5 - 1).tolist())


def test_broken_images_are_counted_and_skipped(tmp_path):
    import webdataset as wds

    folder = tmp_path / "mixed"
    folder.mkdir()
    with wds.TarWriter(str(folder / "00000.tar")) as sink:
        for i in range(3):
            buf = io.BytesIO()
            blob_image(i, 24).save(buf, format="PNG")
            sink.write({"__key__": f"{i:04d}", "png": buf.getvalue(), "txt": "ok"})
        sink.write({"__key__": "0003", "png": b"not an image", "txt": "broken"})
        sink.write({"__key__": "0004", "txt": "no image"})
    images, failed = load_shard_images([str(folder)], 16, progress=False)
    assert images.shape == (3, 3, 16, 16)  # 24 px images are centre-cropped and resized
    assert failed == {"cannot decode image": 1, "no image in sample": 1}


def test_bad_input_is_one_line(shards, tmp_path, capsys):
    with pytest.raises(TLDError, match="multiple of 2"):
        train_vae(tiny_config(shards, tmp_path / "r", image_size=15))
    with pytest.raises(TLDError, match="at least one shard folder"):
        train_vae(tiny_config(shards, tmp_path / "r", shards=[]))
    with pytest.raises(TLDError, match="no training images"):
        train_vae(tiny_config(shards, tmp_path / "r", val_holdout=48))
    (tmp_path / "empty").mkdir()
    code = main(
        ["train-vae", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "r"), "--set", "tracker=none"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "no webdataset shards" in err
    code = main(["train-vae", str(shards), "--set", "loss.l1=-1"])
    assert code == 1 and "loss weights" in capsys.readouterr().err
    with pytest.raises(TLDError, match="no complete checkpoint"):
        train_vae(tiny_config(shards, tmp_path / "fresh", resume="latest"))
