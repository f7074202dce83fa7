"""The FID classifier (train, save, load, features) and `tld eval fid` of a class-conditional model:
idx files -> fashion-mnist shards -> encode -> class-conditional training -> export -> eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from idx_fixtures import write_idx
from train_fixtures import reset_accelerate

from tld.cli import main
from tld.errors import TLDError
from tld.eval.classifier import (
    ClassifierConfig,
    SmallCNN,
    classifier_extractor,
    load_classifier,
    predict,
    save_classifier,
)
from tld.eval.evaluate import SampleSettings, pipeline_sampler, prompts_and_labels
from tld.eval.extractors import load_extractor
from tld.eval.features import to_uint8_nhwc
from tld.eval.reference import ReferenceSet
from tld.generation import generate_and_score

SIZE = 16  # shards of 16 px; the tiny VAE halves it: 4 x 8 x 8 latents


def pattern_source(folder, n_train: int = 30, n_test: int = 6, seed: int = 0) -> None:
    """Idx files where class 0/1/2 is a bright block top-left / centre / bottom-right on dim noise."""
    rng = np.random.default_rng(seed)
    corners = [(2, 2), (10, 10), (18, 18)]
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 40, (n, 28, 28))
        for image, label in zip(images, labels):
            y, x = corners[label]
            image[y : y + 8, x : x + 8] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("patterns")
    pattern_source(root / "src")
    args = ["preprocess", "fashion-mnist", str(root / "shards"), "--source", str(root / "src")]
    assert main(args + ["--size", str(SIZE), "--no-progress"]) == 0
    return root / "shards"


@pytest.fixture(scope="module")
def classifier_dir(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "classifier"
    args = ["eval", "train-classifier", str(shards / "train"), str(out), "--test", str(shards / "test")]
    assert main(args + ["--epochs", "15", "--batch-size", "8", "--lr", "1e-2", "--input-size", "16"]) == 0
    return out


def test_train_classifier_learns_the_patterns_and_records_accuracy(classifier_dir, capsys):
    model, record = load_classifier(classifier_dir)
    assert (record["train_images"], record["test_images"], record["steps"]) == (30, 6, 15 * 4)
    assert record["test_accuracy"] == 1.0 and record["train_accuracy"] == 1.0
    assert model.config.num_classes == 3 and model.config.input_size == 16
    assert model.config.class_names == ["t-shirt/top", "trouser", "pullover"]
    assert not model.training  # loaded for inference (BatchNorm running statistics)


def test_classifier_extractor_on_a_tiny_random_classifier(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(ClassifierConfig(num_classes=4, widths=[4, 8], embed_dim=6, input_size=8))
    folder = save_classifier(model, tmp_path / "c", {"note": "random"})
    extractor = classifier_extractor(folder, device="cpu", batch_size=3)
    again = load_extractor("classifier", "cpu", classifier=folder)
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 3)).astype(np.uint8)
    feats = extractor(images)
    assert feats.shape == (5, 6) and extractor.dim == 6 and (feats >= 0).all()  # after the ReLU
    np.testing.assert_allclose(again(images), feats, rtol=1e-6, atol=1e-6)
    assert extractor.name == again.name and extractor.name.startswith("classifier-")
    # The features are the `embed` output of the normalised, resized input; predictions its argmax.
    x = torch.nn.functional.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, size=8,
                                        mode="bilinear", align_corners=False)  # fmt: skip
    with torch.no_grad():
        embed = model.eval().embed(model.convs((x - 0.5) / 0.5))
        logits = model.head(embed)
    np.testing.assert_allclose(feats, embed.numpy(), rtol=1e-5, atol=1e-5)
    assert predict(extractor, images).tolist() == logits.argmax(1).tolist()
    other = SmallCNN(ClassifierConfig(num_classes=4, widths=[4, 8], embed_dim=6, input_size=8))
    assert classifier_extractor(save_classifier(other, tmp_path / "d")).name != extractor.name


def test_classifier_bad_input(tmp_path, shards):
    with pytest.raises(TLDError, match="needs --classifier PATH"):
        load_extractor("classifier", "cpu")
    with pytest.raises(TLDError, match=r"not a classifier folder \(missing classifier.json"):
        classifier_extractor(tmp_path)
    (tmp_path / "classifier.json").write_text(json.dumps({"config": {"widths": [4]}}))
    (tmp_path / "classifier.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TLDError, match="cannot load the classifier") as info:
        classifier_extractor(tmp_path)
    assert "\n" not in str(info.value)
    from PIL import Image
    from tld.preprocessing.shards import Sample, write_shards

    image = np.zeros((16, 16, 3), np.uint8)
    write_shards([Sample(Image.fromarray(image), "x", {})] * 3, tmp_path / "plain", 10, "png")
    assert main(["eval", "train-classifier", str(tmp_path / "plain"), str(tmp_path / "o")]) == 1


@pytest.fixture(scope="module")
def class_model(shards, tmp_path_factory, tiny_vae_dir, tiny_clip_dir):
    """A tiny class-conditional model trained 30 steps on the encoded pattern shards, exported."""
    from tld.preprocessing.encode import EncodeConfig, encode

    from tld.training import train
    from tld.training.config import load_config
    from tld.training.export import export_checkpoint

    root = tmp_path_factory.mktemp("class_model")
    cfg = EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=8, progress=False)
    encode(shards / "train", root / "latents", cfg)
    overrides = [f"data.path={root / 'latents'}", "data.condition=class", "model_preset=tiny"]
    overrides += [f"output_dir={root / 'run'}", "batch_size=8", "steps=30", "sample.every=0"]
    overrides += ["tracker=none", "progress=false", "checkpoint_every=0", "optim.warmup_steps=5"]
    result = train(load_config(None, overrides))
    reset_accelerate()
    return export_checkpoint(result.last_checkpoint, root / "model")


def test_class_model_exports_without_text_encoder(class_model):
    config = json.loads((class_model / "config.json").read_text())
    assert config["text_encoder"] is None and not (class_model / "text_encoder").exists()
    assert config["denoiser"]["num_classes"] == 3 and config["denoiser"]["text_dim"] == 0
    assert config["training"]["condition"] == "class"


def test_prompts_and_labels_follow_the_real_images(class_model):
    from tld import TLDPipeline

    pipe = TLDPipeline.from_pretrained(class_model, device="cpu")
    ref = ReferenceSet(np.zeros((3, 2), np.float32), ["bag", "dress", "coat"], ["-"] * 3, "x", (16, 16), "r",
                       labels=[2, 0, 1])  # fmt: skip
    assert prompts_and_labels(pipe, ref, 5) == (["bag", "dress", "coat", "bag", "dress"], [2, 0, 1, 2, 0])
    settings = SampleSettings("euler", 3, cfg=3.0)

    def generate(labels):
        sample = pipeline_sampler(pipe, ["bag", "dress"], settings, labels, {})
        made = generate_and_score(sample, 2, 0, 1, counted=pipe.denoiser)
        return made.images, made.nfe

    images, nfe = generate([2, 0])
    direct = pipe(["bag", "dress"], class_labels=[2, 0], seed=[0, 1], cfg=3.0, steps=3, sampler="euler",
                  output_type="np", progress=False)  # fmt: skip
    np.testing.assert_array_equal(images, to_uint8_nhwc(np.asarray(direct.images).transpose(0, 3, 1, 2)))
    swapped, _ = generate([0, 2])
    assert not np.array_equal(images, swapped) and nfe == 3
    ref.labels = None
    with pytest.raises(TLDError, match=r"class-conditional \(3 classes\) but the real images of r carry no"):
        prompts_and_labels(pipe, ref, 2)
    ref.labels = [0, 5, 1]
    with pytest.raises(TLDError, match=r"class labels 0\.\.5; the model knows 0\.\.2"):
        prompts_and_labels(pipe, ref, 3)


def test_eval_fid_of_a_class_model_with_the_classifier(class_model, classifier_dir, shards, tmp_path, capsys):
    args = ["eval", "fid", "--model", str(class_model), "--data", str(shards / "test"), "-n", "6"]
    args += ["--extractor", "classifier", "--classifier", str(classifier_dir), "--sampler", "euler"]
    args += ["--steps", "2", "--cfg", "2", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "class accuracy" in out and "6 generated vs 6 real" in out
    result = json.loads((tmp_path / "r.json").read_text())["result"]
    assert result["conditioning"] == "class" and result["extractor"].startswith("classifier-")
    assert 0 <= result["class_accuracy"] <= 1 and np.isfinite(result["fid"])
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and np.load(cached[0])["labels"].tolist() == [0, 1, 2, 0, 1, 2]


def test_generate_cli_takes_class_labels(class_model, tmp_path, capsys):
    from PIL import Image

    from tld import TLDPipeline
    from tld.pipeline.images import read_png_metadata

    base = ["generate", "bag", "dress", "--model", str(class_model), "--steps", "2", "--sampler", "euler"]
    base += ["--seed", "3", "--separate", "--no-progress", "--device", "cpu"]
    assert main(base + ["--class-label", "2", "0", "-o", str(tmp_path / "a.png")]) == 0
    paths = [tmp_path / "a_0.png", tmp_path / "a_1.png"]
    assert capsys.readouterr().out.split() == [str(p) for p in paths]
    pipe = TLDPipeline.from_pretrained(class_model, device="cpu")
    direct = pipe(["bag", "dress"], class_labels=[2, 0], seed=3, steps=2, sampler="euler", progress=False)
    for path, image in zip(paths, direct):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(image))
    assert read_png_metadata(paths[0])["class_label"] == 2
    assert main(base + ["--class-label", "1", "-o", str(tmp_path / "b.png")]) == 0  # one label for all
    assert read_png_metadata(tmp_path / "b_1.png")["class_label"] == 1
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "b_0.png")), np.asarray(Image.open(paths[0])))
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "c.png")]) == 1
    assert "this model is class-conditional: pass class_labels" in capsys.readouterr().err
    assert main(base + ["--class-label", "7", "-o", str(tmp_path / "d.png")]) == 1
    assert "class_labels must be in [0, 3)" in capsys.readouterr().err
