"""The shard format every source writes and `encode` reads: webdataset tars as img2dataset makes them.

Each sample is `<key>.jpg` (or .png/.webp), `<key>.txt` (the caption) and `<key>.json` (key, caption,
url or source path, licence); shards are `00000.tar`, `00001.tar`, ... A shard folder may also hold
`tld-source.meta` (JSON: source name, licence, attribution) that `encode` copies into meta.json. It is
not named *.json because img2dataset reads every top-level *.json as a finished shard's stats.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from tld.common import first_line, write_json_atomic
from tld.encoders.images import to_rgb
from tld.errors import TLDError, check_int

SOURCE_INFO = "tld-source.meta"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class Sample:
    """One captioned image on its way into a shard."""

    image: Image.Image
    caption: str
    meta: dict[str, Any]


def write_source_info(folder: str | os.PathLike, info: dict[str, Any]) -> None:
    write_json_atomic(Path(folder) / SOURCE_INFO, info)


def read_source_info(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / SOURCE_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def list_shards(folder: str | os.PathLike) -> list[Path]:
    """The shard tars of a folder in name order (the order every stage processes them in)."""
    root = Path(folder)
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise TLDError(f"shard folder {root} {state}")
    shards = sorted(p for p in root.glob("*.tar") if p.is_file())
    if not shards:
        raise TLDError(
            f"no webdataset shards (*.tar) in {root}; found {len(list(root.iterdir()))} other entries"
        )
    return shards


def _encode_image(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format=fmt.upper())
    return buf.getvalue()


def write_shards(
    samples: Iterable[Sample],
    out: str | os.PathLike,
    samples_per_shard: int = 10000,
    image_format: str = "jpg",
) -> tuple[int, int]:
    """Write samples into 00000.tar, 00001.tar, ...; returns (samples, shards).

    Each tar is written under a temporary name and renamed when complete, so a killed run never
    leaves a half shard that `encode` would take for a finished one.
    """
    import webdataset as wds

    if image_format not in ("jpg", "png", "webp"):
        raise TLDError(f"image format must be jpg, png or webp, got {image_format!r}")
    check_int(samples_per_shard, "samples per shard", 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    count, shard, writer, tmp = 0, -1, None, None

    def close() -> None:
        if writer is not None:
            writer.close()
            os.replace(tmp, out / f"{shard:05d}.tar")

    for sample in samples:
        if count % samples_per_shard == 0:
            close()
            shard += 1
            tmp = out / f"{shard:05d}.tar.tmp"
            writer = wds.TarWriter(str(tmp))
        key = f"{shard:05d}{count % samples_per_shard:04d}"
        meta = {"key": key, "caption": sample.caption, **sample.meta}
        writer.write(
            {
                "__key__": key,
                image_format: _encode_image(to_rgb(sample.image), image_format),
                "txt": sample.caption,
                "json": json.dumps(meta).encode(),
            }
        )
        count += 1
    close()
    return count, shard + 1


def iter_shard(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard in file order: {"key", "image" (bytes|None), "caption", "json",
    "caption_error"}; `caption_error` is None, or why the caption is unusable (missing, not UTF-8).

    Read with webdataset's tar iterator and key grouping. Like tarfile, it stops silently at a
    truncated tar and would lose the samples after the cut, so the end-of-archive blocks are
    checked first and a shard without them is refused.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    path = Path(path)
    _check_complete_tar(path)
    try:
        with open(path, "rb") as stream:
            files = ({**f, "__url__": str(path)} for f in tar_file_iterator(stream))
            for sample in group_by_keys(files):
                image = next((sample[ext] for ext in IMAGE_EXTS if ext in sample), None)
                caption, caption_error = _decode_caption(sample.get("txt"))
                meta = json.loads(sample["json"]) if "json" in sample else {}
                yield {
                    "key": sample["__key__"].rsplit("/", 1)[-1],
                    "image": image,
                    "caption": caption,
                    "json": meta,
                    "caption_error": caption_error,
                }
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise TLDError(f"cannot read shard {path}: {first_line(exc)}") from None


def _decode_caption(raw: bytes | None) -> tuple[str, str | None]:
    """(caption, None), or (best-effort text, the reason it is unusable) for a missing or non-UTF-8 .txt."""
    if raw is None:
        return "", "no caption in sample"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), "caption is not UTF-8"


def _check_complete_tar(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(max(size - 1024, 0))
            tail = f.read()
    except OSError as exc:
        raise TLDError(f"cannot read shard {path}: {exc}") from None
    if size < 1024 or size % 512 or tail.count(0) != len(tail):
        raise TLDError(
            f"shard {path} is truncated or not a tar file ({size} bytes, no end-of-archive marker)"
        )


def combine_shards(sources: list[str | os.PathLike], out: str | os.PathLike) -> int:
    """Copy the shards of several folders into one, renumbered 00000.tar, ... in source order.

    The source records are merged: one line per source, every licence and attribution kept, so a
    dataset built from several sets still credits each. Returns the number of shards written.
    """
    import shutil

    if not sources:
        raise TLDError("combine needs at least one shard folder")
    out = Path(out)
    if out.exists() and any(out.glob("*.tar")):
        raise TLDError(f"{out} already holds shards; combine writes into a new or empty folder")
    shard_lists = [list_shards(src) for src in sources]  # all checked before anything is copied
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    infos = []
    for src, shards in zip(sources, shard_lists):
        for shard in shards:
            tmp = out / f"{n:05d}.tar.tmp"
            shutil.copyfile(shard, tmp)
            os.replace(tmp, out / f"{n:05d}.tar")
            n += 1
        infos.append(read_source_info(src) or {"source": str(Path(src).resolve())})
    merged = {
        "source": "; ".join(str(i.get("source", "?")) for i in infos),
        "license": "; ".join(dict.fromkeys(str(i.get("license", "unknown")) for i in infos)),
        "attribution": "; ".join(
            dict.fromkeys(str(i.get("attribution", "")) for i in infos if i.get("attribution"))
        ),
        "count": sum(int(i.get("count", 0)) for i in infos),
        "parts": infos,
    }
    write_source_info(out, merged)
    return n


def sample_shards(
    src: str | os.PathLike, out: str | os.PathLike, n: int, seed: int = 0, samples_per_shard: int = 10000
) -> int:
    """Write a seeded random sample of n images of `src` (all, if it has fewer) into new shards.

    An evaluation reference or a quick trial set should cover every part of a combined dataset, not
    only the first source's images. The sample is written in a seeded random order, so that any prefix
    of it (an evaluation's first N prompts, say) is a random sample too, not the first source's images.
    Images are stored as lossless PNG, captions and json unchanged, the source record copied with the
    sampling noted. The chosen images' encoded bytes are held in memory while reordering. Returns the count.
    """
    import numpy as np

    from tld.encoders.images import load_image

    check_int(n, "n", 1)
    shards = list_shards(src)
    out = Path(out)
    if out.exists() and any(out.glob("*.tar")):
        raise TLDError(f"{out} already holds shards; write the sample into a new or empty folder")
    total = sum(1 for shard in shards for _ in iter_shard(shard))
    order = np.random.default_rng(seed).permutation(total)[: min(n, total)].tolist()
    rank = {index: position for position, index in enumerate(order)}
    slots: list[dict | None] = [None] * len(order)
    index = 0
    for shard in shards:
        for raw in iter_shard(shard):
            if index in rank and raw["image"] is not None:
                slots[rank[index]] = raw
            index += 1

    def chosen() -> Iterator[Sample]:
        for raw in slots:
            if raw is not None:
                meta = {k: v for k, v in raw["json"].items() if k not in ("key", "caption")}
                yield Sample(load_image(raw["image"]), raw["caption"], meta)

    count, _ = write_shards(chosen(), out, samples_per_shard, image_format="png")
    info = read_source_info(src) or {"source": str(Path(src).resolve())}
    write_source_info(out, {**info, "count": count, "sampled": f"{count} of {total} images, seed {seed}"})
    return count
