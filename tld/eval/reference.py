"""Reference statistics of real images, cached on disk per dataset, extractor, image size and N.

The real images come from a shard folder (`*.tar` as `tld preprocess` writes them; captions from
the shards) or a folder of image files (captions from sidecar `<stem>.txt`, else empty). The first
N images in file order are centre-cropped and resized to the generated images' size (so both sets
reach the extractor through the same resize) and turned into features.

The cache file is `<cache>/<folder name>-<extractor>-<H>x<W>-n<N>-<key>.npz`, the key hashing the
folder's resolved path and a fingerprint of its files (names, sizes, mtimes): changing the data
makes a new key, so stale statistics are never read. Files are written to a temporary name and
renamed, so a killed run leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tld.encoders.colour import dominant_colour
from tld.errors import TLDError, check_int
from tld.eval.features import FeatureExtractor
from tld.eval.metrics import feature_stats

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CACHE_ENV = "TLD_EVAL_CACHE"
CACHE_VERSION = 2  # 2: class labels stored; older files are never read


def default_cache_dir() -> Path:
    """$TLD_EVAL_CACHE, else ~/.cache/tld/eval."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tld" / "eval")


@dataclass
class ReferenceSet:
    """Features of N real images with their captions and dominant colours."""

    features: np.ndarray  # (N, D) float32
    captions: list[str]
    dominants: list[str]  # dominant colour class of each image (tld.encoders.colour)
    extractor: str
    image_size: tuple[int, int]
    source: str
    cached: bool = False  # True when read from the cache
    labels: list[int] | None = None  # class labels of the images, when the data carries them

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return feature_stats(self.features)


def _data_files(data: Path) -> tuple[str, list[Path]]:
    """("shards", tars) or ("images", image files) of a data folder, in processing order."""
    if not data.is_dir():
        state = "is a file, not a folder" if data.exists() else "does not exist"
        raise TLDError(f"data folder {data} {state}")
    tars = sorted(p for p in data.glob("*.tar") if p.is_file())
    if tars:
        return "shards", tars
    images = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise TLDError(f"{data} holds no shards (*.tar) and no images ({', '.join(IMAGE_SUFFIXES)})")
    return "images", images


def files_fingerprint(root: Path, files: Iterable[Path]) -> str:
    """sha1 over the files' names relative to root, sizes and mtimes (missing files are skipped)."""
    h = hashlib.sha1()
    for p in files:
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dataset_fingerprint(data: str | os.PathLike) -> str:
    """files_fingerprint of a data folder's shards or images (with their sidecar captions)."""
    root = Path(data)
    _, files = _data_files(root)
    return files_fingerprint(root, (p for path in files for p in (path, path.with_suffix(".txt"))))


def iter_real_samples(data: str | os.PathLike) -> Iterator[tuple[bytes | Path, str, int | None]]:
    """(image bytes or path, caption, class label or None) for every image of a shard or image folder,
    in file order. The label is the integer `label` of a shard sample's json (class-labelled sources)."""
    kind, files = _data_files(Path(data))
    if kind == "images":
        for path in files:
            txt = path.with_suffix(".txt")
            yield path, txt.read_text(encoding="utf-8").strip() if txt.is_file() else "", None
        return
    from tld.preprocessing.shards import iter_shard

    for shard in files:
        for sample in iter_shard(shard):
            if sample["image"] is not None:
                label = sample["json"].get("label") if isinstance(sample["json"], dict) else None
                yield sample["image"], sample["caption"], label if isinstance(label, int) else None


def load_real_images(
    data: str | os.PathLike, n: int, image_size: tuple[int, int]
) -> tuple[np.ndarray, list[str], list[int] | None]:
    """The first n images as uint8 (n', H, W, 3), centre-cropped to image_size, their captions, and
    their class labels when every one of them has a label (else None)."""
    from tld.encoders.images import center_crop_resize, load_image

    images, captions, labels = [], [], []
    for source, caption, label in iter_real_samples(data):
        if len(images) == n:
            break
        images.append(np.asarray(center_crop_resize(load_image(source), image_size)))
        captions.append(caption)
        labels.append(label)
    if len(images) < 2:
        raise TLDError(f"{data} has {len(images)} readable image(s); FID needs at least 2")
    return np.stack(images), captions, None if None in labels else labels


def cache_path(data: Path, extractor: str, image_size: tuple[int, int], n: int, cache_dir: Path) -> Path:
    identity = {"data": str(data.resolve()), "fingerprint": dataset_fingerprint(data), "extractor": extractor,
                "image_size": list(image_size), "n": n, "version": CACHE_VERSION}  # fmt: skip
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{data.resolve().name}-{extractor}-{image_size[0]}x{image_size[1]}-n{n}-{key}.npz"
    return cache_dir / name


def _save(path: Path, ref: ReferenceSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            features=ref.features,
            captions=np.array(ref.captions, dtype=str),
            dominants=np.array(ref.dominants, dtype=str),
            labels=np.array(ref.labels or [], dtype=np.int64),
            info=np.array(
                json.dumps(
                    {
                        "extractor": ref.extractor,
                        "image_size": ref.image_size,
                        "source": ref.source,
                        "labelled": ref.labels is not None,
                    }
                )
            ),
        )
    os.replace(tmp, path)


def _load(path: Path) -> ReferenceSet:
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        return ReferenceSet(
            features=z["features"],
            captions=[str(c) for c in z["captions"]],
            dominants=[str(c) for c in z["dominants"]],
            extractor=info["extractor"],
            image_size=tuple(info["image_size"]),
            source=info["source"],
            cached=True,
            labels=[int(k) for k in z["labels"]] if info.get("labelled") else None,
        )


def reference_set(
    data: str | os.PathLike,
    extractor: FeatureExtractor,
    image_size: int | tuple[int, int],
    n: int,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ReferenceSet:
    """Features of the first n real images of `data` (fewer if it has fewer), from the cache when there."""
    check_int(n, "the number of images", 2)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    root = Path(data)
    path = cache_path(root, extractor.name, size, n, Path(cache_dir) if cache_dir else default_cache_dir())
    if path.is_file():
        return _load(path)
    images, captions, labels = load_real_images(root, n, size)
    dominants = [
        dominant_colour(im) for im in tqdm(images, desc="colours", disable=not progress, leave=False)
    ]
    feats = extractor(images, progress=progress)
    ref = ReferenceSet(feats, captions, dominants, extractor.name, size, str(root), labels=labels)
    _save(path, ref)
    return ref
