"""What a new user's first `tld` commands print and refuse (issue 30 points 4 and 7)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tld.cli import build_parser, main, quiet_progress
from tld.pipeline.folder import bundled_model_path
from tld.pipeline.images import read_png_metadata

APPLE = Path(__file__).resolve().parent.parent / "examples" / "apple.png"


def test_bad_margins_fail_before_the_model_loads(tmp_path, capsys):
    # Only the config files: a load would fail on the missing weights, the size check must come first.
    model = tmp_path / "configs-only"
    (model / "vae").mkdir(parents=True)
    shutil.copy(bundled_model_path() / "config.json", model / "config.json")
    shutil.copy(bundled_model_path() / "vae" / "config.json", model / "vae" / "config.json")
    argv = ["outpaint", str(APPLE), "red apple", "--model", str(model), "--top", "4", "-o", "x.png"]
    assert main(argv) == 1
    assert "outpaint margins must be multiples of 8 pixels, got {'top': 4}" in capsys.readouterr().err
    assert main(["generate", "red apple", "--model", str(model), "--height", "60", "-o", "x.png"]) == 1
    assert "height must be a positive multiple of 8 pixels (VAE factor 4 x patch 2), got 60" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.open(APPLE).crop((0, 0, 60, 64)).save(small)
    assert main(["img2img", str(small), "green apple", "--model", str(model), "-o", "x.png"]) == 1
    assert (
        "the input image's sides must be multiples of 8 pixels, got {'width': 60}" in capsys.readouterr().err
    )
    assert (
        main(
            ["img2img", str(APPLE), "green apple", "--model", str(model), "--strength", "1.5", "-o", "x.png"]
        )
        == 1
    )
    assert "strength must be a number in [0, 1], got 1.5" in capsys.readouterr().err


def test_generate_names_the_defaults_and_the_random_seed(tmp_path, capsys):
    out = tmp_path / "heart.png"
    assert main(["generate", "red heart", "--steps", "2", "--no-progress", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "model defaults: cfg=1.5 cfg_schedule=2:4 sampler=dpmpp_2m schedule=tld" in err
    seed = read_png_metadata(out)["seed"]
    assert f"random seed {seed} (--seed {seed} repeats this run)" in err


def test_cfg_help_names_no_fixed_default():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = [a.help for a in sub.choices["generate"]._actions if "--cfg" in a.option_strings]
    assert helps and "usually" not in helps[0]


@pytest.fixture
def restore_bars():
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    yield transformers_logging
    transformers_logging.enable_progress_bar()
    enable_progress_bars()


@pytest.mark.parametrize("env", ["", "1"])
def test_no_progress_and_tqdm_disable_silence_transformers(monkeypatch, restore_bars, env):
    monkeypatch.setenv("TQDM_DISABLE", env)
    args = argparse.Namespace(progress=not env, no_progress=False)
    quiet_progress(args) if env else quiet_progress(argparse.Namespace(progress=False))
    assert not restore_bars.is_progress_bar_enabled()
    if env:
        assert args.progress is False and args.no_progress is True
        train = argparse.Namespace(overrides=["steps=2"])  # tld train / train-vae: a config field
        quiet_progress(train)
        assert train.overrides == ["steps=2", "progress=false"]
