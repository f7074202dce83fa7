"""`tld recipe emoji` end to end at toy scale: every step runs, a rerun skips finished steps and
resumes a killed one (training from its last checkpoint), --ship writes an fp16 bundle with a model
card that loads and generates, and --vae DIR takes a VAE trained earlier."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_preprocess_iconify import make_set
from tld.preprocessing.recaption import STYLE_SUFFIX

from tld import TLDPipeline, training
from tld.errors import TLDError
from tld.recipes.emoji import EmojiRecipe, run_recipe
from tld.training import checkpoint as ckpt

TINY_VAE = {
    "model": {"block_out_channels": [8, 16], "norm_num_groups": 4},
    "steps": 6,
    "batch_size": 4,
    "val_holdout": 4,
    "eval_every": 0,
    "checkpoint_every": 3,
    "mixed_precision": "no",
    "tracker": "none",
}
TINY_TRAIN = {
    "model": {"embed_dim": 32, "depth": 1, "num_heads": 2, "noise_embed_dim": 16, "patch_size": 2},
    "steps": 6,
    "batch_size": 4,
    "checkpoint_every": 3,
    "mixed_precision": "no",
    "tracker": "none",
    "sample": {"every": 0},
    "optim": {"warmup_steps": 1},
}


def tiny_recipe(tmp_path) -> EmojiRecipe:
    sources = {"openmoji": "openmoji", "tiny": str(make_set(tmp_path / "pkg", broken=False))}
    return EmojiRecipe(
        out=tmp_path / "run", size=16, limit=6, sources=sources, seeds=2, progress=False,
        vae_overrides=TINY_VAE, train_overrides=TINY_TRAIN,
        finish={"steps": 2, "data": {"balance": {"boost": {"heart": 2}}}},
        # bf16: one process trains the fp32 phases, then this one (accelerate's state must not refuse it)
        polish={"steps": 2, "optim": {"lr": 5.0e-4}, "mixed_precision": "bf16"},
    )  # fmt: skip


def _check_summary(r, summary: dict) -> None:
    """The colour table (with its real-image ceiling) and the shape table of the eval step."""
    assert len(summary["rows"]) == 27 and summary["images"] == 54
    assert 0.0 <= summary["overall"] <= 1.0
    # The ceiling is measured on the data: the tiny set's one "red heart" is classed red.
    assert summary["real"]["per_colour"]["red"] == 1.0 and summary["real"]["images"] == 1
    # The shape table: the same colours x heart, circle, square on seeds the colour table does not use,
    # with the classifier's score on the real images captioned with a shape (the tiny set's red heart).
    shapes = summary["shapes"]
    assert shapes["images"] == 54 and shapes["seed_start"] == r.shape_seed == 1000
    assert shapes["real"]["counts"]["heart"] == 1 and shapes["real"]["images"] == 1


def _check_shipped(r, summary: dict, shipped) -> None:
    """The fp16 bundle: its sampling defaults are the colour table's guidance, its card says so, it loads."""
    weights = load_file(str(shipped / "denoiser.safetensors"))
    assert all(
        v.dtype.is_floating_point is False or str(v.dtype) == "torch.float16" for v in weights.values()
    )
    # The guidance the colour table was measured with is the bundle's default, schedule included.
    sampling = json.loads((shipped / "config.json").read_text())["sampling"]
    assert sampling["cfg"] == summary["cfg"] == r.eval_cfg
    assert sampling["cfg_schedule"] == summary["cfg_schedule"] == r.eval_cfg_schedule
    card = (shipped / "README.md").read_text()
    assert (
        f"cfg {r.eval_cfg:g}, {r.eval_cfg_schedule[0][1]:g} while sigma >= {r.eval_cfg_schedule[0][0]:g}"
        in card
    )
    assert "CC BY-SA 4.0" in card and "Test Author" in card and "tld recipe emoji" in card
    assert "Held-out reconstruction PSNR" in card and " nan " not in card
    assert "## Shape words" in card and "seeds 1000-1001" in card and "TLD parameterization" in card
    # the finishing phase on the caption variants and its shape boost are stated, then the polish phase
    assert "8 steps of 4 latents" in card and "the last 2 of them" in card
    assert "then 2 more steps on the same data as a new run started from those steps' EMA weights" in card
    assert "peak lr 0.0005, warmup + cosine; bf16 autocast)" in card
    assert (
        "8 captions also written with the regex `" + STYLE_SUFFIX + "` cut out" in card
        and "'heart' 2x" in card
    )
    # each phase's data.balance: the first leaves the skin tones out, the finishing phase boosts hearts
    assert "In the first phase, rows whose caption contains 'skin tone' were left out." in card
    assert "In the finishing phase, rows whose caption contains a rare shape were repeated" in card
    pipe = TLDPipeline.from_pretrained(str(shipped))
    assert pipe.sampling.cfg_schedule == r.eval_cfg_schedule
    image = np.asarray(pipe("red heart", steps=4, seed=0)[0])
    assert image.shape == (16, 16, 3) and image.std() > 0


def _check_data_and_finish(r) -> None:
    """The encoded data (and its caption variants) and the finishing phase's checkpoint."""
    assert (r.out / "denoiser" / "checkpoints" / "step_8").is_dir()
    finished = ckpt.load_checkpoint(r.out / "denoiser" / "checkpoints" / "step_8")["state"]["config"]
    assert finished["data"]["path"] == str(r.out / "latents_variants")
    assert finished["data"]["balance"]["boost"] == {"heart": 2}
    variants = json.loads((r.out / "latents_variants" / "meta.json").read_text())
    assert variants["count"] == 16  # every emoji twice: with and without its style
    # 8 emoji (6 OpenMoji + the 2 of the tiny set) with the style word in every caption.
    meta = json.loads((r.out / "latents" / "meta.json").read_text())
    assert meta["count"] == 8 and meta["latent_shape"] == [4, 8, 8] and meta["text_dim"] == 384
    assert meta["text_tokens"] == 24 and meta["text_encoder"]["max_tokens"] == 24
    # The polish phase: a new run from the finishing phase's EMA weights (exported to finish_model), on
    # the variants with the finishing phase's balance, its own learning rate; the model is its EMA.
    polish = ckpt.load_checkpoint(r.out / "polish" / "checkpoints" / "step_2")
    assert polish["state"]["config"]["init_from"] == str(r.finish_model)
    assert polish["state"]["config"]["data"]["path"] == str(r.out / "latents_variants")
    assert polish["state"]["config"]["data"]["balance"]["boost"] == {"heart": 2}
    assert polish["state"]["config"]["data"]["balance"]["drop"] == []  # the skin tones are in
    assert polish["state"]["config"]["optim"]["lr"] == 5.0e-4
    assert polish["state"]["config"]["mixed_precision"] == "bf16"
    finish_ema = load_file(str(r.out / "denoiser" / "checkpoints" / "step_8" / "ema.safetensors"))
    start = load_file(str(r.finish_model / "denoiser.safetensors"))
    assert all(torch.equal(start[k], finish_ema[k]) for k in finish_ema)
    shipped_weights = load_file(str(r.out / "model" / "denoiser.safetensors"))
    polish_ema = load_file(str(r.out / "polish" / "checkpoints" / "step_2" / "ema.safetensors"))
    assert all(torch.equal(shipped_weights[k], polish_ema[k]) for k in polish_ema)
    assert not all(torch.equal(shipped_weights[k], finish_ema[k]) for k in finish_ema)
    recaptioned = json.loads((r.shards / "captioned" / "tld-source.meta").read_text())
    assert "8 images:" in recaptioned["captions"] and "CC BY-SA 4.0" in recaptioned["license"]
    assert "CC BY-SA 4.0" in meta["license"] and "MIT" in meta["license"]


def test_recipe_runs_resumes_and_ships(tmp_path, capsys, monkeypatch):
    r = tiny_recipe(tmp_path)
    real_save = ckpt.save_checkpoint

    def save_then_die(root, step, **kwargs):  # the denoiser training dies after its step-3 checkpoint
        path = real_save(root, step, **kwargs)
        if "denoiser" in str(root) and step == 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(r)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert ckpt.latest_step(r.out / "denoiser" / "checkpoints") == 3
    capsys.readouterr()

    runs = []
    real_train = training.train
    monkeypatch.setattr(training, "train", lambda cfg: runs.append(real_train(cfg)) or runs[-1])
    summary = run_recipe(r, ship=str(tmp_path / "shipped"))
    log = capsys.readouterr().out
    done = ("data openmoji", "data tiny", "data combine", "data colour words", "data caption variants", "vae")
    for step in done + ("encode captioned", "encode variants"):
        assert f"[recipe] {step}: done, skipped" in log
    assert "[recipe] train: running" in log and "[recipe] eval: running" in log
    # The half-trained run resumed at step 3: this call trained steps 4-6, then the finishing phase 7-8
    # on the caption variants, in the same run folder, then the 2 steps of the polish phase's new run.
    assert [(run.step, len(run.losses)) for run in runs] == [(6, 3), (8, 2), (2, 2)]
    _check_data_and_finish(r)
    _check_summary(r, summary)
    _check_shipped(r, summary, tmp_path / "shipped")

    timings = json.loads((r.out / "timings.json").read_text())
    assert set(timings) == {"data", "vae", "encode", "train", "export", "eval"}
    run_recipe(r)  # a finished run: every step is skipped, training too
    log = capsys.readouterr().out
    assert "[recipe] train: done, skipped" in log and "[recipe] train finish: done, skipped" in log
    assert "[recipe] train polish: done, skipped" in log
    assert len(runs) == 3

    # --vae DIR: a VAE trained earlier is copied in, not trained again; the card reads its record.
    r2 = dataclasses.replace(r, out=tmp_path / "run2", vae=r.out / "vae" / "vae")
    shutil.copytree(r.shards, r2.shards)  # the same data, already built
    run_recipe(r2, ship=str(tmp_path / "shipped2"))
    log = capsys.readouterr().out
    assert f"[recipe] vae: using {r2.vae}" in log and "[recipe] vae: done, skipped" in log
    assert not (r2.out / "vae" / "checkpoints").exists()
    assert (r2.out / "vae" / "vae" / "tld_vae.json").read_text() == (r2.vae / "tld_vae.json").read_text()
    card2 = (tmp_path / "shipped2" / "README.md").read_text()
    record = json.loads((r2.vae / "tld_vae.json").read_text())
    assert f"**{record['val']['psnr']:.2f} dB**" in card2
    assert (
        f"Trained {record['training']['steps']} steps of {record['training']['batch_size']} images" in card2
    )


def test_card_states_a_missing_vae_record_instead_of_nan():
    from tld.recipes.card import _vae_line

    assert "records no held-out PSNR" in _vae_line({"vae_val": {}, "vae_steps": "?", "vae_batch": "?"})
    line = _vae_line({"vae_val": {"psnr": 30.424, "psnr_pooled": 28.63}, "vae_steps": 3500, "vae_batch": 16})
    assert "**30.42 dB**" in line and "28.63 dB pooled" in line and "3500 steps of 16 images" in line


def test_recipe_command_rejects_bad_numbers(capsys):
    from tld.cli import main

    assert main(["recipe", "emoji", "--train-steps", "0"]) == 1
    assert "--train-steps must be >= 1" in capsys.readouterr().err
    assert main(["recipe", "emoji", "--finish-steps", "-1"]) == 1
    assert "--finish-steps must be >= 0" in capsys.readouterr().err
    assert main(["recipe", "emoji", "--polish-steps", "-1"]) == 1
    assert "--polish-steps must be >= 0" in capsys.readouterr().err


def test_card_names_the_objective_and_trunk_options_of_the_run():
    from tld.recipes.ship import _denoiser_recipe

    assert _denoiser_recipe({}) == "TLD parameterization"
    config = {"diffusion": {"parameterization": {"name": "flow"}}, "model": {"adaln": True, "qk_norm": True}}
    assert _denoiser_recipe(config) == "flow matching, adaLN-Zero, QK-norm"


def test_the_finishing_phase_config(tmp_path):
    r = EmojiRecipe(out=tmp_path / "run", train_overrides={"steps": 100})
    assert r.finish["steps"] == r.finish_steps == 20000  # configs/emoji_demo_finish.yaml
    cfg = r.finish_config()
    first = r.train_config()
    assert cfg["steps"] == 20100 and cfg["resume_with_changes"] is True
    assert cfg["data"]["path"] == str(tmp_path / "run" / "latents_variants")
    assert first["data"]["path"] == str(tmp_path / "run" / "latents")
    assert cfg["data"]["balance"]["boost"] == {"heart": 3, "circle": 3, "square": 3}
    assert cfg["output_dir"] == first["output_dir"]  # the same run, resumed
    bad = dataclasses.replace(r, finish={"steps": 5, "optim": {"lr": 1.0}})
    with pytest.raises(TLDError, match="only steps and data may change, not optim"):
        bad.finish_config()
    assert dataclasses.replace(r, finish={"steps": 0}).finish_steps == 0


def test_the_polish_phase_config(tmp_path):
    r = EmojiRecipe(out=tmp_path / "run", train_overrides={"steps": 100})
    # configs/emoji_demo_polish.yaml: a new run from the finishing phase's EMA weights
    assert r.polish_steps == 16000
    cfg = r.polish_config()
    assert cfg["steps"] == 16000 and cfg["optim"]["lr"] == 3.0e-4 and cfg["mixed_precision"] == "bf16"
    assert cfg["optim"]["warmup_steps"] == r.train_config()["optim"]["warmup_steps"]  # the rest inherited
    assert cfg["init_from"] == str(r.finish_model) and cfg["output_dir"] == str(tmp_path / "run" / "polish")
    assert cfg["data"]["path"] == str(tmp_path / "run" / "latents_variants")
    assert cfg["data"]["balance"] == {"boost": {"heart": 3, "circle": 3, "square": 3}}  # the finishing phase's
    assert "resume_with_changes" not in cfg and r.final_run == tmp_path / "run" / "polish"
    bad = dataclasses.replace(r, polish={"steps": 5, "ema": {"decay": 0.9}})
    with pytest.raises(TLDError, match="only steps, data, optim, mixed_precision may be set, not ema"):
        bad.polish_config()
    # no finishing phase, no polish phase: the shipped weights are the first run's
    no_finish = dataclasses.replace(r, finish={"steps": 0})
    assert no_finish.polish_steps == 0 and no_finish.final_run == tmp_path / "run" / "denoiser"
    assert dataclasses.replace(r, polish={"steps": 0}).final_run == tmp_path / "run" / "denoiser"
