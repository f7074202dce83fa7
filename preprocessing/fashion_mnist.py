"""Fashion-MNIST (Zalando Research, MIT) from its idx files -> class-labelled webdataset shards.

Debian's `dataset-fashion-mnist` installs the four gzip idx files under /usr/share/datasets/fashion-mnist;
`--source` points elsewhere (gzip or raw idx files both work). The train and test splits stay apart:
OUT/train and OUT/test are two shard folders. Each sample's caption is its class name and its json
holds the integer class as `label` (what `encode` turns into labels.npy).

Images are written as 32 x 32 RGB PNG: the 28 x 28 grey digitised photos padded by 2 black pixels
(the set's background is black), so no pixel is resampled, and 32 = 2^5 suits VAEs that halve the side
two or three times. RGB because the shard writer, the VAE trainer, `encode` and the FID extractors
all take three channels; the three channels are equal. PNG because JPEG would smear the thin lines.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tld.preprocessing.shards import Sample, write_shards, write_source_info
from tqdm.auto import tqdm

from tld.common import first_line
from tld.errors import TLDError, check_int

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LICENSE = "MIT"
LICENSE_URL = "https://github.com/zalandoresearch/fashion-mnist/blob/master/LICENSE"
ATTRIBUTION = "Fashion-MNIST by Zalando Research (Xiao, Rasul and Vollgraf, 2017). License: MIT"
_INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist` or pass --source DIR"


def find_idx(folder: Path, stem: str) -> Path:
    """`stem.gz` or `stem` (raw) in folder; a one-line error naming the package when neither exists."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise TLDError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}; {_INSTALL_HINT}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An unsigned-byte idx file (gzip or raw) as a uint8 array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream an EOFError
        raise TLDError(f"cannot read {path}: {first_line(exc)}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise TLDError(f"{path} is not an unsigned-byte idx file (header {data[:4].hex() or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise TLDError(f"{path} is truncated: its header needs {header} bytes, the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise TLDError(
            f"{path} is truncated or padded: shape {list(shape)} needs {expected} bytes of data, "
            f"the file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, labels (N,) uint8) of the train or test split, checked for agreement."""
    if split not in SPLITS:
        raise TLDError(f"split must be one of {list(SPLITS)}, got {split!r}")
    root = Path(folder)
    if not root.is_dir():
        raise TLDError(f"Fashion-MNIST folder {root} does not exist; {_INSTALL_HINT}")
    image_stem, label_stem = SPLITS[split]
    image_path, label_path = find_idx(root, image_stem), find_idx(root, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise TLDError(
            f"expected (N, H, W) images and (N,) labels, got {list(images.shape)} in {image_path.name} "
            f"and {list(labels.shape)} in {label_path.name}"
        )
    if len(images) != len(labels):
        raise TLDError(
            f"{image_path.name} holds {len(images)} images but {label_path.name} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise TLDError(f"{label_path.name} has label {int(labels.max())}; Fashion-MNIST labels are 0-9")
    return images, labels


def to_square(image: np.ndarray, size: int) -> Image.Image:
    """A grey (H, W) image padded with black to a square of side max(H, W, 32), resized if size differs."""
    h, w = image.shape
    side = max(h, w, 32)
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image
    out = Image.fromarray(canvas, mode="L")
    return out if side == size else out.resize((size, size), Image.Resampling.LANCZOS)


def split_samples(
    images: np.ndarray, labels: np.ndarray, split: str, size: int, progress: bool = True
) -> Iterator[Sample]:
    for index in tqdm(range(len(images)), desc=split, unit="img", disable=not progress):
        label = int(labels[index])
        name = CLASS_NAMES[label]
        meta = {"label": label, "class_name": name, "split": split, "index": index}
        meta["url"] = f"fashion-mnist:{split}/{index}"
        yield Sample(to_square(images[index], size), name, meta)


@dataclass
class FashionMNISTReport:
    counts: dict[str, int]  # split -> samples written
    shards: dict[str, int]  # split -> shard files

    def summary(self) -> str:
        parts = [f"{split}: {n} images in {self.shards[split]} shard(s)" for split, n in self.counts.items()]
        return "; ".join(parts)


def build_fashion_mnist_shards(
    out: str | os.PathLike,
    source: str | os.PathLike | None = None,
    size: int = 32,
    limit: int | None = None,
    samples_per_shard: int = 10000,
    progress: bool = True,
) -> FashionMNISTReport:
    """Write OUT/train and OUT/test shard folders (PNG, caption = class name, json `label`)."""
    check_int(size, "image size", 8)
    if limit is not None and limit < 1:
        raise TLDError(f"limit must be >= 1, got {limit}")
    root = Path(source) if source is not None else DEFAULT_SOURCE
    splits = {split: load_split(root, split) for split in SPLITS}  # every file checked before writing
    counts, shards = {}, {}
    for split, (images, labels) in splits.items():
        images, labels = images[:limit], labels[:limit]
        folder = Path(out) / split
        counts[split], shards[split] = write_shards(
            split_samples(images, labels, split, size, progress), folder, samples_per_shard, "png"
        )
        info = {
            "source": f"Fashion-MNIST {split} split ({root.resolve()})",
            "license": LICENSE,
            "license_url": LICENSE_URL,
            "attribution": ATTRIBUTION,
            "count": counts[split],
            "split": split,
            "class_names": list(CLASS_NAMES),
        }
        write_source_info(folder, info)
    return FashionMNISTReport(counts, shards)
