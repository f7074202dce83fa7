"""Shards -> the latent dataset folder: frozen VAE + text encoder, resumable, one shard at a time.

Every shard is encoded into `<out>/.work/<shard>/` (written as `<shard>.tmp/` and renamed when
complete), so a killed run loses at most the shard in flight and a rerun with `resume=True` skips
the finished ones. When every shard is done, the main process merges the work folders into the
memory-mappable arrays of `tld.data.format` (see preprocessing/merge.py). Under `accelerate launch`
process i encodes shards i, i + world_size, ...; the main process merges after a barrier.

`overwrite=True` over an existing dataset builds the new one in a sibling folder `.<out>.encoding/`
and swaps the two folders only when the new one is complete, so a failed or killed run leaves the old
dataset as it was (see `swap_in` in merge.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tld.preprocessing.buckets import check_encode_buckets, image_sizes
from tld.preprocessing.merge import (
    check_addition,
    clear_output,
    finish_swap,
    holds_dataset,
    merge_work,
    prepare_staging,
    staging_folder,
    swap_in,
)
from tld.preprocessing.parts import encode_parts, finish_parts
from tld.preprocessing.shard_encode import ShardResult, shard_arrays, stored_arrays
from tld.preprocessing.shards import iter_shard, list_shards
from tqdm.auto import tqdm

from tld.data.format import CAPTIONS, LABELS, LATENTS, META, TEXT_EMB
from tld.data.parts import manifest_lock
from tld.encoders.images import load_image
from tld.encoders.text import DEFAULT_TEXT_SPEC, TEXT_BACKENDS
from tld.errors import TLDError

WORK = ".work"
SETTINGS = "settings.json"


@dataclass
class EncodeConfig:
    vae: str = "madebyollin/sdxl-vae-fp16-fix"  # hub id or folder
    latent_scale: float | None = None  # None: the folder's recorded scale, else 8.0
    text_encoder: str | dict[str, Any] = "open_clip"  # backend name, folder or spec dict
    text_tokens: bool = False  # store per-token embeddings (N, T, D) + mask instead of pooled (N, D)
    latent_dtype: str = "float16"  # or "uint8" (quantized to [-latent_clip, latent_clip])
    latent_clip: float = 4.0
    image_size: int | None = None  # None: the size of the shards' first image
    flip: bool = False  # also store every image mirrored horizontally
    sample_posterior: bool = False  # sample the VAE posterior instead of taking its mean
    seed: int = 0
    batch_size: int = 32
    text_batch_size: int = 256
    device: str | None = None  # None: cuda when available (or accelerate's device), else cpu
    dtype: str = "float32"  # VAE weights dtype: float32 | float16 | bfloat16 (or fp16, bf16, ...)
    val_prompts: str | None = None  # a text file, one validation prompt per line
    val_holdout: int = 0  # or: hold out the last N images, their captions become validation prompts
    overwrite: bool = False
    resume: bool = False
    keep_work: bool = False
    progress: bool = True
    layout: str = "single"  # "single": merged arrays; "parts": one part per shard group, no merge
    shards_per_part: int = 1  # layout="parts": shards encoded (and held in RAM) together as one part
    add: bool = False  # layout="parts": append the parts of new shards to an existing parts dataset
    # layout="parts": aspect-ratio buckets, pixel [height, width] each; an image goes to the one of
    # nearest aspect ratio, one part per (shard group, bucket) (tld/data/buckets.py). None: one size.
    buckets: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncodeConfig:
        return cls(**d)


def text_encoder_spec(value: str | dict[str, Any]) -> str | dict[str, Any]:
    """A CLI value -> what load_text_encoder takes: a backend name becomes its default spec."""
    if isinstance(value, dict) or Path(str(value)).is_dir():
        return value
    if value == "open_clip":
        return dict(DEFAULT_TEXT_SPEC)
    if value in TEXT_BACKENDS:
        return {"backend": value}
    raise TLDError(f"text encoder must be one of {list(TEXT_BACKENDS)} or a folder, got {value!r}")


class _Dist:
    """Rank, world size and barrier: accelerate's when launched with several processes, else trivial."""

    def __init__(self) -> None:
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            # Without cpu=True accelerate ignores torchrun's WORLD_SIZE on machines without a GPU, and
            # every process would encode (and merge) every shard.
            self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1
        self.is_main = self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self, requested: str | None) -> str:
        if requested:
            return requested
        if self.state is not None:
            return str(self.state.device)
        return "cuda" if torch.cuda.is_available() else "cpu"


def _first_image_size(shards: list[Path]) -> int:
    for shard in shards:
        for sample in iter_shard(shard):
            try:
                width, height = load_image(sample["image"]).size if sample["image"] else (0, 0)
            except TLDError:
                continue
            if width:
                return min(width, height)
    raise TLDError(f"no decodable image in any of the {len(shards)} shard(s)")


def encode_shard(
    shard: Path, dest: Path, vae: Any, text: Any, cfg: EncodeConfig, size: int, bar: Any
) -> ShardResult:
    """Encode one shard into dest/ (written as dest.tmp/, then renamed); returns its counts."""
    z, emb, captions, result = shard_arrays(shard, vae, text, cfg, size, bar)[0]
    _write_shard(dest, z, emb, captions, cfg, result)
    return result


def _write_shard(
    dest: Path, z: np.ndarray, emb: Any, captions: pd.DataFrame, cfg: EncodeConfig, result: ShardResult
) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in stored_arrays(z, emb, cfg, result).items():
        np.save(tmp / name, array)
    captions.to_parquet(tmp / CAPTIONS, index=False)
    (tmp / "stats.json").write_text(json.dumps(asdict(result)) + "\n")
    os.replace(tmp, dest)


def _settings(cfg: EncodeConfig, vae: Any, text: Any, size: Any, shards: list[Path]) -> dict[str, Any]:
    """Everything that changes the arrays: a resumed run must match it exactly."""
    return {
        "vae": vae.spec,
        "text_encoder": text.spec,
        "text_tokens": cfg.text_tokens,
        "latent_dtype": cfg.latent_dtype,
        "latent_clip": cfg.latent_clip if cfg.latent_dtype == "uint8" else None,
        "image_size": size,  # an int, or the buckets' [height, width] sizes
        "flip": cfg.flip,
        "sample_posterior": cfg.sample_posterior,
        "seed": cfg.seed,
        "shards": [p.name for p in shards],
    }


def _check_output(out: Path, cfg: EncodeConfig, vae: Any, settings: dict[str, Any]) -> None:
    """Refuse to mix with a different dataset or an unfinished run, unless told to overwrite/resume."""
    if cfg.overwrite:
        return
    if cfg.add:
        check_addition(out, settings)
    elif (out / META).is_file():
        old = json.loads((out / META).read_text())
        channels = (old.get("latent_shape") or [None])[0]
        if channels is not None and channels != vae.latent_channels:
            raise TLDError(
                f"{out} holds a dataset with {channels}-channel latents but VAE {cfg.vae} makes "
                f"{vae.latent_channels}-channel latents; choose another folder or pass --overwrite"
            )
        raise TLDError(
            f"{out} already holds a dataset of {old.get('count')} samples; pass --overwrite to replace it"
        )
    leftovers = [name for name in (LATENTS, TEXT_EMB, CAPTIONS, LABELS) if (out / name).exists()]
    if leftovers:
        raise TLDError(
            f"{out} holds dataset files {leftovers} without meta.json; pass --overwrite to replace them"
        )
    work = out / WORK
    if (work / SETTINGS).is_file():
        old = json.loads((work / SETTINGS).read_text())
        if old != settings:
            differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise TLDError(
                f"{out} holds an unfinished encode with different settings {differ}; pass --overwrite"
            )
        if not cfg.resume:
            done = sum((work / Path(name).stem).is_dir() for name in settings["shards"])
            raise TLDError(
                f"{out} holds an unfinished encode ({done} of {len(settings['shards'])} shards done); "
                "pass --resume to continue it or --overwrite to start over"
            )


def _load_models(cfg: EncodeConfig, device: str) -> tuple[Any, Any]:
    from tld.common import resolve_dtype
    from tld.encoders import VAE, load_text_encoder

    dtype = resolve_dtype(cfg.dtype)
    vae = VAE.from_pretrained(cfg.vae, latent_scale=cfg.latent_scale, device=device, dtype=dtype)
    text = load_text_encoder(text_encoder_spec(cfg.text_encoder), device=device)
    return vae, text


def _validate(cfg: EncodeConfig) -> None:
    if cfg.latent_dtype not in ("float16", "uint8"):
        raise TLDError(f"latent dtype must be float16 or uint8, got {cfg.latent_dtype!r}")
    if cfg.latent_dtype == "uint8" and not cfg.latent_clip > 0:
        raise TLDError(f"uint8 latents need a clip value > 0, got {cfg.latent_clip}")
    if cfg.val_prompts and cfg.val_holdout:
        raise TLDError("give validation prompts either as a file or as a held-out count, not both")
    if cfg.val_prompts and not Path(cfg.val_prompts).is_file():
        raise TLDError(f"validation prompts file {cfg.val_prompts} does not exist")
    if cfg.layout not in ("single", "parts") or (cfg.add and cfg.layout != "parts"):
        raise TLDError(f"layout must be 'single' or 'parts' (--add needs 'parts'), got {cfg.layout!r}")
    check_encode_buckets(cfg)
    if cfg.batch_size <= 0 or cfg.val_holdout < 0:
        raise TLDError(
            f"batch size must be > 0 and val holdout >= 0, got {cfg.batch_size}, {cfg.val_holdout}"
        )


def encode(shards_dir: str | os.PathLike, out: str | os.PathLike, config: EncodeConfig | None = None) -> Any:
    """Encode every shard of `shards_dir` into the dataset folder `out`; returns the DatasetMeta.

    Rerun with `resume=True` after an interruption: finished shards are kept, the rest encoded.
    """
    cfg = config or EncodeConfig()
    _validate(cfg)
    shards = list_shards(shards_dir)
    out = Path(out)
    dist = _Dist()
    vae, text = _load_models(cfg, dist.device(cfg.device))
    size = image_sizes(cfg, vae) or cfg.image_size or _first_image_size(shards)
    if isinstance(size, int):
        vae.latent_shape(size, size)  # fails early when the size does not suit the VAE
    settings = _settings(cfg, vae, text, size, shards)
    if dist.is_main:
        finish_swap(out)
    _check_output(out, cfg, vae, settings)
    # Over an existing dataset, build beside it and swap at the end: the old one survives any failure.
    target = staging_folder(out) if cfg.overwrite and holds_dataset(out) else out
    dist.barrier()
    work = target / WORK
    if dist.is_main:
        if target != out:
            prepare_staging(target, cfg, settings)
        elif cfg.overwrite:
            clear_output(out)
        work.mkdir(parents=True, exist_ok=True)
        (work / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    dist.barrier()

    if cfg.layout == "parts":
        encode_parts(target, shards, dist, (vae, text), cfg, size, (shard_arrays, stored_arrays))
    else:
        mine = [s for s in shards[dist.rank :: dist.world] if not (work / s.stem).is_dir()]
        with tqdm(desc=f"encode [{dist.rank}]", unit="img", disable=not cfg.progress) as bar:
            for shard in mine:
                bar.set_postfix_str(shard.name)
                encode_shard(shard, work / shard.stem, vae, text, cfg, size, bar)
        dist.barrier()
    meta = None
    if dist.is_main and cfg.layout == "parts":
        with manifest_lock(target):  # concurrent --add runs take turns at the manifest
            meta = finish_parts(target, shards, cfg, (vae, text), size, settings, Path(shards_dir))
    elif dist.is_main:
        work_dirs = [work / s.stem for s in shards]
        meta = merge_work(target, work_dirs, cfg, vae, text, size, source_dir=Path(shards_dir))
    if dist.is_main:
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        if target != out:
            swap_in(target, out)
    dist.barrier()
    return meta
