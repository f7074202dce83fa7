"""tld.eval.shapes and `tld eval shapes`: shapes drawn here (not the classifier's own templates) at several
colours, sizes and positions, anti-aliased and noisy, get their shape; blobs, specks and empty images
get none; the real-image check reads shards; the CLI's verdicts are those of the pipeline's images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tld.eval.shapes import NONE, classify_shape, named_shape, real_shape_accuracy, shapes_markdown

SUPER = 4  # drawn at 4x and downsampled: anti-aliased edges, as a renderer makes them


def _outline(shape: str, size: float) -> list[tuple[float, float]]:
    """The shape's outline centred on (0, 0), about `size` across."""
    if shape == "heart":  # the classic parametric heart curve, not the classifier's two-lobe template
        t = np.linspace(0, 2 * math.pi, 200)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(a * size / 33, (b + 2.5) * size / 33) for a, b in zip(x, y, strict=True)]
    if shape == "star":
        return [((size / 2 if k % 2 == 0 else size * 0.21) * math.cos(-math.pi / 2 + k * math.pi / 5),
                 (size / 2 if k % 2 == 0 else size * 0.21) * math.sin(-math.pi / 2 + k * math.pi / 5) + size * 0.05)
                for k in range(10)]  # fmt: skip
    if shape == "triangle":
        h = size * math.sqrt(3) / 2
        return [(0, -h / 2), (size / 2, h / 2), (-size / 2, h / 2)]
    if shape == "diamond":
        return [(0, -size / 2), (size * 0.4, 0), (0, size / 2), (-size * 0.4, 0)]
    raise ValueError(shape)


def draw(shape: str, fill: tuple[int, int, int], size: float, centre: tuple[float, float], seed: int,
         outline: bool = False, side: int = 64) -> Image.Image:  # fmt: skip
    """One shape on white, anti-aliased, with slight Gaussian noise."""
    big = Image.new("RGB", (side * SUPER, side * SUPER), (255, 255, 255))
    d = ImageDraw.Draw(big)
    s, (cx, cy) = size * SUPER, (centre[0] * SUPER, centre[1] * SUPER)
    width = 2 * SUPER if outline else 0
    ink = (40, 40, 40) if outline else None
    if shape == "circle":
        d.ellipse([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=fill, outline=ink, width=width)
    elif shape == "square":
        box = [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]
        d.rounded_rectangle(box, radius=s * 0.12 * (seed % 2), fill=fill, outline=ink, width=width)
    else:
        d.polygon([(cx + x * SUPER, cy + y * SUPER) for x, y in _outline(shape, size)], fill=fill, outline=ink,
                  width=width)  # fmt: skip
    small = np.asarray(big.resize((side, side), Image.Resampling.BOX), np.float64)
    noisy = small + np.random.default_rng(seed).normal(0, 4, small.shape)
    return Image.fromarray(noisy.clip(0, 255).round().astype(np.uint8))


COLOURS = {"red": (220, 40, 40), "blue": (40, 90, 220), "yellow": (250, 205, 60), "black": (35, 35, 35)}
PLACES = [(30, (32, 32)), (52, (32, 33)), (24, (20, 40)), (40, (38, 28))]  # (size, centre)


@pytest.mark.parametrize("shape", ["heart", "circle", "square", "star", "triangle", "diamond"])
def test_drawn_shapes_get_their_shape(shape):
    for k, (colour, rgb) in enumerate(COLOURS.items()):
        for j, (size, centre) in enumerate(PLACES):
            verdict = classify_shape(draw(shape, rgb, size, centre, seed=4 * k + j))
            assert verdict.shape == shape, (colour, size, centre, verdict.to_dict())


@pytest.mark.parametrize("shape", ["heart", "circle", "square"])
def test_a_white_shape_with_an_outline_is_filled(shape):
    verdict = classify_shape(draw(shape, (255, 255, 255), 46, (32, 32), seed=1, outline=True))
    assert verdict.shape == shape and verdict.area > 0.2  # the inside counts


def _blob(seed: int) -> Image.Image:
    """An irregular blob: overlapping discs at random places, the kind of thing a weak model draws."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x, y, r = rng.uniform(20, 44), rng.uniform(20, 44), rng.uniform(6, 14)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(200, 60, 60))
    return im


def test_blobs_specks_and_empty_images_are_none():
    for seed in range(6):
        assert classify_shape(_blob(seed)).shape == NONE, classify_shape(_blob(seed)).to_dict()
    white = np.full((64, 64, 3), 255, np.uint8)
    assert classify_shape(white).shape == NONE
    specks = white.copy()
    specks[np.random.default_rng(0).random((64, 64)) < 0.01] = 0  # scattered single pixels
    assert classify_shape(specks).shape == NONE
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert classify_shape(noise).shape == NONE  # no object on a background: the "object" spans the frame
    wide = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(wide).rectangle([4, 22, 60, 42], fill=(40, 90, 220))  # a bar is no square
    assert classify_shape(wide).shape == NONE


def test_captions_that_name_a_shape():
    assert named_shape("red heart, noto style") == "heart"
    assert named_shape("black large square") == "square"
    assert named_shape("light blue heart, fluent style") == "heart"
    assert named_shape("red triangle pointed down, twemoji style") == "triangle"
    assert named_shape("large orange diamond") == "diamond"
    assert named_shape("star") == "star"
    for caption in (
        "heart with arrow",
        "glowing star",
        "smiling face with heart-eyes",
        "white square button",
        "",
    ):
        assert named_shape(caption) is None, caption


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from tld.preprocessing.shards import Sample, write_shards

    samples = [
        ("red heart, noto style", draw("heart", COLOURS["red"], 48, (32, 32), 0)),
        ("blue large square", draw("square", COLOURS["blue"], 44, (32, 32), 1)),
        ("yellow circle", draw("square", COLOURS["yellow"], 44, (32, 32), 2)),  # mislabelled: a miss
        ("grinning face", draw("circle", COLOURS["yellow"], 44, (32, 32), 3)),  # names no shape
    ]
    out = tmp_path_factory.mktemp("shape_shards")
    write_shards((Sample(im, caption, {}) for caption, im in samples), out, 3, "png")
    return out


def test_real_images_are_scored_by_their_caption(shards):
    real = real_shape_accuracy([shards], ["heart", "circle", "square"])
    assert real["counts"] == {"heart": 1, "circle": 1, "square": 1}
    assert real["per_shape"] == {"heart": 1.0, "circle": 0.0, "square": 1.0}
    assert real["verdicts"]["circle"] == {"square": 1} and real["overall"] == 2 / 3
    assert [m["caption"] for m in real["misses"]] == ["yellow circle"]
    table = shapes_markdown(None, real)
    assert "| circle | 0% of 1 | square 1 |" in table and "**66.7%** of 3" in table


def test_cli_verdicts_are_those_of_the_pipeline_images(tmp_path, capsys, tiny_vae_dir, tiny_clip_dir, shards):
    from apps_fixtures import load_tiny_model, save_tiny_model

    from tld.cli import main

    model = save_tiny_model(tmp_path / "model", tiny_vae_dir, tiny_clip_dir)
    out = tmp_path / "shapes.json"
    argv = ["eval", "shapes", "--model", str(model), "--colours", "red,blue", "--shapes", "heart,square",
            "--seeds", "2", "--seed", "3", "--steps", "2", "--cfg", "2", "--data", str(shards),
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    record = json.loads(out.read_text())
    summary = record["settings"]
    assert [r["prompt"] for r in summary["rows"]] == ["red heart", "blue heart", "red square", "blue square"]
    pipe = load_tiny_model(model)
    for row in summary["rows"]:
        images = pipe(row["prompt"], cfg=2.0, steps=2, seed=[3, 4], num_images=2, progress=False)
        assert row["verdicts"] == [classify_shape(im).shape for im in images]
        assert row["hits"] == row["verdicts"].count(row["shape"])
    assert summary["images"] == 8 and summary["steps"] == 2 and record["real"]["counts"]["heart"] == 1
    assert stdout.startswith("| shape | model: named shape |") and "| **all** |" in stdout
    # --suffix: the same table for prompts with a style word after them
    argv = ["eval", "shapes", "--model", str(model), "--colours", "red", "--shapes", "heart", "--seeds", "2",
            "--seed", "3", "--steps", "2", "--cfg", "2", "--suffix", ", noto style", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (row,) = json.loads(out.read_text())["settings"]["rows"]
    images = pipe("red heart, noto style", cfg=2.0, steps=2, seed=[3, 4], num_images=2, progress=False)
    assert row["prompt"] == "red heart, noto style" and row["shape"] == "heart"
    assert row["verdicts"] == [classify_shape(im).shape for im in images]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--shapes", "heart,blob"], "unknown shape(s) blob"),
        (["--colours", "mauve"], "unknown colour(s) mauve"),
        (["--seeds", "0"], "seeds must be an integer >= 1"),
        (["--shapes", ","], "--shapes is empty"),
        (["--data-only"], "--data-only needs --data SHARDS"),
        (["--data", "/nonexistent/shards"], "--data /nonexistent/shards: no such folder"),
    ],
)
def test_bad_input_is_one_line(capsys, args, match):
    from tld.cli import main

    assert main(["eval", "shapes", *args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
