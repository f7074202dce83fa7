"""Parts datasets read from object storage: a real S3-compatible server (moto's standalone server on
127.0.0.1) through s3fs, with the parts a reader touches cached locally; no mock objects."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_parts import write_parts

from tld.data import LatentDataset
from tld.data.format import open_latent_dataset
from tld.errors import TLDError

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
fsspec = pytest.importorskip("fsspec")


@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("TLD_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    bucket = f"tld-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    fs.mkdir(bucket)
    return fs, bucket


def test_parts_round_trip_through_s3_caches_only_the_parts_read(s3, tmp_path):
    fs, bucket = s3
    local = write_parts(tmp_path / "d", labels=True)
    fs.put(str(local), f"{bucket}/ds", recursive=True)
    url = f"s3://{bucket}/ds"
    data = LatentDataset(url, condition="class")
    cache = next((tmp_path / "cache").iterdir())
    assert not (cache / "parts").exists()  # opening fetched the manifest only
    rows = np.array([0, 4, 2])
    assert data.get(rows).latents[:, 0, 0, 0].tolist() == [0.0, 4.0, 2.0]
    assert sorted(p.name for p in (cache / "parts").iterdir()) == ["p0"]  # the one part read
    everything = LatentDataset(url)
    np.testing.assert_array_equal(
        everything.get(np.arange(12)).text_emb, LatentDataset(local).get(np.arange(12)).text_emb
    )
    assert sorted(p.name for p in (cache / "parts").iterdir()) == ["p0", "p1", "p2"]
    assert data.num_classes == 3 and data.get(np.array([5, 8])).labels.tolist() == [2, 2]


def test_single_file_dataset_and_bad_urls(s3, tmp_path):
    from train_fixtures import write_dataset

    fs, bucket = s3
    local = write_dataset(tmp_path / "single", n=6)
    fs.put(str(local), f"{bucket}/single", recursive=True)
    remote = open_latent_dataset(f"s3://{bucket}/single")
    np.testing.assert_array_equal(remote.latents[:], np.load(local / "latents.npy"))
    with pytest.raises(TLDError, match=f"s3://{bucket}/nothing/meta.json not found"):
        LatentDataset(f"s3://{bucket}/nothing")


def test_a_part_replaced_on_the_server_is_refused(s3, tmp_path):
    fs, bucket = s3
    local = write_parts(tmp_path / "d")
    np.save(tmp_path / "other.npy", np.zeros((3, 2, 4, 4), dtype=np.float32))
    fs.put(str(local), f"{bucket}/ds", recursive=True)
    fs.put(str(tmp_path / "other.npy"), f"{bucket}/ds/parts/p1/latents.npy")
    data = LatentDataset(f"s3://{bucket}/ds")
    with pytest.raises(TLDError, match="p1/latents.npy does not match its part index"):
        data.get(np.array([6]))
