"""img2dataset over a loopback HTTP server: exact success/failure counts, then encode those shards."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tld.preprocessing.download import DownloadConfig, download, summarize_stats
from tld.preprocessing.shards import iter_shard, list_shards

from tld.cli import main
from tld.errors import TLDError

N_GOOD = 20


def _colour(i: int) -> tuple[int, int, int]:
    return (10 * i + 20, 255 - 10 * i, (37 * i) % 256)


def _image_bytes(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _make_site(root: Path) -> list[tuple[str, str]]:
    """Files served by the test server; returns (path, caption) rows, good images first."""
    rows = []
    for i in range(N_GOOD):
        Image.new("RGB", (48, 40), _colour(i)).save(root / f"img{i:02d}.jpg", quality=98)
        rows.append((f"img{i:02d}.jpg", f"solid colour number {i}"))
    (root / "rgba.png").write_bytes(_image_bytes(Image.new("RGBA", (32, 32), (255, 0, 0, 128)), "PNG"))
    (root / "gray.png").write_bytes(_image_bytes(Image.new("L", (32, 32), 77), "PNG"))
    (root / "cmyk.jpg").write_bytes(_image_bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"))
    rows += [("rgba.png", "an rgba image"), ("gray.png", "a grayscale image"), ("cmyk.jpg", "a cmyk image")]
    for i in range(2):  # answered 503 once, then served: only a retry gets them
        Image.new("RGB", (32, 32), _colour(i + 5)).save(root / f"flaky{i}.jpg", quality=98)
        rows.append((f"flaky{i}.jpg", f"a flaky server {i}"))
    (root / "page.html").write_text("<html><body>not an image</body></html>")
    full = _image_bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    (root / "truncated.jpg").write_bytes(full[:300])
    rows += [("page.html", "a web page"), ("truncated.jpg", "a truncated jpeg")]
    rows += [(f"missing{i}.jpg", f"gone {i}") for i in range(3)]
    return rows


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _FlakyHandler(_QuietHandler):
    """Answers 503 to the first request for each `flaky*` file, then serves it."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        if "flaky" in self.path:
            seen = _FlakyHandler.hits.get(self.path, 0)
            _FlakyHandler.hits[self.path] = seen + 1
            if seen == 0:
                self.send_error(503, "try again")
                return
        super().do_GET()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    rows = _make_site(root)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_FlakyHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    yield [(base + path, caption) for path, caption in rows]
    server.shutdown()


@pytest.fixture(scope="module")
def downloaded(site, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dl")
    table = tmp / "urls.tsv"
    pd.DataFrame({"link": [u for u, _ in site], "text": [c for _, c in site]}).to_csv(
        table, sep="\t", index=False
    )
    out = tmp / "shards"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")  # --overwrite starts the folder afresh
    argv = ["preprocess", "download", str(table), str(out), "--url-col", "link", "--caption-col", "text"]
    argv += ["--image-size", "32", "--samples-per-shard", "8", "--threads", "4"]
    assert main([*argv, "--processes", "2", "--retries", "1", "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    cfg = DownloadConfig(
        url_col="link",
        caption_col="text",
        image_size=32,
        samples_per_shard=8,
        threads=4,
        processes=2,
        retries=1,
    )
    return summarize_stats(out), out, table, cfg


def test_download_counts(downloaded):
    summary, shards, _, _ = downloaded
    print(summary.format())
    assert summary.count == N_GOOD + 3 + 2 + 2 + 3
    assert summary.successes == N_GOOD + 3 + 2  # the flaky files arrived on their retry
    assert all(_FlakyHandler.hits[f"/flaky{i}.jpg"] == 2 for i in (0, 1))
    # 404s fail the download; the HTML page and the truncated JPEG arrive but cannot be decoded.
    assert (summary.failed_to_download, summary.failed_to_resize) == (3, 2)
    assert summary.failures == {"HTTP Error 404: File not found": 3, "Image decoding error": 2}
    assert summary.shards == len(list_shards(shards)) == 4  # 30 rows, 8 per shard, over 2 processes


def test_downloaded_shards_hold_resized_captioned_images(downloaded):
    _, shards, _, _ = downloaded
    seen = {}
    for shard in list_shards(shards):
        for sample in iter_shard(shard):
            if sample["image"] is not None:
                seen[sample["caption"]] = Image.open(io.BytesIO(sample["image"]))
    assert len(seen) == N_GOOD + 3 + 2
    img = seen["solid colour number 7"]
    assert img.size == (32, 32)
    np.testing.assert_allclose(np.asarray(img.convert("RGB")).reshape(-1, 3).mean(0), _colour(7), atol=3)


def test_rerun_is_incremental(downloaded):
    summary, shards, table, cfg = downloaded
    before = {p.name: p.stat().st_mtime_ns for p in list_shards(shards)}
    again = download(table, shards, cfg)
    assert again.successes == summary.successes
    assert {p.name: p.stat().st_mtime_ns for p in list_shards(shards)} == before


def test_parquet_table_and_keep_ratio_resize(site, tmp_path):
    rows = [(u, c) for u, c in site if "/img0" in u][:3]  # 48x40 images
    table = tmp_path / "urls.parquet"
    pd.DataFrame({"address": [u for u, _ in rows], "alt": [c for _, c in rows]}).to_parquet(table)
    cfg = DownloadConfig(url_col="address", caption_col="alt", image_size=32, resize_mode="keep_ratio")
    summary = download(table, tmp_path / "shards", cfg)
    assert (summary.count, summary.successes) == (3, 3)
    samples = [s for p in list_shards(tmp_path / "shards") for s in iter_shard(p)]
    assert sorted(s["caption"] for s in samples) == sorted(c for _, c in rows)
    # keep_ratio scales the short side to 32 and keeps the 6:5 shape (center_crop would give 32x32).
    assert {Image.open(io.BytesIO(s["image"])).size for s in samples} == {(38, 32)}


def test_missing_column_names_the_columns_found(tmp_path):
    table = tmp_path / "t.csv"
    pd.DataFrame({"URL": ["http://x/a.jpg"], "txt": ["a"]}).to_csv(table, index=False)
    with pytest.raises(
        TLDError, match=r"no column\(s\) \['url', 'caption'\]; columns found: \['URL', 'txt'\]"
    ):
        download(table, tmp_path / "out")


def test_empty_table(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text("")
    with pytest.raises(TLDError, match="empty|no column"):
        download(table, tmp_path / "out")
    table = tmp_path / "t.csv"
    table.write_text("url,caption\n")
    with pytest.raises(TLDError, match="is empty"):
        download(table, tmp_path / "out")


def test_unknown_table_suffix(tmp_path):
    table = tmp_path / "t.xlsx"
    table.write_text("x")
    with pytest.raises(TLDError, match=r"suffix '.xlsx'"):
        download(table, tmp_path / "out")


def test_encode_downloaded_shards(downloaded, tmp_path, tiny_vae_dir, tiny_clip_dir):
    from tld.preprocessing.encode import EncodeConfig, encode

    from tld.data.format import open_latent_dataset
    from tld.encoders import VAE
    from tld.encoders.images import load_image, pil_to_tensor

    _, shards, _, _ = downloaded
    cfg = EncodeConfig(
        vae=str(tiny_vae_dir), text_encoder=str(tiny_clip_dir), latent_dtype="uint8", progress=False
    )
    meta = encode(shards, tmp_path / "ds", cfg)
    ds = open_latent_dataset(tmp_path / "ds")
    assert ds.latents.shape == (N_GOOD + 5, 4, 16, 16) and ds.text_emb.shape == (N_GOOD + 5, 24)
    assert meta.image_size == [32, 32] and meta.extra["failed"] == {}
    captions = pd.read_parquet(tmp_path / "ds" / "captions.parquet")
    row = captions.index[captions["caption"] == "solid colour number 7"][0]
    assert captions["url"][row].endswith("/img07.jpg")
    image = next(
        s["image"]
        for p in list_shards(shards)
        for s in iter_shard(p)
        if s["caption"] == "solid colour number 7"
    )
    z = VAE.from_pretrained(tiny_vae_dir).encode(pil_to_tensor([load_image(image)]))[0].numpy()
    assert np.abs(ds.latent(row) - z).max() <= 4.0 / 255 + 1e-4  # within half a uint8 step (clip 4)


@pytest.mark.skipif(
    shutil.which("java") is None, reason="Spark needs Java (.ci/test installs default-jre-headless)"
)
def test_pyspark_distributor_runs_on_a_local_spark_session(site, downloaded, tmp_path):
    pytest.importorskip("pyspark")
    table = tmp_path / "urls.tsv"
    rows = [(u, c) for u, c in site if "flaky" not in u]  # the flaky files were served in the fixture
    pd.DataFrame({"link": [u for u, _ in rows], "text": [c for _, c in rows]}).to_csv(
        table, sep="\t", index=False
    )
    argv = ["preprocess", "download", str(table), str(tmp_path / "shards"), "--url-col", "link"]
    argv += ["--caption-col", "text", "--image-size", "32", "--samples-per-shard", "8", "--threads", "4"]
    assert main([*argv, "--processes", "2", "--distributor", "pyspark"]) == 0
    summary = summarize_stats(tmp_path / "shards")
    assert (summary.count, summary.successes, summary.shards) == (28, N_GOOD + 3, 4)
    assert summary.failures == {"HTTP Error 404: File not found": 3, "Image decoding error": 2}
    mp = {s["caption"]: s["image"] for p in list_shards(downloaded[1]) for s in iter_shard(p) if s["image"]}
    spark = {
        s["caption"]: s["image"]
        for p in list_shards(tmp_path / "shards")
        for s in iter_shard(p)
        if s["image"]
    }
    assert (
        spark == {c: mp[c] for c in spark} and len(spark) == N_GOOD + 3
    )  # the same bytes as multiprocessing
    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is None  # the session it started is stopped
