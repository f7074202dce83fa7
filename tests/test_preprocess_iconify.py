"""Iconify emoji sets: parsing, rendering with resvg, CLDR + style captions, skips, licences; combine."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image
from tld.preprocessing.iconify import build_iconify_shards, load_set
from tld.preprocessing.shards import (
    Sample,
    combine_shards,
    iter_shard,
    list_shards,
    read_source_info,
    write_shards,
)

from tld.cli import main
from tld.errors import TLDError

HEART = '<path fill="#dd2e44" d="M2 8 L8 14 L14 8 A3 3 0 0 0 8 3 A3 3 0 0 0 2 8 Z"/>'
APPLE = '<circle cx="8" cy="8" r="6" fill="#22aa22"/>'


def make_set(folder, broken: bool = True):
    """A tiny @iconify-json package: two emoji, one non-emoji icon, and one SVG that draws nothing."""
    folder.mkdir(parents=True)
    icons = {"red-heart": {"body": HEART}, "green-apple": {"body": APPLE}, "logo": {"body": APPLE}}
    chars = {"2764-fe0f": "red-heart", "2764": "red-heart", "1f34f": "green-apple"}
    if broken:
        icons["blank"] = {"body": '<path d=""/>'}
        chars["1f600"] = "blank"
    (folder / "icons.json").write_text(
        json.dumps({"prefix": "tiny", "icons": icons, "width": 16, "height": 16})
    )
    (folder / "chars.json").write_text(json.dumps(chars))
    info = {
        "name": "Tiny Set",
        "author": {"name": "Test Author", "url": "https://example.org"},
        "license": {"title": "MIT", "spdx": "MIT", "url": "https://example.org/license"},
    }
    (folder / "info.json").write_text(json.dumps(info))
    return folder


def read_all(folder):
    return [s for shard in list_shards(folder) for s in iter_shard(shard)]


def test_set_parses_codes_and_prefers_the_shorter_sequence(tmp_path):
    icons = load_set(make_set(tmp_path / "pkg"))
    assert icons.prefix == "tiny"
    assert icons.chars["red-heart"] == [0x2764]  # without the FE0F variation selector
    assert "logo" not in icons.chars
    assert "MIT" in icons.license and "Test Author" in icons.attribution


def test_shards_have_cldr_captions_with_style_and_report_skips(tmp_path):
    report = build_iconify_shards(make_set(tmp_path / "pkg"), tmp_path / "out", size=32, style="tiny")
    samples = read_all(tmp_path / "out")
    captions = sorted(s["caption"] for s in samples)
    assert captions == ["green apple, tiny style", "red heart, tiny style"]
    assert report.written == 2
    assert report.skipped["not an emoji"] == 1
    assert sum(n for why, n in report.skipped.items() if why.startswith("unrenderable")) == 1
    info = read_source_info(tmp_path / "out")
    assert "MIT" in info["license"] and info["style"] == "tiny" and info["count"] == 2
    heart = next(s for s in samples if s["caption"].startswith("red heart"))
    assert heart["json"]["license"].startswith("MIT")
    pixels = np.asarray(Image.open(io.BytesIO(heart["image"])).convert("RGB")).reshape(-1, 3).astype(int)
    assert Image.open(io.BytesIO(heart["image"])).size == (32, 32)
    red = (pixels[:, 0] > 180) & (pixels[:, 1] < 90) & (pixels[:, 2] < 110)
    assert red.mean() > 0.2  # the heart is drawn, in its own colour, filling most of the square
    assert (pixels == 255).all(axis=1).mean() > 0.1  # on the white background


def test_tarball_source_and_limit(tmp_path):
    pkg = make_set(tmp_path / "pkg", broken=False)
    tgz = tmp_path / "iconify-json-tiny-1.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for f in pkg.iterdir():
            tar.add(f, arcname=f"package/{f.name}")
    report = build_iconify_shards(tgz, tmp_path / "out", size=16, limit=1, cache=tmp_path / "cache")
    assert report.written == 1 and len(read_all(tmp_path / "out")) == 1
    assert read_all(tmp_path / "out")[0]["caption"].endswith(", tiny style")  # style defaults to the prefix


def test_bad_sources_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(TLDError, match="not found"):
        load_set(tmp_path / "missing" / "set")
    (tmp_path / "notaset").mkdir()
    with pytest.raises(TLDError, match="no icons.json"):
        load_set(tmp_path / "notaset")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "icons.json").write_text("{not json")
    with pytest.raises(TLDError, match="cannot read"):
        load_set(tmp_path / "bad")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm to fetch a set by name
    with pytest.raises(TLDError, match="npm is needed"):
        load_set("some-set-name", cache=tmp_path / "cache")


def test_cli_iconify_then_combine_keeps_every_credit(tmp_path, capsys):
    pkg = make_set(tmp_path / "pkg", broken=False)
    assert (
        main(["preprocess", "iconify", str(pkg), str(tmp_path / "a"), "--size", "16", "--no-progress"]) == 0
    )
    assert "2 images" in capsys.readouterr().out
    other = [Sample(Image.new("RGB", (16, 16), "blue"), f"blue {i}", {}) for i in range(3)]
    write_shards(other, tmp_path / "b", samples_per_shard=2)
    (tmp_path / "b" / "tld-source.meta").write_text(json.dumps({"source": "b", "license": "CC0", "count": 3}))
    assert (
        main(["preprocess", "combine", str(tmp_path / "all"), str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    )
    shards = list_shards(tmp_path / "all")
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    captions = [s["caption"] for s in read_all(tmp_path / "all")]
    assert captions[:2] == ["green apple, tiny style", "red heart, tiny style"] and captions[2:] == [
        "blue 0",
        "blue 1",
        "blue 2",
    ]
    info = read_source_info(tmp_path / "all")
    assert "MIT" in info["license"] and "CC0" in info["license"] and info["count"] == 5
    with pytest.raises(TLDError, match="already holds shards"):
        combine_shards([tmp_path / "a"], tmp_path / "all")
