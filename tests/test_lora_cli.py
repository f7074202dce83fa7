"""`tld generate --prompts-file FILE` and `--lora PATH[:SCALE]`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import tiny_pipeline

from tld.adapters import LoraSettings, attach_lora, network_fingerprint, save_adapter
from tld.adapters.lora import adapter_state
from tld.cli import main
from tld.pipeline import TLDPipeline
from tld.pipeline.images import read_png_metadata


@pytest.fixture(scope="module")
def model_dir(tiny_vae_dir, tiny_clip_dir, tmp_path_factory):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir, seed=3).save_pretrained(
        tmp_path_factory.mktemp("m") / "model"
    )


def _adapter(model_dir, folder):
    net = TLDPipeline.from_pretrained(model_dir, device="cpu", cpu_kernels="off").denoiser
    attach_lora(net, LoraSettings(rank=2, alpha=2))
    with torch.no_grad():
        for key, param in net.named_parameters():
            if ".lora_B." in key:
                param.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    state = adapter_state(net.state_dict(), "default")
    return save_adapter(
        folder, state, LoraSettings(rank=2, alpha=2), str(model_dir), network_fingerprint(net)
    )


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_prompts_file_writes_one_image_per_line_with_its_seed(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cute owl\n\n# a comment\na red car\n")
    argv = ["generate", "--prompts-file", str(prompts), "--model", str(model_dir), "--steps", "2"]
    assert main([*argv, "--seed", "7", "-o", str(tmp_path / "x.png"), "--no-progress"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "x_line1_seed7.png"), str(tmp_path / "x_line4_seed10.png")]
    pipe = TLDPipeline.from_pretrained(model_dir, device="cpu")
    for path, prompt, seed in zip(printed, ["a cute owl", "a red car"], [7, 10]):
        meta = read_png_metadata(path)
        assert (meta["prompt"], meta["seed"]) == (prompt, seed)
        expected = pipe(prompt, steps=2, seed=seed, progress=False)[0]
        assert np.array_equal(_pixels(path), np.asarray(expected))


def test_lora_option_loads_adapters_with_scales(model_dir, tmp_path, capsys):
    adapter = _adapter(model_dir, tmp_path / "ad")
    base = ["generate", "owl", "--model", str(model_dir), "--steps", "2", "--seed", "1", "--no-progress"]
    outs = {}
    for name, extra in {
        "none": [],
        "zero": ["--lora", f"{adapter}:0"],
        "one": ["--lora", str(adapter)],
    }.items():
        assert main([*base, *extra, "-o", str(tmp_path / f"{name}.png")]) == 0
        outs[name] = _pixels(tmp_path / f"{name}.png")
    assert np.array_equal(outs["zero"], outs["none"]) and not np.array_equal(outs["one"], outs["none"])
    capsys.readouterr()
    assert main([*base, "--lora", str(tmp_path / "missing:0.5"), "-o", str(tmp_path / "y.png")]) != 0
    assert "--lora expects an adapter folder" in capsys.readouterr().err
    assert main(["generate", "--model", str(model_dir), "-o", str(tmp_path / "z.png")]) != 0
    assert "one of the two" in capsys.readouterr().err
