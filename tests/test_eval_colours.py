"""`tld eval colours` and tld.eval.colours: the colour-word table on the bundled model and the
real-image ceiling on real shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tld import TLDPipeline
from tld.cli import main
from tld.encoders.colour import dominant_colour
from tld.eval.colours import colour_table, real_colour_ceiling, settings_markdown


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_table_is_what_the_pipeline_makes(tmp_path, capsys):
    out = tmp_path / "colours.json"
    code, stdout, _ = run_cli(
        capsys, "eval", "colours", "--colours", "red,blue", "--objects", "circle", "--seeds", "2",
        "--seed", "5", "--cfgs", "1.5,3", "--steps", "6", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0
    record = json.loads(out.read_text())
    assert [s["cfg"] for s in record["settings"]] == [1.5, 3.0]
    pipe = TLDPipeline.from_pretrained()
    for summary in record["settings"]:
        assert summary["steps"] == 6 and summary["images"] == 4
        for row in summary["rows"]:
            images = pipe(row["prompt"], cfg=summary["cfg"], steps=6, seed=[5, 6], num_images=2)
            got = [dominant_colour(np.asarray(im)) for im in images]
            assert row["dominant"] == got and row["hits"] == sum(g == row["colour"] for g in got)
        hits = sum(r["hits"] for r in summary["rows"])
        assert summary["overall"] == hits / 4
        assert f"**{summary['overall']:.1%}**" in stdout
    assert stdout.splitlines()[0].startswith("| colour | dpmpp_2m")
    assert stdout.count("\n| red |") == 1 and "| blue |" in stdout and "| weakest colour |" in stdout


def test_cfg_schedule_columns_are_what_the_pipeline_makes(tmp_path, capsys):
    out = tmp_path / "colours.json"
    code, stdout, _ = run_cli(
        capsys, "eval", "colours", "--colours", "black", "--objects", "heart", "--seeds", "2", "--cfgs", "1.5",
        "--cfg-schedule", "none", "--cfg-schedule", "2:4", "--steps", "5", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0
    record = json.loads(out.read_text())
    assert [s["cfg_schedule"] for s in record["settings"]] == [None, [[2.0, 4.0]]]
    pipe = TLDPipeline.from_pretrained()
    for summary in record["settings"]:
        images = pipe("black heart", cfg=1.5, cfg_schedule=summary["cfg_schedule"] or [], steps=5, seed=[0, 1],
                      num_images=2, progress=False)  # fmt: skip
        assert summary["rows"][0]["dominant"] == [dominant_colour(np.asarray(im)) for im in images]
    assert "cfg 1.5 (4 at sigma >= 2)" in stdout.splitlines()[0]
    capsys.readouterr()  # the loading bars of the pipeline above
    code, _, stderr = run_cli(capsys, "eval", "colours", "--cfg-schedule", "4", "--no-progress")
    assert code == 1 and "cfg schedule must be SIGMA:SCALE pieces" in stderr and stderr.count("\n") == 1


def test_settings_are_recorded_and_a_rerun_repeats():
    pipe = TLDPipeline.from_pretrained()
    a = colour_table(pipe, ["green"], ["heart"], seeds=2, steps=4, seed_start=0)
    b = colour_table(pipe, ["green"], ["heart"], seeds=2, steps=4, seed_start=0, sampler="euler")
    c = colour_table(pipe, ["green"], ["heart"], seeds=2, steps=4, seed_start=0)
    assert a["rows"] == c["rows"] and a["sampler"] == "dpmpp_2m" and b["sampler"] == "euler"
    assert a["seed_start"] == 0 and a["cfg"] == pipe.sampling.cfg


def _square(rgb: tuple[int, int, int]) -> Image.Image:
    a = np.full((32, 32, 3), 255, np.uint8)
    a[8:24, 8:24] = rgb
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from tld.preprocessing.shards import Sample, write_shards

    red, blue = (220, 30, 30), (30, 60, 220)
    samples = [
        ("red square, noto style", red),
        ("red large square", red),
        ("red square", blue),  # a caption the image does not match: the ceiling counts it as a miss
        ("blue square", blue),
        ("blue heart", blue),  # not an object asked for
        ("square", red),  # no colour word
    ]
    out = tmp_path_factory.mktemp("colour_shards")
    write_shards((Sample(_square(rgb), caption, {}) for caption, rgb in samples), out, 4, "png")
    return out


def test_real_ceiling_counts_matching_captions(shards):
    real = real_colour_ceiling(shards, ["red", "blue", "green"], ["square"])
    assert real["counts"] == {"red": 3, "blue": 1, "green": 0}
    assert real["per_colour"] == {"red": 2 / 3, "blue": 1.0, "green": None}
    assert real["overall"] == 3 / 4 and real["images"] == 4
    summary = {"per_colour": {"red": 0.5, "blue": 1.0, "green": 0.0}, "overall": 0.5, "sampler": "euler",
               "steps": 5, "cfg": 2.0, "schedule": None}  # fmt: skip
    table = settings_markdown([summary], real)
    assert "| red | 50% | 67% of 3 |" in table and "| green | 0% | - |" in table
    assert "| weakest colour | 0% |" in table


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--colours", "red,mauve"], "unknown colour(s) mauve"),
        (["--seeds", "0"], "seeds must be an integer >= 1"),
        (["--objects", ","], "--objects is empty"),
        (["--cfgs", "2,x"], "--cfgs must be comma-separated floats"),
        (["--data", "/nonexistent/shards"], "--data /nonexistent/shards: no such folder"),
        (["--model", "/nonexistent/model"], "model folder not found"),
    ],
)
def test_bad_input_is_one_line(capsys, args, match):
    code, _, stderr = run_cli(capsys, "eval", "colours", "--no-progress", *args)
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert code == 1 and len(lines) == 1 and match in lines[0], stderr
