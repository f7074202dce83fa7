"""Merge the per-shard work folders of `encode` into one memory-mappable latent dataset.

Arrays are written with `np.lib.format.open_memmap` and filled shard by shard, so the merge never
holds more than one shard in RAM; each file is written under a temporary name and renamed, and
meta.json comes last: a folder with meta.json is a complete dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tld.preprocessing.shards import read_source_info

from tld.data.format import (
    CAPTIONS,
    LABELS,
    LATENTS,
    META,
    TEXT_EMB,
    TEXT_MASK,
    VAL_PROMPTS,
    VAL_TEXT_EMB,
    DatasetMeta,
    write_meta,
)
from tld.data.parts import MANIFEST, PARTS_DIR
from tld.errors import TLDError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _heldout(captions: list[pd.DataFrame], count: int) -> list[np.ndarray]:
    """Per shard, a mask of the rows held out for validation: the last `count` images (and their flips)."""
    masks = [np.zeros(len(c), dtype=bool) for c in captions]
    left = count
    for mask, frame in zip(reversed(masks), reversed(captions)):
        if left == 0:
            break
        keys = frame.loc[~frame["flipped"], "key"].tolist()[-left:]
        mask |= frame["key"].isin(keys).to_numpy()
        left -= len(keys)
    if left:
        raise TLDError(f"cannot hold out {count} validation images: only {count - left} were encoded")
    return masks


def _write_array(path: Path, parts: list[tuple[Path, np.ndarray]]) -> tuple[int, ...]:
    """Concatenate the kept rows of each part's .npy into `path` through a memmap; returns the shape."""
    first = np.load(parts[0][0], mmap_mode="r")
    total = int(sum(int(keep.sum()) for _, keep in parts))
    tmp = path.with_name("." + path.name + ".tmp")
    merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(total, *first.shape[1:]))
    row = 0
    for file, keep in parts:
        block = np.load(file, mmap_mode="r")[keep]
        merged[row : row + len(block)] = block
        row += len(block)
    merged.flush()
    del merged
    os.replace(tmp, path)
    return (total, *first.shape[1:])


def _write_val(out: Path, prompts: list[str], emb: np.ndarray) -> None:
    np.save(out / VAL_TEXT_EMB, emb.astype(np.float16))
    (out / VAL_PROMPTS).write_text("".join(_one_line(p) + "\n" for p in prompts))


def _validation(out: Path, cfg: Any, text: Any, work_dirs: list[Path], captions, held) -> int:
    if cfg.val_prompts:
        prompts = [ln.strip() for ln in Path(cfg.val_prompts).read_text().splitlines() if ln.strip()]
        if not prompts:
            raise TLDError(f"validation prompts file {cfg.val_prompts} holds no prompts")
        emb = text.encode(prompts, tokens=cfg.text_tokens)
        _write_val(out, prompts, (emb.tokens if cfg.text_tokens else emb.pooled).numpy())
        return len(prompts)
    if not cfg.val_holdout:
        return 0
    prompts, embs = [], []
    for folder, frame, mask in zip(work_dirs, captions, held):
        rows = mask & ~frame["flipped"].to_numpy()
        if rows.any():
            prompts += frame.loc[rows, "caption"].tolist()
            embs.append(np.load(folder / TEXT_EMB, mmap_mode="r")[rows])
    _write_val(out, prompts, np.concatenate(embs))
    return len(prompts)


def merge_work(
    out: Path, work_dirs: list[Path], cfg: Any, vae: Any, text: Any, size: int, source_dir: Path
) -> DatasetMeta:
    """Merge the per-shard work folders (in shard order) into the dataset arrays and meta.json."""
    missing = [f"{d.name}.tar" for d in work_dirs if not d.is_dir()]
    if missing:
        raise TLDError(
            f"cannot merge: {len(missing)} shard(s) not encoded yet, e.g. {missing[:3]}; rerun with resume"
        )
    captions = [pd.read_parquet(d / CAPTIONS) for d in work_dirs]
    stats = [json.loads((d / "stats.json").read_text()) for d in work_dirs]
    failed: Counter[str] = Counter()
    for s in stats:
        failed.update(s["failed"])
    held = (
        _heldout(captions, cfg.val_holdout) if cfg.val_holdout else [np.zeros(len(c), bool) for c in captions]
    )
    keep = [~h for h in held]
    if sum(int(k.sum()) for k in keep) == 0:
        raise TLDError(
            f"no image of {sum(s['samples'] for s in stats)} could be encoded; failures: {dict(failed)}"
        )

    latent_shape = _write_array(out / LATENTS, [(d / LATENTS, k) for d, k in zip(work_dirs, keep)])
    text_shape = _write_array(out / TEXT_EMB, [(d / TEXT_EMB, k) for d, k in zip(work_dirs, keep)])
    if cfg.text_tokens:
        _write_array(out / TEXT_MASK, [(d / TEXT_MASK, k) for d, k in zip(work_dirs, keep)])
    merged = pd.concat([c[k] for c, k in zip(captions, keep)], ignore_index=True)
    labelled = _write_labels(out, merged)
    merged.to_parquet(out / CAPTIONS, index=False)
    n_val = _validation(out, cfg, text, work_dirs, captions, held)

    info = read_source_info(source_dir)
    extra = _provenance(info, cfg, stats, failed, n_val, len(work_dirs), latent_shape)
    if labelled:  # class names come from the source record (e.g. preprocess fashion-mnist)
        extra.update(labelled=labelled, class_names=info.get("class_names"))
    meta = DatasetMeta(
        count=latent_shape[0],
        latent_shape=list(latent_shape[1:]),
        latent_dtype=cfg.latent_dtype,
        latent_clip=cfg.latent_clip if cfg.latent_dtype == "uint8" else None,
        latent_scale=vae.latent_scale,
        vae=vae.spec,
        text_encoder=text.spec,
        text_dim=int(text_shape[-1]),
        text_tokens=int(text_shape[1]) if cfg.text_tokens else 0,
        image_size=[size, size],
        flip_doubled=cfg.flip,
        source=str(info.get("source") or source_dir.resolve()),
        license=str(info.get("license", "")),
        extra=extra,
    )
    write_meta(out, meta)
    return meta


def _write_labels(out: Path, merged: pd.DataFrame) -> int:
    """labels.npy from the captions' label column when every sample has a class; returns how many have one.

    The column travels with its rows through flips, hold-outs and resumed shards, so the labels stay
    aligned with the latents. Without any label the column is dropped (text datasets look as before).
    """
    labels = merged.pop("label").fillna(-1).astype("int64") if "label" in merged else None
    if labels is None or not (labels >= 0).any():
        return 0
    merged["label"] = labels
    count = int((labels >= 0).sum())
    if count < len(labels):
        warnings.warn(
            f"only {count} of {len(labels)} samples carry a class label; {LABELS} not written", stacklevel=2
        )
        return count
    tmp = out / f".{LABELS}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, labels.to_numpy())
    os.replace(tmp, out / LABELS)
    return count


def _provenance(
    info: dict[str, Any], cfg: Any, stats: list[dict], failed: Counter, n_val: int, shards: int, shape
) -> dict[str, Any]:
    """meta.json's `extra`: attribution, counts, failures and how the validation prompts were chosen."""
    values = sum(s["encoded"] for s in stats) * (2 if cfg.flip else 1) * int(np.prod(shape[1:]))
    return {
        "attribution": info.get("attribution", ""),
        "shards": shards,
        "samples_in_shards": sum(s["samples"] for s in stats),
        "images_encoded": sum(s["encoded"] for s in stats),
        "failed": dict(failed),
        "clipped_fraction": sum(s["clipped_values"] for s in stats) / max(1, values),
        "val_prompts": n_val,
        "val_source": "file" if cfg.val_prompts else ("holdout" if cfg.val_holdout else "none"),
        "sample_posterior": cfg.sample_posterior,
    }


DATASET_FILES = (
    META, LATENTS, TEXT_EMB, TEXT_MASK, CAPTIONS, LABELS, VAL_TEXT_EMB, VAL_PROMPTS, PARTS_DIR, MANIFEST
)  # fmt: skip


def check_addition(out: Path, settings: dict[str, Any]) -> None:
    """encode --add: `out` must be a parts dataset encoded with the same settings (shards aside)."""
    meta_path = out / META
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if old.get("layout") != "parts":
        raise TLDError(
            f"--add appends parts to a parts dataset, but {out} holds none (encode it with --layout parts)"
        )
    recorded = old.get("extra", {}).get("encode_settings", {})
    differ = sorted(k for k in settings if k != "shards" and recorded.get(k) != settings[k])
    if differ:
        raise TLDError(f"{out} was encoded with other settings {differ}; --add needs the same ones")


def _replaced(out: Path) -> Path:
    return out.with_name(f".{out.name}.replaced")


def swap_in(staging: Path, out: Path) -> None:
    """Put the complete dataset `staging` in place of `out`: two renames, then the old one is deleted.

    A kill between the renames leaves `out` missing and the old dataset in `.<out>.replaced/`;
    `finish_swap` (run at the start of every encode too) puts it back.
    """
    replaced = _replaced(out)
    shutil.rmtree(replaced, ignore_errors=True)
    os.replace(out, replaced)
    os.replace(staging, out)
    finish_swap(out)


def finish_swap(out: Path) -> None:
    """Complete or undo an interrupted `swap_in`: files of the old folder that are not dataset
    files (the user's own) move into the new one, then the old folder goes."""
    replaced = _replaced(out)
    if not replaced.is_dir():
        return
    if not out.exists():  # killed between the two renames: the old dataset is still whole
        os.replace(replaced, out)
        return
    for entry in replaced.iterdir():
        if entry.name not in DATASET_FILES and entry.name != ".work" and not (out / entry.name).exists():
            os.replace(entry, out / entry.name)
    shutil.rmtree(replaced)


def staging_folder(out: Path) -> Path:
    return out.with_name(f".{out.name}.encoding")


def holds_dataset(out: Path) -> bool:
    return any((out / name).exists() for name in DATASET_FILES)


def clear_output(out: Path) -> None:
    """Before an in-place encode (no complete dataset in `out` to protect): drop leftovers."""
    for name in DATASET_FILES:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ".work", ignore_errors=True)


def prepare_staging(staging: Path, cfg: Any, settings: dict[str, Any]) -> None:
    """Start the staging folder afresh, unless resuming a staged run with the same settings."""
    saved = staging / ".work" / "settings.json"
    if cfg.resume and saved.is_file() and json.loads(saved.read_text()) == settings:
        return
    shutil.rmtree(staging, ignore_errors=True)
