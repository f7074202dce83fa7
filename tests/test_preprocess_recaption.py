"""`tld preprocess colour-words` (dominant colours written into captions that lack a colour word) and
`tld preprocess subset` (a seeded random sample of a shard folder)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image, ImageDraw
from tld.preprocessing.recaption import (
    STYLE_SUFFIX,
    ColourTagRules,
    add_caption_variants,
    add_colour_words,
    clear_colour,
)
from tld.preprocessing.shards import Sample, iter_shard, read_source_info, write_shards, write_source_info

from tld.cli import main
from tld.errors import TLDError


def disc(fill: tuple[int, int, int], second: tuple[int, int, int] | None = None) -> Image.Image:
    """A 32 px disc on white with a thin black outline; `second` paints its right half."""
    im = Image.new("RGB", (32, 32), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((3, 3, 28, 28), fill=fill, outline=(0, 0, 0))
    if second is not None:
        d.rectangle((16, 6, 26, 26), fill=second)
    return im


SAMPLES = [
    ("frog face, noto style", disc((60, 170, 60))),  # green -> tagged
    ("ocean wave", disc((40, 90, 220))),  # blue -> tagged
    ("red heart", disc((40, 90, 220))),  # names a colour already: unchanged, even though blue
    ("beach ball", disc((230, 40, 40), second=(40, 90, 220))),  # half red, half blue: unclear
    ("pool 8 ball", disc((20, 20, 20))),  # black, achromatic -> tagged
]


def make_source(folder):
    write_shards((Sample(im, cap, {"licence": "test"}) for cap, im in SAMPLES), folder, 3, "png")
    write_source_info(folder, {"source": "test set", "license": "CC0"})
    return folder


def captions(folder):
    return [s for shard in sorted(folder.glob("*.tar")) for s in iter_shard(shard)]


def test_clear_colour_names_one_dominant_colour_only():
    assert clear_colour(np.asarray(disc((60, 170, 60)))) == "green"
    assert clear_colour(np.asarray(disc((250, 210, 30)))) == "yellow"
    assert clear_colour(np.asarray(disc((20, 20, 20)))) == "black"
    assert clear_colour(np.asarray(disc((230, 40, 40), second=(40, 90, 220)))) is None
    # a looser rule calls the half-and-half disc by its larger half
    assert (
        clear_colour(np.asarray(disc((230, 40, 40), second=(40, 90, 220))), ColourTagRules(min_share=0.5))
        == "red"
    )


def test_colour_words_are_added_where_missing_and_recorded(tmp_path):
    src = make_source(tmp_path / "src")
    report = add_colour_words(src, tmp_path / "out", samples_per_shard=2, progress=False)
    got = captions(tmp_path / "out")
    assert [s["caption"] for s in got] == [
        "green frog face, noto style",
        "blue ocean wave",
        "red heart",
        "beach ball",
        "black pool 8 ball",
    ]
    assert got[0]["json"]["caption_original"] == "frog face, noto style"
    assert got[0]["json"]["colour_word"] == "green" and got[0]["json"]["licence"] == "test"
    assert "colour_word" not in got[2]["json"] and got[3]["json"]["caption"] == "beach ball"
    assert report.total == 5 and dict(report.tagged) == {"green": 1, "blue": 1, "black": 1}
    assert report.already_named == 1 and report.unclear == 1 and report.unreadable == 0
    assert len(list((tmp_path / "out").glob("*.tar"))) == 3
    info = read_source_info(tmp_path / "out")
    assert info["license"] == "CC0" and "3 given a colour word" in info["captions"]
    # pixels are copied losslessly
    first = Image.open(io.BytesIO(got[0]["image"]))
    assert np.array_equal(np.asarray(first), np.asarray(SAMPLES[0][1]))


def test_unreadable_images_are_counted_and_left_out(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with wds.TarWriter(str(src / "00000.tar")) as sink:
        sink.write({"__key__": "a", "png": b"not a png", "txt": "ghost", "json": json.dumps({}).encode()})
        buf = io.BytesIO()
        disc((40, 90, 220)).save(buf, format="PNG")
        sink.write({"__key__": "b", "png": buf.getvalue(), "txt": "wave", "json": json.dumps({}).encode()})
    report = add_colour_words(src, tmp_path / "out", progress=False)
    assert report.unreadable == 1 and report.total == 2
    assert [s["caption"] for s in captions(tmp_path / "out")] == ["blue wave"]


def test_finished_output_is_refused_and_partial_output_is_rewritten(tmp_path):
    src = make_source(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "00007.tar").write_bytes(b"left by a killed run")
    add_colour_words(src, out, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == ["00000.tar"]
    with pytest.raises(TLDError, match="already holds finished shards"):
        add_colour_words(src, out, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TLDError, match="holds other files"):
        add_colour_words(src, mine, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"
    plain = tmp_path / "plain"  # shards without a source record: the output must not be the input
    write_shards((Sample(im, cap, {}) for cap, im in SAMPLES), plain, 3, "png")
    with pytest.raises(TLDError, match="pass an output folder other than"):
        add_colour_words(plain, plain, progress=False)
    assert len(captions(plain)) == len(SAMPLES)


def test_cli_colour_words(tmp_path, capsys):
    src = make_source(tmp_path / "src")
    assert main(["preprocess", "colour-words", str(src), str(tmp_path / "out"), "--no-progress"]) == 0
    assert "3 given a colour word" in capsys.readouterr().out
    assert main(["preprocess", "colour-words", str(src), str(tmp_path / "o2"), "--min-share", "1.5"]) != 0
    assert "min_share must be in [0, 1]" in capsys.readouterr().err
    assert main(["preprocess", "colour-words", str(tmp_path / "missing"), str(tmp_path / "o3")]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_caption_variants_add_a_short_copy_of_each_matching_sample(tmp_path, capsys):
    src = make_source(tmp_path / "src")
    counts = add_caption_variants(src, tmp_path / "out", samples_per_shard=4, progress=False)
    got = captions(tmp_path / "out")
    assert [s["caption"] for s in got] == [
        "frog face, noto style",
        "frog face",  # the style suffix cut, the same image right after
        "ocean wave",
        "red heart",
        "beach ball",
        "pool 8 ball",
    ]
    assert counts == {"total": 5, "variants": 1, "unreadable": 0}
    assert (
        got[1]["json"]["caption_variant_of"] == "frog face, noto style"
        and got[1]["json"]["licence"] == "test"
    )
    assert got[1]["image"] == got[0]["image"]
    assert "1 captions also written" in read_source_info(tmp_path / "out")["caption_variants"]
    # another pattern; a pattern that matches nothing, and one that is no regex, are clear errors
    add_caption_variants(src, tmp_path / "o2", strip=r"\bball\b", progress=False)
    assert [s["caption"] for s in captions(tmp_path / "o2")][-4:] == [
        "beach ball",
        "beach",
        "pool 8 ball",
        "pool 8",
    ]
    with pytest.raises(TLDError, match="no caption of the 5 .* matches"):
        add_caption_variants(src, tmp_path / "o3", strip="zebra", progress=False)
    assert (
        main(
            [
                "preprocess",
                "caption-variants",
                str(src),
                str(tmp_path / "o4"),
                "--strip",
                "(",
                "--no-progress",
            ]
        )
        != 0
    )
    assert "is not a regular expression" in capsys.readouterr().err
    assert main(["preprocess", "caption-variants", str(src), str(tmp_path / "o5"), "--no-progress"]) == 0
    assert "5 samples copied, 1 also written with a shorter caption" in capsys.readouterr().out
    # the help quotes the default regex without importing recaption: it must be STYLE_SUFFIX itself
    with pytest.raises(SystemExit):
        main(["preprocess", "caption-variants", "--help"])
    assert f"'{STYLE_SUFFIX}'" in " ".join(capsys.readouterr().out.split())


def test_subset_is_a_seeded_random_sample_in_random_order(tmp_path, capsys):
    src = make_source(tmp_path / "src")  # 5 samples over 2 shards
    assert main(["preprocess", "subset", str(src), str(tmp_path / "a"), "-n", "3", "--seed", "1"]) == 0
    assert "3 images sampled" in capsys.readouterr().out
    a = [s["caption"] for s in captions(tmp_path / "a")]
    order = [cap for cap, _ in SAMPLES]
    assert len(a) == 3 and len(set(a)) == 3 and set(a) <= set(order)
    assert main(["preprocess", "subset", str(src), str(tmp_path / "b"), "-n", "3", "--seed", "1"]) == 0
    assert [s["caption"] for s in captions(tmp_path / "b")] == a  # same seed, same sample
    seeds = {tuple(s["caption"] for s in captions(tmp_path / "a"))}
    for seed in range(2, 8):
        main(["preprocess", "subset", str(src), str(tmp_path / f"s{seed}"), "-n", "3", "--seed", str(seed)])
        seeds.add(tuple(s["caption"] for s in captions(tmp_path / f"s{seed}")))
    assert len(seeds) > 1  # other seeds, other samples
    info = read_source_info(tmp_path / "a")
    assert info["license"] == "CC0" and info["sampled"] == "3 of 5 images, seed 1" and info["count"] == 3
    everything = tmp_path / "all"
    assert main(["preprocess", "subset", str(src), str(everything), "-n", "50"]) == 0
    shuffled = [s["caption"] for s in captions(everything)]
    assert sorted(shuffled) == sorted(order) and shuffled != order  # all of them, not in file order
    got = captions(everything)[shuffled.index(order[0])]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(got["image"]))), np.asarray(SAMPLES[0][1]))
    # any prefix is a random sample: over seeds, the first image is not always the first source's
    firsts = set()
    for seed in range(12):
        out = tmp_path / f"p{seed}"
        main(["preprocess", "subset", str(src), str(out), "-n", "5", "--seed", str(seed)])
        firsts.add(captions(out)[0]["caption"])
    assert len(firsts) > 2
    capsys.readouterr()
    assert main(["preprocess", "subset", str(src), str(everything), "-n", "2"]) == 1
    assert "already holds shards" in capsys.readouterr().err
    assert main(["preprocess", "subset", str(src), str(tmp_path / "c"), "-n", "0"]) == 1
    assert "n must be an integer >= 1" in capsys.readouterr().err
