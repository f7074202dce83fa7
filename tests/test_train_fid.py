"""FID during training (tld.training.fid_eval): a tiny model, a tiny random AutoencoderKL, real
EfficientNet-Lite0 features and real accelerate + TensorBoard, on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_fixtures import tiny_run_settings, write_dataset

from tld.data import LatentDataset
from tld.data.format import read_meta, write_meta
from tld.errors import TLDError
from tld.training.config import load_config
from tld.training.fid_eval import start_fid
from tld.training.loop import train


def _data_with_vae(tmp_path: Path, vae: Path | None) -> Path:
    """The 32-row pattern dataset (4x8x8 latents, 16x16 images through the tiny VAE) with its VAE recorded."""
    folder = write_dataset(tmp_path / "data", n=32)
    meta = read_meta(folder)
    meta.vae = {"path": str(vae), "latent_scale": 1.0} if vae else {}
    write_meta(folder, meta)
    return folder


def _real_images(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return folder


def _config(tmp_path: Path, *overrides: str):
    reference = tmp_path / "real"
    if not reference.exists():
        _real_images(reference)
    fid = [
        f"fid.reference={reference}",
        "fid.num=5",
        "fid.batch_size=3",
        "fid.steps=2",
        f"fid.cache_dir={tmp_path / 'cache'}",
    ]
    return load_config(None, tiny_run_settings(tmp_path) + fid + list(overrides))


def test_fid_is_logged_every_k_steps_to_tensorboard_and_jsonl(tmp_path, tiny_vae_dir):
    _data_with_vae(tmp_path, tiny_vae_dir)
    result = train(_config(tmp_path, "steps=6", "fid.every=3", "tracker=tensorboard", "checkpoint_every=0"))
    assert result.step == 6
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert all(math.isfinite(r["fid"]) and r["fid"] > 0 and r["n"] == 5 and r["n_real"] == 8 for r in rows)
    assert rows[0]["fid"] != rows[1]["fid"]  # the weights changed between the evaluations

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tld"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("fid")}
    assert sorted(logged) == [3, 6]
    assert logged[6] == pytest.approx(rows[1]["fid"], rel=1e-5)


def test_fid_images_do_not_depend_on_the_batch_size(tmp_path, tiny_vae_dir):
    from tld.diffusion import get_parameterization
    from tld.model import Denoiser
    from tld.training.objective import build_model

    data = LatentDataset(_data_with_vae(tmp_path, tiny_vae_dir))
    config = _config(tmp_path, "fid.every=1")
    torch.manual_seed(0)
    net = build_model(config, data).eval()
    assert isinstance(net, Denoiser)
    monitor = start_fid(config, data, torch.device("cpu"), main=True)
    assert monitor is not None and monitor.real.shape == (8, 1280)
    param = get_parameterization("tld")
    in_threes = monitor.images(net, param, torch.device("cpu"))
    monitor.config.batch_size = 5
    at_once = monitor.images(net, param, torch.device("cpu"))
    assert in_threes.shape == (5, 16, 16, 3) and in_threes.dtype == np.uint8
    np.testing.assert_array_equal(in_threes, at_once)
    assert len({im.tobytes() for im in at_once}) == 5  # each image has its own seed and condition


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["fid.every=0"], r"fid.every must be >= 1"),
        (["fid.every=-2"], r"fid.every must be (an integer )?>= [01]"),
        (["fid.every=2", "fid.reference=/no/dir"], r"fid.reference /no/dir is not a folder"),
        (["fid.every=2", 'fid.reference=""'], r"fid.reference \(a shard or image folder"),
        (["fid.every=2", "fid.num=1"], r"fid.num must be an integer >= 2"),
        (["fid.every=2", "fid.sampler=nope"], r"unknown sampler 'nope'"),
        (["fid.every=2", "fid.schedule=nope"], r"fid.schedule 'nope' is unknown"),
        (["fid.every=2", "fid.extractor=clip"], r"unknown feature extractor 'clip'"),
    ],
)
def test_bad_fid_config_fails_at_start(tmp_path, tiny_vae_dir, overrides, match):
    _data_with_vae(tmp_path, tiny_vae_dir)
    with pytest.raises(TLDError, match=match):
        train(_config(tmp_path, "steps=4", *overrides))
    assert not (tmp_path / "run" / "checkpoints").exists()  # not a single step ran


def test_a_dataset_without_a_vae_fails_at_start(tmp_path):
    _data_with_vae(tmp_path, None)
    with pytest.raises(TLDError, match=r"FID needs a VAE to decode samples: .*records none; set fid.vae"):
        train(_config(tmp_path, "steps=4", "fid.every=2"))
    with pytest.raises(TLDError, match=r"fid: VAE folder not found: .*set fid.vae"):
        train(_config(tmp_path, "steps=4", "fid.every=2", f"fid.vae={tmp_path / 'missing_vae'}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_sample_grid_vae_that_does_not_load_fails_at_start(tmp_path):
    # Before: a warning, latent previews, and a module-global cache that kept the failure.
    _data_with_vae(tmp_path, tmp_path / "moved_vae")
    with pytest.raises(TLDError, match=r"sample: VAE folder not found: .*set sample.vae"):
        train(load_config(None, tiny_run_settings(tmp_path) + ["steps=4", "sample.every=2"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fid_is_off_by_default(tmp_path):
    _data_with_vae(tmp_path, None)  # no VAE and no reference: nothing is loaded or checked
    config = load_config(None, tiny_run_settings(tmp_path) + ["steps=2"])
    assert config.fid.every == 0 and not config.fid.reference
    assert train(config).step == 2
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_the_objective_config_loads_with_its_fid_block():
    root = Path(__file__).resolve().parents[1] / "configs"
    config = load_config(root / "objective_emoji.yaml")
    assert (config.fid.every, config.fid.num, config.steps) == (500, 250, 3000)
    assert config.diffusion.parameterization == {"name": "tld"}
    edm = load_config(
        root / "objective_emoji.yaml",
        ["diffusion.parameterization={name: edm, sigma_data: 1.0}", "diffusion.density={name: lognormal}"],
    )
    assert edm.diffusion.density == {"name": "lognormal"} and edm.fid == config.fid
