"""A local folder of images with captions -> webdataset shards, without any network.

Captions come from a sidecar `<image stem>.txt` next to each image, or from a CSV/JSONL/Parquet
table mapping file names (relative to the folder) to captions.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tld.preprocessing.shards import Sample, write_shards, write_source_info
from tld.preprocessing.tables import check_columns, read_table
from tqdm.auto import tqdm

from tld.encoders.images import center_crop_resize, load_image
from tld.errors import TLDError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class FolderSummary:
    written: int = 0
    shards: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def format(self) -> str:
        lines = [f"{self.written} images written into {self.shards} shard(s)"]
        lines += [f"  skipped {n:6d}  {reason}" for reason, n in sorted(self.skipped.items())]
        return "\n".join(lines)


def _captions_from_table(root: Path, table: str | os.PathLike, file_col: str, caption_col: str) -> list:
    df = read_table(table)
    check_columns(df, [file_col, caption_col], f"captions table {table}")
    return [(root / str(f), str(c)) for f, c in zip(df[file_col], df[caption_col].fillna(""))]


def _captions_from_sidecars(root: Path) -> list:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise TLDError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return [
        (p, p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").is_file() else None)
        for p in images
    ]


def folder_samples(
    pairs: list, image_size: int | None, skipped: Counter, progress: bool = True
) -> Iterator[Sample]:
    for path, caption in tqdm(pairs, desc="images", unit="img", disable=not progress):
        if caption is None:
            skipped["no caption (.txt sidecar missing)"] += 1
            continue
        if not path.is_file():
            skipped["file not found"] += 1
            continue
        try:
            image = load_image(path)
        except TLDError:
            skipped["cannot decode image"] += 1
            continue
        if image_size:
            image = center_crop_resize(image, image_size)
        yield Sample(image, caption, {"url": str(path)})


def build_folder_shards(
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    captions: str | os.PathLike | None = None,
    file_col: str = "file",
    caption_col: str = "caption",
    image_size: int | None = 256,
    samples_per_shard: int = 10000,
    image_format: str = "jpg",
    progress: bool = True,
) -> FolderSummary:
    """Shard a folder of images; `image_size` center-crops to a square (None keeps each image as is)."""
    root = Path(images_dir)
    if not root.is_dir():
        raise TLDError(f"image folder {root} does not exist")
    if image_size is not None and image_size <= 0:
        raise TLDError(f"image size must be > 0, got {image_size}")
    pairs = (
        _captions_from_table(root, captions, file_col, caption_col)
        if captions
        else _captions_from_sidecars(root)
    )
    skipped: Counter[str] = Counter()
    written, shards = write_shards(
        folder_samples(pairs, image_size, skipped, progress), out, samples_per_shard, image_format
    )
    if written == 0:
        raise TLDError(f"no usable captioned images in {root}: skipped {dict(skipped)}")
    write_source_info(out, {"source": f"folder:{root.resolve()}", "license": "", "count": written})
    return FolderSummary(written, shards, dict(skipped))
