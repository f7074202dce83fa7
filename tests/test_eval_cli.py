"""Feature extractors, cached reference statistics and `tld eval fid|sweep` on a tiny real model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tld.cli import main
from tld.errors import TLDError
from tld.eval.features import ClassifierExtractor, EfficientNetLite0Extractor, InceptionFIDExtractor
from tld.eval.reference import reference_set

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 160, 40), "yellow": (240, 220, 30)}


def square_images(n: int, size: int = 16, seed: int = 0) -> tuple[list[Image.Image], list[str]]:
    """A coloured square at a random place on white, captioned with its colour."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for i in range(n):
        name = list(COLOURS)[i % len(COLOURS)]
        a = np.full((size, size, 3), 255, np.uint8)
        x, y = rng.integers(0, size // 2, 2)
        a[y : y + size // 2, x : x + size // 2] = COLOURS[name]
        images.append(Image.fromarray(a))
        captions.append(f"a {name} square")
    return images, captions


@pytest.fixture(scope="module")
def extractor() -> EfficientNetLite0Extractor:
    return EfficientNetLite0Extractor(device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    from tld.preprocessing.shards import Sample, write_shards

    images, captions = square_images(12)
    out = tmp_path_factory.mktemp("eval_shards")
    write_shards((Sample(im, c, {}) for im, c in zip(images, captions)), out, 5, "png")
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_vae_dir, tiny_clip_dir) -> Path:
    from pipeline_fixtures import tiny_pipeline

    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir).save_pretrained(
        tmp_path_factory.mktemp("eval") / "model"
    )


def test_efficientnet_features_are_real_deterministic_and_discriminative(extractor):
    import matplotlib

    # The weights are the ImageNet ones: matplotlib's sample photo of Grace Hopper in uniform is
    # ImageNet class 652 "military uniform" (with random weights the top class is arbitrary).
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = np.array(Image.open(path).convert("RGB").resize((224, 224)))[None]
    with torch.inference_mode():
        logits = extractor.network(extractor.prepare(torch.as_tensor(photo).permute(0, 3, 1, 2) / 255))
    assert int(logits.argmax()) == 652
    images, _ = square_images(4, size=32)
    arr = np.stack([np.asarray(im) for im in images])
    a, b = extractor(arr), extractor(torch.as_tensor(arr).permute(0, 3, 1, 2).float() / 255)
    assert a.shape == (4, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)  # uint8 NHWC and float NCHW are the same images
    np.testing.assert_array_equal(a, extractor(arr))  # deterministic
    distances = np.linalg.norm(a[:, None] - a[None], axis=-1)
    assert distances[~np.eye(4, dtype=bool)].min() > 0.05 * np.linalg.norm(a, axis=1).mean()


def test_extractor_rejects_bad_images(extractor):
    with pytest.raises(TLDError, match="must be in \\[0, 1\\]"):
        extractor(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(TLDError, match="4-D"):
        extractor(np.zeros((8, 8, 3), np.uint8))


def test_inception_fid_network_shapes_and_determinism(tmp_path):
    torch.manual_seed(0)
    ex = InceptionFIDExtractor(device="cpu", load=False)  # random weights: no FID weights offline
    x = torch.rand(2, 3, 40, 40)
    f1, f2 = ex(x), ex(x)
    assert f1.shape == (2, 2048) and np.isfinite(f1).all()
    np.testing.assert_array_equal(f1, f2)
    assert not np.allclose(f1[0], f1[1])
    # A state dict with torchvision's names loads through the same path; anything else is refused.
    from tld.eval.inception import fid_inception_v3, load_fid_weights

    net = fid_inception_v3()
    torch.save(net.state_dict(), tmp_path / "ok.pth")
    load_fid_weights(net, tmp_path / "ok.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(TLDError, match="not the FID Inception state dict"):
        load_fid_weights(net, tmp_path / "bad.pth")


def test_classifier_extractor_takes_a_named_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    ex = ClassifierExtractor(net, input_size=28, layer="3", device="cpu")
    assert ex.dim == 8 and ex.name.startswith("classifier-")
    assert ex(torch.rand(3, 3, 20, 20)).shape == (3, 8)
    with pytest.raises(TLDError, match="no layer"):
        ClassifierExtractor(net, input_size=28, layer="head")


def test_reference_cache_round_trips_and_follows_the_data(tmp_path, extractor):
    data = tmp_path / "images"
    data.mkdir()
    images, captions = square_images(6)
    for k, (im, cap) in enumerate(zip(images, captions)):
        im.save(data / f"{k:02d}.png")
        (data / f"{k:02d}.txt").write_text(cap)
    cache = tmp_path / "cache"
    first = reference_set(data, extractor, 16, 6, cache, progress=False)
    assert not first.cached and first.features.shape == (6, 1280) and first.captions == captions
    assert first.dominants == [c.split()[1] for c in captions]
    again = reference_set(data, extractor, 16, 6, cache, progress=False)
    assert again.cached and again.captions == captions and again.dominants == first.dominants
    np.testing.assert_array_equal(again.features, first.features)
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp*"))
    # Changing an image changes the fingerprint: new statistics, not the stale ones.
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / "00.png")
    os.utime(data / "00.png", ns=(1, 1))
    changed = reference_set(data, extractor, 16, 6, cache, progress=False)
    assert not changed.cached and not np.allclose(changed.features[0], first.features[0])
    assert len(list(cache.glob("*.npz"))) == 2


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_fid_end_to_end(tmp_path, capsys, model_dir, shard_dir):
    out = tmp_path / "fid.json"
    common = ["--model", str(model_dir), "--data", str(shard_dir), "--cache-dir", str(tmp_path / "cache")]
    code, stdout, stderr = run_cli(
        capsys, "eval", "fid", *common, "-n", "8", "--sampler", "heun", "--steps", "3",
        "--schedule", "karras", "--cfg", "3", "--device", "cpu", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert "FID" in stdout and "warning: FID from N=8" in stderr
    r = json.loads(out.read_text())["result"]
    assert r["nfe"] == 5  # Heun: 2 calls per step, the last step is Euler
    assert r["used_schedule"] == "karras" and r["used_cfg"] == 3.0 and r["n"] == 8 and r["n_real"] == 8
    assert (
        np.isfinite(r["fid"]) and r["fid"] > 0 and 0 <= r["precision"] <= 1 and r["real_hue_accuracy"] == 1.0
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["--data", "/nonexistent/data", "--sampler", "euler"], "does not exist"),
        (["--sampler", "nope"], "unknown sampler 'nope'"),
        (["--sampler", "euler", "-n", "1"], "n must be an integer >= 2"),
        (["--sampler", "euler", "--extractor", "clip"], "unknown feature extractor"),
    ],
)
def test_eval_fid_bad_input_is_one_line(capsys, tmp_path, model_dir, shard_dir, args, match):
    base = {"--model": str(model_dir), "--data": str(shard_dir), "--steps": "2"}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = ["eval", "fid", *[x for kv in base.items() for x in kv], *args, "--cache-dir", str(tmp_path)]
    code, _, stderr = run_cli(capsys, *argv)
    assert code == 1 and match in stderr and stderr.count("\n") == 1, stderr


def test_eval_sweep_resumes(tmp_path, capsys, model_dir, shard_dir):
    argv = [
        "eval", "sweep", "--model", str(model_dir), "--data", str(shard_dir), "-n", "6",
        "--samplers", "euler,dpm_2", "--steps", "2", "--schedules", "tld", "--cfgs", "2",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sweep"), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 0, stderr
    assert "2 cell(s) computed, 0 reused" in stdout
    table = (tmp_path / "sweep" / "results.md").read_text()
    assert "| dpm_2 | 2 | tld | 2 | - | 3 |" in table and "| euler | 2 | tld | 2 | - | 2 |" in table
    assert (tmp_path / "sweep" / "fid_vs_nfe.png").stat().st_size > 1000
    assert len((tmp_path / "sweep" / "results.csv").read_text().splitlines()) == 3
    code, stdout, _ = run_cli(capsys, *argv)
    assert code == 0 and "0 cell(s) computed, 2 reused" in stdout
    # Another dtype makes other images: the float32 cells are not reused for a bfloat16 run.
    code, stdout, stderr = run_cli(capsys, *argv, "--dtype", "bfloat16")
    assert code == 0 and "2 cell(s) computed, 0 reused" in stdout, stderr
    # A cell computed for another run (here: another N) is recomputed, not reused.
    from tld.eval.sweep import _read_cell

    cell = next((tmp_path / "sweep" / "cells").glob("euler-*.json"))
    identity = json.loads(cell.read_text())["identity"]
    assert _read_cell(cell, identity) is not None
    assert _read_cell(cell, {**identity, "n": 5}) is None


def test_eval_sweep_options_axis(tmp_path, capsys, model_dir, shard_dir):
    """Pipeline options (here DDIM's eta) are one more axis: each value is its own cell and row."""
    argv = [
        "eval", "sweep", "--model", str(model_dir), "--data", str(shard_dir), "-n", "4",
        "--samplers", "ddim", "--steps", "3", "--schedules", "tld", "--cfgs", "2",
        "--option", "none", "--option", '{"sampler_opts": {"eta": 1.0}}',
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sweep"), "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    code, stdout, stderr = run_cli(capsys, *argv)
    assert code == 0, stderr
    assert "2 cell(s) computed" in stdout
    cells = sorted(p.name for p in (tmp_path / "sweep" / "cells").glob("*.json"))
    assert cells == ["ddim-3-tld-cfg2-sampler_opts-eta-1.0.json", "ddim-3-tld-cfg2.json"]
    rows = [json.loads((tmp_path / "sweep" / "cells" / c).read_text())["result"] for c in cells]
    assert rows[0]["options"] == '{"sampler_opts": {"eta": 1.0}}' and rows[1]["options"] is None
    assert rows[0]["fid"] != rows[1]["fid"]  # eta = 1 adds fresh noise each step: other images
    assert '| {"sampler_opts": {"eta": 1.0}} |' in (tmp_path / "sweep" / "results.md").read_text()


@pytest.mark.parametrize(
    "option, match",
    [("{not json", "options must be a JSON object"), ('{"eta": 1}', "unknown option(s) ['eta']")],
)
def test_eval_sweep_bad_option_is_one_line(tmp_path, capsys, model_dir, shard_dir, option, match):
    argv = [
        "eval", "sweep", "--model", str(model_dir), "--data", str(shard_dir), "--samplers", "ddim",
        "--steps", "2", "--option", option, "--out", str(tmp_path / "sweep"),
    ]  # fmt: skip
    code, _, stderr = run_cli(capsys, *argv)
    assert code == 1 and match in stderr and stderr.count("\n") == 1, stderr
