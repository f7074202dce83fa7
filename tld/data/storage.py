"""Latent datasets on object storage (s3://, gs://, az://, any fsspec URL), read through a local cache.

Opening `s3://bucket/ds` copies its small files (meta.json, parts.json, the validation prompts and
embeddings) into `<cache>/<hash of the URL>/`; each part is then copied whole into the cache the
first time a row of it is read (or all at once with `prefetch=True`), checked against the manifest's
header checksums, and memory-mapped from there like a local part. Training reads random rows: one
GET per 4 KiB row would be bound by request latency, while a whole part is one sequential transfer
and every later read is a page-cache hit (the measurement is in docs/scale.md). A part in the cache is
complete or absent: it is downloaded into `<name>.tmp/` and renamed.

The cache folder is `$TLD_DATA_CACHE`, else ~/.cache/tld/datasets. Needs `fsspec` plus the backend's
package (`s3fs` for s3://, `gcsfs` for gs://): pip install 'tld[data]'.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from tld.errors import TLDError

SMALL_FILES = ("meta.json", "parts.json", "val_text_emb.npy", "val_prompts.txt")
PART_FILES = ("latents.npy", "text_emb.npy", "text_mask.npy", "labels.npy", "captions.parquet", "part.json")


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL with a scheme other than file:// (s3://, gs://, memory://, ...)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def cache_root() -> Path:
    return Path(os.environ.get("TLD_DATA_CACHE") or Path.home() / ".cache" / "tld" / "datasets")


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise TLDError(f"reading {url} needs fsspec and its backend: pip install 'tld[data]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise TLDError(f"cannot open {url}: {exc}") from None


class RemoteDataset:
    """A dataset URL mirrored on demand into a local cache folder."""

    def __init__(self, url: str, cache: str | os.PathLike | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = _filesystem(self.url)
        key = hashlib.sha1(self.url.encode()).hexdigest()[:16]
        self.local = Path(cache or cache_root()) / key
        self.local.mkdir(parents=True, exist_ok=True)

    def fetch_small(self) -> Path:
        """The manifest and the other small files (always fetched again: a dataset may have grown)."""
        self.fs.invalidate_cache()
        if not self.fs.exists(f"{self.root}/meta.json"):
            raise TLDError(f"{self.url}/meta.json not found: not a tld latent dataset")
        for name in SMALL_FILES:
            remote = f"{self.root}/{name}"
            if self.fs.exists(remote):
                self._get(remote, self.local / name)
        return self.local

    def _get(self, remote: str, local: Path) -> None:
        tmp = local.with_name(local.name + ".tmp")
        try:
            self.fs.get_file(remote, str(tmp))
        except OSError as exc:
            raise TLDError(f"cannot download {remote}: {exc}") from None
        os.replace(tmp, local)

    def part(self, rel: str) -> Path:
        """The local copy of the part folder `rel` (e.g. parts/00000-ab12cd34), downloaded if missing."""
        dest = self.local / rel
        if dest.is_dir():
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in PART_FILES:
            remote = f"{self.root}/{rel}/{name}"
            if self.fs.exists(remote):
                self._get(remote, tmp / name)
        os.replace(tmp, dest)
        return dest

    def single(self) -> Path:
        """A single-file dataset is one part: its arrays are copied into the cache folder itself."""
        for name in PART_FILES:
            remote = f"{self.root}/{name}"
            if not (self.local / name).is_file() and self.fs.exists(remote):
                self._get(remote, self.local / name)
        return self.local
