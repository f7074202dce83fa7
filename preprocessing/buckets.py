"""encode --buckets: the checks of the bucket sizes, the parts' names, and meta.json's bucket list.

Each group of shards becomes one part per bucket, named `<group's part name>-<H>x<W>` (an empty
part where no image of the group fits the bucket, so a finished group is simply one whose parts all
exist and --resume needs no other record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tld.data.buckets import bucket_records, check_buckets
from tld.data.parts import part_name
from tld.errors import TLDError


def check_encode_buckets(cfg: Any) -> None:
    """What needs no model: --buckets only with --layout parts, and not together with --image-size."""
    if cfg.buckets is None:
        return
    if cfg.layout != "parts":
        raise TLDError("--buckets needs --layout parts (a part holds one latent shape)")
    if cfg.image_size:
        raise TLDError("--buckets sets the image sizes; leave out --image-size")
    if not isinstance(cfg.buckets, list) or not all(
        isinstance(b, (list, tuple)) and len(b) == 2 for b in cfg.buckets
    ):
        raise TLDError(f"buckets must be a list of [height, width] pixel sizes, got {cfg.buckets!r}")


def image_sizes(cfg: Any, vae: Any) -> list[list[int]] | None:
    """The buckets as [[height, width], ...], checked against the VAE; None without buckets."""
    if cfg.buckets is None:
        return None
    sizes = [[int(h), int(w)] for h, w in cfg.buckets]
    check_buckets([(h, w) for h, w in sizes], vae.downsample_factor)
    return sizes


def group_part_names(group: list[Path], size: int | list[list[int]]) -> list[str]:
    """The names of the parts of a group of shards: one, or one per bucket."""
    base = part_name([s.name for s in group])
    return [base] if isinstance(size, int) else [f"{base}-{h}x{w}" for h, w in size]


def meta_buckets(size: int | list[list[int]], vae: Any, parts: list[Any]) -> list[dict[str, Any]] | None:
    """meta.json's `buckets` (image size, latent shape, training rows of each); None without buckets."""
    if isinstance(size, int):
        return None
    listed = [{"image_size": [h, w], "latent_shape": list(vae.latent_shape(h, w))} for h, w in size]
    return bucket_records(parts, listed)
