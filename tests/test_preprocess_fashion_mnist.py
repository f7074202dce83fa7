"""`tld preprocess fashion-mnist` on tiny idx files written here, and class labels through `encode`."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pandas as pd
import pytest
import tld.preprocessing.encode as encode_module
import webdataset as wds
from idx_fixtures import idx_bytes, write_idx
from PIL import Image
from tld.preprocessing.encode import WORK, EncodeConfig, encode
from tld.preprocessing.fashion_mnist import CLASS_NAMES, build_fashion_mnist_shards, read_idx
from tld.preprocessing.shards import Sample, write_shards

from tld.cli import main
from tld.data import LABELS, LatentDataset
from tld.encoders import load_text_encoder
from tld.errors import TLDError

N_TRAIN, N_TEST = 12, 6


def tiny_source(folder, gz: bool = True, seed: int = 0):
    """Four idx files of random 28 x 28 images; train labels 0..9 then 0, 1; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train": (rng.integers(0, 256, (N_TRAIN, 28, 28)), np.arange(N_TRAIN) % 10),
        "t10k": (rng.integers(0, 256, (N_TEST, 28, 28)), np.array([9, 8, 7, 3, 3, 0])),
    }
    for prefix, (images, labels) in arrays.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return arrays


def shard_samples(folder):
    out = []
    for shard in sorted(folder.glob("*.tar")):
        for s in wds.WebDataset(str(shard), shardshuffle=False):
            out.append((s["txt"].decode(), json.loads(s["json"]), Image.open(io.BytesIO(s["png"]))))
    return out


def test_read_idx_gz_and_raw_give_the_same_array(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (3, 5, 7)).astype(np.uint8)
    write_idx(tmp_path / "a", array, gz=True)
    write_idx(tmp_path / "a", array, gz=False)
    for name in ("a.gz", "a"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and np.array_equal(got, array)


def test_shards_keep_splits_labels_pixels_and_licence(tmp_path):
    arrays = tiny_source(tmp_path / "src", gz=True)
    report = build_fashion_mnist_shards(
        tmp_path / "out", tmp_path / "src", samples_per_shard=5, progress=False
    )
    assert (report.counts, report.shards) == ({"train": 12, "test": 6}, {"train": 3, "test": 2})
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[prefix]
        samples = shard_samples(tmp_path / "out" / split)
        assert [meta["label"] for _, meta, _ in samples] == labels.tolist()
        assert [caption for caption, _, _ in samples] == [CLASS_NAMES[k] for k in labels]
        for k, (_, meta, image) in enumerate(samples):
            assert (meta["split"], meta["index"]) == (split, k)
            pixels = np.asarray(image.convert("RGB"))
            assert image.size == (32, 32) and image.format == "PNG"
            assert np.array_equal(pixels[2:30, 2:30, 0], images[k])  # padded, never resampled
            assert pixels[[0, 1, 30, 31]].max() == 0 and pixels[:, [0, 1, 30, 31]].max() == 0
            assert np.array_equal(pixels[..., 0], pixels[..., 2])
        info = json.loads((tmp_path / "out" / split / "tld-source.meta").read_text())
        assert (info["license"], info["count"], info["class_names"]) == (
            "MIT",
            len(labels),
            list(CLASS_NAMES),
        )
        assert "Zalando" in info["attribution"]


def test_cli_reads_raw_idx_files_with_limit_and_size(tmp_path, capsys):
    tiny_source(tmp_path / "src", gz=False)
    args = ["preprocess", "fashion-mnist", str(tmp_path / "out"), "--source", str(tmp_path / "src")]
    assert main(args + ["--limit", "4", "--size", "16", "--no-progress"]) == 0
    assert "train: 4 images in 1 shard(s); test: 4 images in 1 shard(s)" in capsys.readouterr().out
    samples = shard_samples(tmp_path / "out" / "test")
    assert [c for c, _, _ in samples] == ["ankle boot", "bag", "sneaker", "dress"]
    assert samples[0][2].size == (16, 16)


def _break(folder, name: str, data: bytes) -> None:
    for old in folder.glob(name + "*"):
        old.unlink()
    (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_folder", r"does not exist; install it with `apt-get install dataset-fashion-mnist`"),
        (
            "missing_file",
            r"t10k-labels-idx1-ubyte\[\.gz\] not found in .*apt-get install dataset-fashion-mnist",
        ),
        (
            "truncated",
            r"truncated or padded: shape \[12, 28, 28\] needs 9408 bytes of data, the file has 9000",
        ),
        ("truncated_gz", r"cannot read .*train-images-idx3-ubyte\.gz: "),
        ("short_header", r"truncated: its header needs 16 bytes"),
        ("not_idx", r"is not an unsigned-byte idx file"),
        ("count_mismatch", r"holds 12 images but train-labels-idx1-ubyte holds 11 labels"),
        ("bad_label", r"has label 10; Fashion-MNIST labels are 0-9"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, damage, message):
    src = tmp_path / "src"
    tiny_source(src, gz=True)
    images = np.zeros((N_TRAIN, 28, 28), np.uint8)
    if damage == "missing_folder":
        src = tmp_path / "nowhere"
    elif damage == "missing_file":
        (src / "t10k-labels-idx1-ubyte.gz").unlink()
    elif damage == "truncated":
        _break(src, "train-images-idx3-ubyte", idx_bytes(images)[:-408])
    elif damage == "truncated_gz":
        _break(src, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images))[:-30])
    elif damage == "short_header":
        _break(src, "train-images-idx3-ubyte", idx_bytes(images)[:10])
    elif damage == "not_idx":
        _break(src, "train-images-idx3-ubyte", b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif damage == "count_mismatch":
        _break(src, "train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)))
    elif damage == "bad_label":
        _break(src, "train-labels-idx1-ubyte", idx_bytes(np.full(N_TRAIN, 10, np.uint8)))
    with pytest.raises(TLDError, match=message) as info:
        build_fashion_mnist_shards(tmp_path / "out", src, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # every file is checked before anything is written
    assert main(["preprocess", "fashion-mnist", str(tmp_path / "o2"), "--source", str(src)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err


@pytest.fixture(scope="module")
def fashion_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    tiny_source(root / "src")
    build_fashion_mnist_shards(root / "out", root / "src", size=16, samples_per_shard=4, progress=False)
    return root / "out" / "train"


@pytest.fixture
def cfg(tiny_vae_dir, tiny_clip_dir):
    return EncodeConfig(vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), batch_size=4, progress=False)


def test_encode_writes_labels_aligned_with_rows(fashion_shards, cfg, tmp_path, tiny_clip_dir):
    cfg.flip, cfg.val_holdout = True, 2
    meta = encode(fashion_shards, tmp_path / "ds", cfg)
    labels = np.load(tmp_path / "ds" / LABELS)
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")
    # 12 images, the last 2 held out, each stored twice (mirrored): 20 rows.
    assert labels.shape == (20,) and labels.dtype == np.int64 and meta.count == 20
    assert captions["caption"].tolist() == [CLASS_NAMES[k] for k in labels]
    by_key = {meta["key"]: meta["label"] for _, meta, _ in shard_samples(fashion_shards)}
    assert labels.tolist() == [by_key[k] for k in captions["key"]]
    # Per shard of 4: the originals, then their mirrored copies; images 10 and 11 are held out.
    assert labels.tolist() == [0, 1, 2, 3] * 2 + [4, 5, 6, 7] * 2 + [8, 9] * 2
    assert (meta.license, meta.extra["labelled"], meta.extra["class_names"]) == ("MIT", 20, list(CLASS_NAMES))
    # Each class name is encoded once; every row carries its own caption's embedding.
    emb = load_text_encoder(tiny_clip_dir).encode(["trouser"]).pooled[0].numpy()
    text = np.load(tmp_path / "ds" / "text_emb.npy").astype(np.float32)
    np.testing.assert_allclose(text[labels == 1], np.stack([emb, emb]), atol=2e-3, rtol=2e-3)
    data = LatentDataset(tmp_path / "ds", condition="class")
    assert data.num_classes == 10 and data.get(np.array([7, 9])).labels.tolist() == [3, 5]


def test_resumed_encode_keeps_labels_aligned(fashion_shards, cfg, tmp_path, monkeypatch):
    encode(fashion_shards, tmp_path / "full", cfg)
    real_encode_shard, calls = encode_module.encode_shard, []

    def killed_after_one(*args, **kwargs):
        if len(calls) == 1:
            raise KeyboardInterrupt("killed")
        calls.append(real_encode_shard(*args, **kwargs))

    monkeypatch.setattr(encode_module, "encode_shard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        encode(fashion_shards, tmp_path / "ds", cfg)
    assert sorted(p.name for p in (tmp_path / "ds" / WORK).iterdir() if p.is_dir()) == ["00000"]
    monkeypatch.setattr(encode_module, "encode_shard", real_encode_shard)
    cfg.resume = True
    encode(fashion_shards, tmp_path / "ds", cfg)
    full = np.load(tmp_path / "full" / LABELS)
    assert full.tolist() == (np.arange(N_TRAIN) % 10).tolist()
    np.testing.assert_array_equal(np.load(tmp_path / "ds" / LABELS), full)
    np.testing.assert_array_equal(
        np.load(tmp_path / "ds" / "latents.npy"), np.load(tmp_path / "full" / "latents.npy")
    )


def _plain_shards(folder, labels: list[int | None]) -> None:
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    samples = [Sample(image, f"thing {k}", {} if v is None else {"label": v}) for k, v in enumerate(labels)]
    write_shards(samples, folder, samples_per_shard=2, image_format="png")


def test_unlabelled_and_partly_labelled_sources_write_no_labels(cfg, tmp_path):
    _plain_shards(tmp_path / "text", [None, None, None])
    encode(tmp_path / "text", tmp_path / "ds_text", cfg)
    assert not (tmp_path / "ds_text" / LABELS).exists()
    assert "label" not in pd.read_parquet(tmp_path / "ds_text" / "captions.parquet").columns
    with pytest.raises(TLDError, match="needs .*labels.npy"):
        LatentDataset(tmp_path / "ds_text", condition="class")
    _plain_shards(tmp_path / "part", [1, None, 2])
    with pytest.warns(UserWarning, match=r"only 2 of 3 samples carry a class label; labels.npy not written"):
        encode(tmp_path / "part", tmp_path / "ds_part", cfg)
    assert not (tmp_path / "ds_part" / LABELS).exists()


def test_fashion_configs_load_and_match_the_shards():
    from pathlib import Path

    from tld.training.config import load_config
    from tld.training.vae_config import VAETrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    vae = load_config(root / "vae_fashion.yaml", cls=VAETrainConfig)
    vae.validate()
    assert vae.image_size == 32 and 2 ** (len(vae.model.block_out_channels) - 1) == 4  # 32 px -> 8x8
    train = load_config(root / "fashion_mnist.yaml")
    assert (train.data.condition, train.data.flip, train.mixed_precision) == ("class", False, "bf16")
    assert train.diffusion.cfg_dropout > 0 and train.ema.decay > 0
