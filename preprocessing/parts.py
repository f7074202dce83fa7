"""encode --layout parts: each group of shards becomes one part of the dataset; nothing is merged.

Process i of N encodes groups i, i + N, ... into `<out>/parts/<name>/` (name = first shard + a hash
of the group's shard names, so processes and machines need nothing but the shard list to agree). A
part is written as `<name>.tmp/` and renamed when complete, so a killed run loses at most the parts in
flight and `--resume` skips the finished ones. The main process then writes parts.json (the
manifest, from the parts' own indexes) and meta.json; no array is read or copied again, so encode
needs no disk beyond its output. With `add=True` the new parts are appended to an existing parts
dataset encoded with the same settings.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tld.preprocessing.buckets import group_part_names, meta_buckets
from tld.preprocessing.merge import _one_line, _provenance, _validation, _write_val
from tld.preprocessing.shards import read_source_info

from tld.data.format import CAPTIONS, LABELS, LATENTS, TEXT_EMB, DatasetMeta, write_meta
from tld.data.parts import (
    PARTS_DIR,
    PartIndex,
    read_manifest,
    read_part_index,
    write_manifest,
    write_part,
)
from tld.errors import TLDError


def shard_groups(shards: list[Path], per_part: int) -> list[list[Path]]:
    if per_part < 1:
        raise TLDError(f"shards per part must be >= 1, got {per_part}")
    return [shards[i : i + per_part] for i in range(0, len(shards), per_part)]


def encode_group(
    group: list[Path],
    folder: Path,
    models: tuple[Any, Any],
    cfg: Any,
    size: int | list[list[int]],
    bar: Any,
    steps: tuple[Any, Any],
) -> list[PartIndex]:
    """Encode a group of shards (held in RAM together) into its part folder(s) under `folder`: one
    part, or one per bucket when `size` lists bucket sizes.

    `steps` are encode.py's (shard_arrays, stored_arrays): one shard's arrays per size, and their stored form."""
    (vae, text), (shard_arrays, stored_arrays) = models, steps
    names = group_part_names(group, size)
    pieces: list[list[dict[str, np.ndarray]]] = [[] for _ in names]
    frames: list[list[pd.DataFrame]] = [[] for _ in names]
    results: list[list[Any]] = [[] for _ in names]
    for shard in group:
        bar.set_postfix_str(shard.name)
        for b, (z, emb, captions, result) in enumerate(shard_arrays(shard, vae, text, cfg, size, bar)):
            pieces[b].append(stored_arrays(z, emb, cfg, result))
            frames[b].append(captions)
            results[b].append(result)
    return [
        _write_group_part(folder / name, group, pieces[b], frames[b], results[b])
        for b, name in enumerate(names)
    ]


def _write_group_part(
    dest: Path, group: list[Path], pieces: list[dict], frames: list[pd.DataFrame], results: list[Any]
) -> PartIndex:
    """One part from the arrays, captions and counts of its shards (class labels when all have one)."""
    arrays = {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}
    captions = pd.concat(frames, ignore_index=True)
    labels = captions.pop("label")
    if len(labels) and (labels >= 0).all():
        captions["label"] = labels
        arrays[LABELS] = labels.to_numpy().astype(np.int64)
    elif (labels >= 0).any():
        warnings.warn(
            f"part {dest.name}: only some samples carry a class label; {LABELS} not written", stacklevel=2
        )
    failed: Counter[str] = Counter()
    for r in results:
        failed.update(r.failed)
    stats = {
        "samples": sum(r.samples for r in results),
        "encoded": sum(r.encoded for r in results),
        "failed": dict(failed),
        "clipped_values": sum(r.clipped_values for r in results),
    }
    index = PartIndex(dest.name, int(len(arrays[LATENTS])), shards=[s.name for s in group], stats=stats)
    return write_part(dest, arrays, captions, index)


def encode_parts(
    target: Path,
    shards: list[Path],
    dist: Any,
    models: tuple[Any, Any],
    cfg: Any,
    size: int | list[list[int]],
    steps: tuple[Any, Any],
) -> None:
    """This process's share of the parts (skipping finished groups), then a barrier."""
    from tqdm.auto import tqdm

    groups = shard_groups(shards, cfg.shards_per_part)
    folder = target / PARTS_DIR
    mine = [
        g
        for g in groups[dist.rank :: dist.world]
        if not all((folder / name).is_dir() for name in group_part_names(g, size))
    ]
    with tqdm(desc=f"encode [{dist.rank}]", unit="img", disable=not cfg.progress) as bar:
        for group in mine:
            encode_group(group, folder, models, cfg, size, bar, steps)
    dist.barrier()


def _kept_ranges(mask: np.ndarray) -> list[list[int]]:
    """[[start, stop), ...] of the True runs of a boolean row mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def _hold_out(target: Path, parts: list[PartIndex], count: int) -> tuple[list[str], list[np.ndarray]]:
    """Mark the last `count` images (and their mirrored copies) of the last parts as not kept."""
    prompts: list[list[str]] = []
    embs: list[np.ndarray] = []
    left = count
    for part in reversed(parts):
        if left == 0:
            break
        folder = target / PARTS_DIR / part.name
        frame = pd.read_parquet(folder / CAPTIONS, columns=["caption", "key", "flipped"])
        keys = frame.loc[~frame["flipped"], "key"].tolist()[-left:]
        held = frame["key"].isin(keys).to_numpy()
        rows = held & ~frame["flipped"].to_numpy()
        prompts.insert(0, frame.loc[rows, "caption"].tolist())
        embs.insert(0, np.load(folder / TEXT_EMB, mmap_mode="r")[rows])
        part.keep = _kept_ranges(~held)
        left -= len(keys)
    if left:
        raise TLDError(f"cannot hold out {count} validation images: only {count - left} were encoded")
    return [p for group in prompts for p in group], embs


def finish_parts(
    target: Path,
    shards: list[Path],
    cfg: Any,
    models: tuple[Any, Any],
    size: int | list[list[int]],
    settings: dict[str, Any],
    source_dir: Path,
) -> DatasetMeta:
    """Write parts.json and meta.json from the parts' indexes (main process, after every part is done)."""
    vae, text = models
    folder = target / PARTS_DIR
    names = [n for g in shard_groups(shards, cfg.shards_per_part) for n in group_part_names(g, size)]
    missing = [n for n in names if not (folder / n).is_dir()]
    if missing:
        raise TLDError(f"{len(missing)} part(s) not encoded yet, e.g. {missing[:3]}; rerun with --resume")
    earlier = read_manifest(target) if cfg.add and (target / "parts.json").is_file() else []
    known = {p.name for p in earlier}
    new = [read_part_index(folder / n) for n in names if n not in known]
    n_val = _validation(target, cfg, text, [], [], []) if cfg.val_prompts else 0
    if cfg.val_holdout:
        prompts, embs = _hold_out(target, new, cfg.val_holdout)
        _write_val(target, [_one_line(p) for p in prompts], np.concatenate(embs))
        n_val = len(prompts)
    parts = earlier + new
    count = sum(b - a for p in parts for a, b in p.kept_ranges())
    if count == 0:
        raise TLDError(f"no image of {sum(p.stats.get('samples', 0) for p in new)} could be encoded")
    stats = [p.stats for p in parts]
    failed: Counter[str] = Counter()
    for s in stats:
        failed.update(s.get("failed", {}))
    info = read_source_info(source_dir)
    lat, emb = parts[0].arrays[LATENTS], parts[0].arrays[TEXT_EMB]
    extra = _provenance(info, cfg, stats, failed, n_val, sum(len(p.shards) for p in parts), lat["shape"])
    extra.update(parts=len(parts), encode_settings={k: v for k, v in settings.items() if k != "shards"})
    if all(LABELS in p.arrays for p in parts):
        extra.update(labelled=count, class_names=info.get("class_names"))
    buckets = meta_buckets(size, vae, parts)
    meta = DatasetMeta(
        count=count,
        latent_shape=buckets[0]["latent_shape"] if buckets else list(lat["shape"][1:]),
        latent_dtype=cfg.latent_dtype,
        latent_clip=cfg.latent_clip if cfg.latent_dtype == "uint8" else None,
        latent_scale=vae.latent_scale,
        vae=vae.spec,
        text_encoder=text.spec,
        text_dim=int(emb["shape"][-1]),
        text_tokens=int(emb["shape"][1]) if cfg.text_tokens else 0,
        image_size=[size, size] if isinstance(size, int) else list(size[0]),
        flip_doubled=cfg.flip,
        source=str(info.get("source") or source_dir.resolve()),
        license=str(info.get("license", "")),
        extra=extra,
        layout="parts",
        buckets=buckets,
    )
    write_manifest(target, parts)
    write_meta(target, meta)  # last: a folder with meta.json is a complete dataset
    return meta
