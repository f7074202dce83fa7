"""The `tld generate|img2img|inpaint|outpaint|convert` commands and PNG metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_fixtures import TEXT_DIM, checker_image, tiny_pipeline

from tld.cli import main
from tld.errors import TLDError
from tld.model import Denoiser
from tld.pipeline.images import make_grid, read_png_metadata, save_png


@pytest.fixture(scope="module")
def model_dir(tiny_vae_dir, tiny_clip_dir, tmp_path_factory):
    pipe = tiny_pipeline(tiny_vae_dir, tiny_clip_dir, seed=3)
    return pipe.save_pretrained(tmp_path_factory.mktemp("cli") / "model"), pipe


def test_png_metadata_round_trip(tmp_path):
    meta = {
        "prompt": "a cute owl",
        "seed": 11,
        "cfg": 7.5,
        "schedule_opts": {"exponent": 2.0},
        "seeds": [1, 2],
    }
    path = save_png(Image.new("RGB", (8, 4), "red"), tmp_path / "x.png", meta)
    assert read_png_metadata(path) == meta
    with Image.open(path) as im:
        assert im.text["parameters"].startswith("a cute owl\n") and "seed: 11" in im.text["parameters"]
    assert read_png_metadata(save_png(Image.new("RGB", (2, 2)), tmp_path / "plain.png")) == {}
    with pytest.raises(TLDError, match="ending in .png"):
        save_png(Image.new("RGB", (2, 2)), tmp_path / "x.jpg")


def test_grid_layout():
    images = [Image.new("RGB", (4, 3), c) for c in ("red", "green", "blue")]
    grid = make_grid(images, pad=1)
    assert grid.size == (9, 7)
    assert grid.getpixel((5, 0)) == (0, 128, 0) and grid.getpixel((0, 4)) == (0, 0, 255)
    assert grid.getpixel((4, 0)) == (255, 255, 255)


def test_generate_separate_files_match_the_api(model_dir, tmp_path, capsys):
    folder, pipe = model_dir
    out = tmp_path / "owl.png"
    argv = ["generate", "a cute owl", "--model", str(folder), "--steps", "2", "--cfg", "3", "--seed", "11"]
    assert main([*argv, "-n", "2", "--separate", "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "owl_0.png"), str(tmp_path / "owl_1.png")]
    expected = pipe("a cute owl", steps=2, cfg=3.0, seed=11, num_images=2, progress=False)
    for k, path in enumerate(printed):
        meta = read_png_metadata(path)
        assert meta["prompt"] == "a cute owl" and meta["seed"] == 11 + k
        assert (meta["steps"], meta["cfg"], meta["sampler"], meta["model"]) == (
            2,
            3.0,
            "dpmpp_2m",
            str(folder),
        )
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected[k]))


def test_generate_cfg_schedule_matches_the_api(model_dir, tmp_path, capsys):
    folder, pipe = model_dir
    out = tmp_path / "owl.png"
    argv = ["generate", "a cute owl", "--model", str(folder), "--steps", "3", "--seed", "2", "--no-progress"]
    assert main([*argv, "--cfg", "1.5", "--cfg-schedule", "2:5", "-o", str(out)]) == 0
    expected = pipe("a cute owl", steps=3, cfg=1.5, cfg_schedule=[[2, 5]], seed=2, progress=False)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected[0]))
    assert read_png_metadata(out)["cfg_schedule"] == [[2.0, 5.0]]
    constant = pipe("a cute owl", steps=3, cfg=1.5, seed=2, progress=False)
    assert not np.array_equal(np.asarray(constant[0]), np.asarray(expected[0]))
    capsys.readouterr()  # the run above printed the model defaults it used
    assert main([*argv, "--cfg-schedule", "2:five", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cfg schedule must be SIGMA:SCALE pieces" in err


def test_generate_grid_with_two_prompts(model_dir, tmp_path, capsys):
    folder, _ = model_dir
    out = tmp_path / "grid.png"
    argv = ["generate", "an owl", "a car", "--model", str(folder), "--steps", "1", "--seed", "5", "-n", "2"]
    assert main([*argv, "--sampler", "euler", "-o", str(out), "--no-progress"]) == 0
    with Image.open(out) as im:
        assert im.size == (16 * 2 + 4, 16 * 2 + 4)
    meta = read_png_metadata(out)
    assert meta["prompts"] == ["an owl", "an owl", "a car", "a car"] and meta["seeds"] == [5, 6, 7, 8]
    assert meta["sampler"] == "euler"


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_edit_commands_match_the_api(model_dir, tmp_path):
    from tld.encoders.images import load_image

    folder, pipe = model_dir
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    checker_image(16, seed=2).save(image)
    m = np.zeros((16, 16), dtype=np.uint8)
    m[4:12, 4:12] = 255
    Image.fromarray(m).save(mask)
    given = load_image(image)
    common = ["--model", str(folder), "--steps", "2", "--seed", "1", "--no-progress"]
    api = dict(steps=2, seed=1, progress=False)

    assert (
        main(["outpaint", str(image), "a wide view", "--right", "8", *common, "-o", str(tmp_path / "o.png")])
        == 0
    )
    got = _png(tmp_path / "o.png")
    assert got.shape == (16, 24, 3) and np.array_equal(got[:, :16], np.asarray(given))
    assert np.array_equal(got, np.asarray(pipe.outpaint(given, "a wide view", right=8, **api)[0]))

    argv = ["inpaint", str(image), str(mask), "a hole", *common, "--composite", "-o", str(tmp_path / "i.png")]
    assert main(argv) == 0
    got, hole = _png(tmp_path / "i.png"), m > 0
    expected = np.asarray(pipe.inpaint(given, Image.fromarray(m), "a hole", composite=True, **api)[0])
    assert np.array_equal(got, expected) and read_png_metadata(tmp_path / "i.png")["prompt"] == "a hole"
    assert np.array_equal(got[~hole], np.asarray(given)[~hole])  # the kept region is the input
    assert np.abs(got[hole].astype(int) - np.asarray(given)[hole]).mean() > 2  # the hole is repainted

    argv = ["img2img", str(image), "redo", "--strength", "0.5", *common, "-o", str(tmp_path / "r.png")]
    assert main(argv) == 0
    expected = np.asarray(pipe.img2img(given, "redo", strength=0.5, **api)[0])
    assert np.array_equal(_png(tmp_path / "r.png"), expected)
    assert read_png_metadata(tmp_path / "r.png")["strength"] == 0.5
    other = np.asarray(pipe.img2img(given, "redo", strength=0.5, steps=2, seed=2, progress=False)[0])
    assert not np.array_equal(other, expected)  # the seed reached the command


def test_cli_errors_are_one_line(model_dir, tmp_path, capsys):
    folder, _ = model_dir
    assert main(["generate", "owl", "--model", str(folder), "-o", str(tmp_path / "x.jpg")]) == 1
    assert "expected an output path ending in .png, got" in capsys.readouterr().err
    assert main(["generate", "owl", "--model", str(tmp_path / "none"), "-o", str(tmp_path / "x.png")]) == 1
    assert "model folder not found" in capsys.readouterr().err
    assert (
        main(["generate", "owl", "--model", str(folder), "--height", "10", "-o", str(tmp_path / "x.png")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "height must be a positive multiple of 4 pixels" in err


def test_convert_writes_a_model_folder_with_hub_specs(tmp_path, capsys):
    from reference_tld import make_original  # the reference implementation of the original network

    net = make_original(seed=4, embed=64, layers=2, image=8, patch=2, noise_dims=32, text=TEXT_DIM)
    torch.save(net.state_dict(), tmp_path / "state_dict_378000.pth")
    out = tmp_path / "tld-original"
    assert main(["convert", str(tmp_path / "state_dict_378000.pth"), "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vae"] == {"path": "madebyollin/sdxl-vae-fp16-fix", "latent_scale": 8.0}
    assert config["text_encoder"] == {"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai"}
    assert config["parameterization"]["name"] == "tld" and config["sampling"]["schedule"] == "tld"
    assert json.loads(capsys.readouterr().out)["model_folder"] == str(out)
    x, t, label = torch.randn(2, 4, 8, 8), torch.rand(2, 1), torch.randn(2, TEXT_DIM)
    with torch.no_grad():
        expected = net(x, t, label)  # the independent re-implementation, not the converter
        assert expected.abs().mean() > 0.1
        got = Denoiser.from_pretrained(out).eval()(x, t, text_emb=label)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compile_and_vae_tile_options_reach_the_pipeline(model_dir):
    # Compiling itself takes too long for the CPU tests; torch.compile compiles lazily, at the
    # first call, so this checks the option is wired through without paying for it.
    import argparse

    from tld.commands.generate import _load
    from tld.pipeline import TLDPipeline

    assert TLDPipeline.from_pretrained(model_dir[0], device="cpu").denoiser._compiled_call_impl is None
    assert TLDPipeline.from_pretrained(model_dir[0], device="cpu", compile=True).denoiser._compiled_call_impl
    args = argparse.Namespace(original=None, model=str(model_dir[0]), device="cpu", dtype=None)
    pipe = _load(argparse.Namespace(**vars(args), compile=True, vae_tile=6))
    assert pipe.denoiser._compiled_call_impl is not None and pipe.vae.tile == 6
    pipe = _load(argparse.Namespace(**vars(args), compile=False, vae_tile=0))
    assert pipe.denoiser._compiled_call_impl is None and pipe.vae.tile is None
