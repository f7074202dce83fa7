"""Offline sources (OpenMoji emoji, local folders) and the `tld preprocess` command line."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tld.preprocessing.emoji import EmojiRenderer, build_emoji_shards, caption_for, list_emoji
from tld.preprocessing.folder import build_folder_shards
from tld.preprocessing.shards import iter_shard, list_shards, read_source_info

from tld.cli import main
from tld.data.format import open_latent_dataset
from tld.errors import TLDError


def _samples(folder):
    return [s for shard in list_shards(folder) for s in iter_shard(shard)]


def test_emoji_captions_from_names():
    assert caption_for([0x2764, 0xFE0F]) == "red heart"
    assert caption_for([0x1F44D, 0x1F3FD]) == "thumbs up medium skin tone"
    assert caption_for([0x1F1E9, 0x1F1EA]) == "flag of germany"
    assert caption_for([0xE000]) is None  # OpenMoji's private-use extras have no standard name
    entries = list_emoji()
    assert len(entries) > 3000
    assert all(e.caption == e.caption.lower() and e.caption.strip() for e in entries)


def test_emoji_shards_counts_size_background_and_licence(tmp_path):
    count, shards = build_emoji_shards(tmp_path, size=24, background="#000000", limit=12, samples_per_shard=5)
    assert (count, shards) == (12, 3)
    samples = _samples(tmp_path)
    assert len(samples) == 12
    assert [s["caption"] for s in samples] == [s["json"]["caption"] for s in samples]
    assert all(
        s["json"]["license"] == "CC BY-SA 4.0" and "OpenMoji" in s["json"]["attribution"] for s in samples
    )
    image = Image.open(io.BytesIO(samples[0]["image"]))
    assert (image.size, image.mode) == ((24, 24), "RGB")
    arr = np.asarray(image)
    assert arr[0, 0].tolist() == [0, 0, 0]  # corner shows the chosen background
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 10  # a coloured glyph, not a blank tile
    assert read_source_info(tmp_path)["license"].startswith("CC BY-SA 4.0")


def test_emoji_render_is_centred_and_coloured():
    heart = np.asarray(EmojiRenderer(32).render("\u2764\ufe0f"), dtype=np.int32)
    red = (heart[..., 0] > 150) & (heart[..., 1] < 100) & (heart[..., 2] < 100)
    assert red.sum() > 100
    rows, cols = np.nonzero(red)
    assert abs(rows.mean() - 16) < 4 and abs(cols.mean() - 16) < 4


def test_emoji_bad_input(tmp_path):
    with pytest.raises(TLDError, match="background must be a colour"):
        build_emoji_shards(tmp_path, background="not-a-colour", limit=1)
    with pytest.raises(TLDError, match="limit must be a positive"):
        build_emoji_shards(tmp_path, limit=0)
    with pytest.raises(TLDError, match="samples per shard must be an integer >= 1, got 0"):
        build_emoji_shards(tmp_path, limit=2, samples_per_shard=0, progress=False)


def _image_folder(root):
    root.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 10, 10)).save(root / f"im{i}.png")
    Image.new("RGBA", (30, 40), (0, 0, 255, 0)).save(root / "clear.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_folder_with_sidecars(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    for name in ("im0", "im1", "im3", "clear", "broken"):
        (root / f"{name}.txt").write_text(f"caption of {name}\n")
    summary = build_folder_shards(root, tmp_path / "out", image_size=16, samples_per_shard=2, progress=False)
    assert (summary.written, summary.shards) == (4, 2)
    assert summary.skipped == {"cannot decode image": 1, "no caption (.txt sidecar missing)": 1}
    samples = _samples(tmp_path / "out")
    assert [s["caption"] for s in samples] == [
        "caption of clear",
        "caption of im0",
        "caption of im1",
        "caption of im3",
    ]
    clear = np.asarray(Image.open(io.BytesIO(samples[0]["image"])))
    assert clear.shape == (16, 16, 3) and clear.min() > 240  # transparency lands on white, not black


def test_folder_with_captions_table(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    table = tmp_path / "captions.jsonl"
    pd.DataFrame({"path": ["im2.png", "im0.png", "gone.png"], "text": ["two", "zero", "gone"]}).to_json(
        table, orient="records", lines=True
    )
    summary = build_folder_shards(
        root, tmp_path / "out", captions=table, file_col="path", caption_col="text", progress=False
    )
    assert summary.written == 2 and summary.skipped == {"file not found": 1}
    assert [s["caption"] for s in _samples(tmp_path / "out")] == ["two", "zero"]
    with pytest.raises(TLDError, match=r"no column\(s\) \['file'\]; columns found: \['path', 'text'\]"):
        build_folder_shards(root, tmp_path / "o2", captions=table, caption_col="text")


def test_cli_folder_with_a_table_keeps_size_and_format(tmp_path, capsys):
    root = _image_folder(tmp_path / "imgs")
    table = tmp_path / "captions.csv"
    pd.DataFrame({"path": ["im2.png", "im0.png", "gone.png"], "text": ["two", "zero", "gone"]}).to_csv(
        table, index=False
    )
    argv = ["preprocess", "folder", str(root), str(tmp_path / "out"), "--captions", str(table)]
    argv += ["--file-col", "path", "--caption-col", "text", "--image-size", "0", "--format", "png"]
    assert main([*argv, "--samples-per-shard", "1", "--no-progress"]) == 0
    assert "2" in capsys.readouterr().out
    samples = _samples(tmp_path / "out")
    assert [s["caption"] for s in samples] == ["two", "zero"] and len(list_shards(tmp_path / "out")) == 2
    # --image-size 0 keeps the 40x30 images, --format png keeps their pixels exactly.
    got = Image.open(io.BytesIO(samples[0]["image"]))
    assert got.format == "PNG" and got.size == (40, 30)
    assert np.array_equal(
        np.asarray(got.convert("RGB")), np.asarray(Image.open(root / "im2.png").convert("RGB"))
    )


def test_cli_emoji_then_encode(tmp_path, tiny_vae_dir, tiny_clip_dir, capsys):
    assert (
        main(["preprocess", "emoji", str(tmp_path / "sh"), "--size", "16", "--limit", "9", "--no-progress"])
        == 0
    )
    assert "9 emoji written" in capsys.readouterr().out
    args = ["preprocess", "encode", str(tmp_path / "sh"), str(tmp_path / "ds"), "--vae", str(tiny_vae_dir)]
    args += [
        "--text-encoder",
        str(tiny_clip_dir),
        "--latent-dtype",
        "uint8",
        "--val-holdout",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "7 samples" in capsys.readouterr().out
    ds = open_latent_dataset(tmp_path / "ds")
    assert ds.latents.dtype == np.uint8 and ds.meta.latent_clip == 4.0 and len(ds.val_prompts) == 2
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["license"].startswith("CC BY-SA")
    # A second run into the same folder is refused with one line and exit code 1.
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a dataset of 7 samples" in err


def test_cli_errors_are_one_line(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("link,text\nhttp://127.0.0.1:9/a.jpg,a\n")
    assert main(["preprocess", "download", str(table), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"tld preprocess: error: table {table} has no column(s) ['url', 'caption']; columns found: ['link', 'text']"
    )
    assert main(["preprocess", "encode", str(tmp_path / "none"), str(tmp_path / "ds")]) == 1
    assert "does not exist" in capsys.readouterr().err
