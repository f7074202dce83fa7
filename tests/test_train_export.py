"""`tld train` from the CLI, sample grids decoded by the dataset's VAE, and `tld export`."""

import json

import numpy as np
import torch
from PIL import Image
from train_fixtures import write_dataset

from tld.cli import main
from tld.data.format import read_meta, write_meta
from tld.training import checkpoint as ckpt


def test_cli_train_samples_with_vae_and_exports_a_model_folder(tmp_path, tiny_vae_dir, tiny_clip_dir):
    from tld.encoders.text import load_text_encoder
    from tld.encoders.vae import VAE
    from tld.model import Denoiser

    data = write_dataset(tmp_path / "data", n=16, text_dim=24)
    meta = read_meta(data)
    meta.vae = {"path": str(tiny_vae_dir), "latent_scale": 1.0}
    meta.text_encoder = load_text_encoder(tiny_clip_dir).spec
    write_meta(data, meta)
    (tmp_path / "cfg.yaml").write_text(
        f"data: {{path: {data}}}\nmodel_preset: tiny\noutput_dir: {tmp_path / 'run'}\nsteps: 4\n"
        "batch_size: 4\ncheckpoint_every: 2\nsample: {every: 4, steps: 2, num: 4}\nprogress: false\n"
    )
    out = tmp_path / "model"
    code = main(
        ["train", "--config", str(tmp_path / "cfg.yaml"), "--set", "optim.lr=1e-3", "--export", str(out)]
    )
    assert code == 0

    grid = Image.open(tmp_path / "run" / "samples" / "step_0000004.png")
    assert grid.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2x2 decoded 16px images: the VAE upsamples 2x

    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "tld-pipeline" and config["ema"] is True
    assert config["parameterization"]["name"] == "tld"
    assert config["vae"] == "vae" and config["text_encoder"] == "text_encoder"
    assert config["denoiser"]["embed_dim"] == 32 and config["training"]["step"] == 4
    VAE.from_pretrained(out / "vae", latent_scale=1.0)
    assert load_text_encoder(out / "text_encoder").dim == 24
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_4")
    exported = Denoiser.from_pretrained(out).state_dict()
    assert all(torch.equal(exported[k], saved["ema"][k]) for k in exported)

    raw = tmp_path / "raw"
    assert main(["export", str(tmp_path / "run"), str(raw), "--no-ema"]) == 0
    raw_state = Denoiser.from_pretrained(raw).state_dict()
    assert all(torch.equal(raw_state[k], saved["model"][k]) for k in raw_state)
    assert not all(torch.equal(raw_state[k], exported[k]) for k in raw_state)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=8)
    latents = np.load(data / "latents.npy")
    latents[5] = np.nan
    np.save(data / "latents.npy", latents)
    code = main(
        ["train", "--set", f"data.path={data}", "--set", "model_preset=tiny", "--set", "tracker=none"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.endswith("has NaN/Inf values, first at row 5")
    assert main(["train", "--set", "optim.lrr=1"]) == 1
    assert "unknown config keys ['lrr']" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 1
    assert "not a complete training checkpoint" in capsys.readouterr().err
