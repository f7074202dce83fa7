"""Fine-tuning the bundled model (init_from): it keeps the base's text mode, shapes and sampling
defaults, refuses what would change them, and still draws the named colours after a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from train_fixtures import write_dataset

from tld import TLDPipeline
from tld.data import LatentDataset
from tld.data.format import DatasetMeta, write_meta
from tld.errors import TLDError
from tld.pipeline.folder import bundled_model_path
from tld.training.config import load_config
from tld.training.objective import build_model

RGB = {"red": (220, 30, 30), "green": (40, 170, 40), "blue": (30, 60, 220), "yellow": (240, 210, 30)}


def _shape(colour: str, shape: str, inset: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    box = (inset, inset, 63 - inset, 63 - inset)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=RGB[colour])
    return image


def shapes_dataset(folder: Path) -> Path:
    """32 drawn "<colour> <circle|square>" images encoded as the bundled model was trained:
    its VAE, per-token MiniLM text (24 tokens)."""
    from tld import TLDPipeline
    from tld.encoders.images import pil_to_tensor

    pipe = TLDPipeline.from_pretrained(device="cpu")
    rows = [(c, s, inset) for c in RGB for s in ("circle", "square") for inset in (4, 8, 12, 16)]
    pixels = torch.cat([pil_to_tensor(_shape(c, s, i)) for c, s, i in rows])
    latents = pipe.vae.encode(pixels).float().numpy()
    emb = pipe.text_encoder.encode([f"{c} {s}" for c, s, _ in rows], tokens=True)
    folder.mkdir(parents=True)
    np.save(folder / "latents.npy", latents.astype(np.float16))
    np.save(folder / "text_emb.npy", emb.tokens.numpy().astype(np.float16))
    np.save(folder / "text_mask.npy", emb.mask.numpy())
    meta = DatasetMeta(
        count=len(rows),
        latent_shape=list(latents.shape[1:]),
        latent_scale=pipe.vae.latent_scale,
        vae=pipe.vae.spec,
        text_encoder=pipe.text_encoder.spec,
        text_dim=emb.tokens.shape[-1],
        text_tokens=emb.tokens.shape[1],
    )
    write_meta(folder, meta)
    return folder


def test_finetuned_bundled_model_keeps_defaults_and_colours(tmp_path):
    from tld.eval.colours import colour_table
    from tld.training.export import export_checkpoint
    from tld.training.loop import train

    base = bundled_model_path()
    data = shapes_dataset(tmp_path / "data")
    overrides = [f"data.path={data}", f"init_from={base}", f"output_dir={tmp_path / 'run'}", "steps=20",
                 "batch_size=8", "optim.lr=1e-4", "optim.warmup_steps=5", "sample.every=0",
                 "tracker=none", "progress=false", "checkpoint_every=20"]  # fmt: skip
    train(load_config(None, overrides))
    out = export_checkpoint(tmp_path / "run", tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    shipped = json.loads((base / "config.json").read_text())
    assert config["sampling"] == shipped["sampling"]  # cfg 1.5 + the 2:4 schedule, not cfg 7
    assert (
        config["text_tokens"] is True and config["denoiser"]["embed_dim"] == shipped["denoiser"]["embed_dim"]
    )
    colours, objects = ["red", "green", "blue", "yellow"], ["heart", "circle"]
    before = colour_table(TLDPipeline.from_pretrained(base, device="cpu"), colours, objects, seeds=2)["overall"]
    after = colour_table(TLDPipeline.from_pretrained(out, device="cpu"), colours, objects, seeds=2)["overall"]
    assert after >= min(before, 0.75), (before, after)


def _pooled_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "pooled", n=8, shape=(4, 16, 16), text_dim=384, val=0)


def test_finetune_refuses_pooled_text_for_a_per_token_model(tmp_path):
    data = _pooled_dataset(tmp_path)
    cfg = load_config(None, [f"data.path={data}", f"init_from={bundled_model_path()}", "tracker=none"])
    with pytest.raises(TLDError, match=r"reads per-token text embeddings but the dataset .* gives pooled"):
        build_model(cfg, LatentDataset(data))


def test_finetune_refuses_a_changed_embed_dim(tmp_path):
    data = write_dataset(tmp_path / "tokens", n=8, shape=(4, 16, 16), text_dim=384, tokens=3, val=0)
    overrides = [f"data.path={data}", f"init_from={bundled_model_path()}", "model.embed_dim=128"]
    with pytest.raises(TLDError, match=r"config.model sets embed_dim=128 \(base has 192\)"):
        build_model(load_config(None, overrides), LatentDataset(data))
    net = build_model(load_config(None, overrides[:2]), LatentDataset(data))
    assert net.config.embed_dim == 192


def test_export_writes_the_training_sample_settings(tmp_path):
    from train_fixtures import tiny_run_settings

    from tld.training.export import export_checkpoint
    from tld.training.loop import train

    overrides = tiny_run_settings(tmp_path) + ["steps=2", "checkpoint_every=2", "sample.cfg=3.5"]
    train(load_config(None, overrides))
    out = export_checkpoint(tmp_path / "run", tmp_path / "model")
    sampling = json.loads((out / "config.json").read_text())["sampling"]
    assert sampling == {"cfg": 3.5, "steps": 10, "sampler": "dpmpp_2m", "schedule": "tld"}
