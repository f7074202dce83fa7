"""One shard through the frozen VAE and text encoder: its latents, caption embeddings and captions.

Every image is sized to one of `sizes` (pixel height x width): with one size, centre-cropped to it
as always; with several (aspect-ratio buckets, tld/data/buckets.py), to the size whose aspect ratio
is nearest its own, resized to cover it and centre-cropped by the least amount. The arrays come
back per size, so a part of the dataset holds one latent shape.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tld.preprocessing.shards import iter_shard

from tld.data.buckets import nearest_bucket
from tld.data.format import LATENTS, TEXT_EMB, TEXT_MASK, quantize_latents
from tld.encoders.images import center_crop_resize, decode_sample_image, pil_to_tensor
from tld.encoders.text_base import TextEmbeddings

Arrays = tuple[np.ndarray, TextEmbeddings, pd.DataFrame, "ShardResult"]


@dataclass
class ShardResult:
    samples: int = 0
    encoded: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    clipped_values: int = 0


class _Bucket:
    """The images of one size while a shard is read: the pending batch, encoded latents, caption rows."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.batch: list[Any] = []
        self.originals: list[torch.Tensor] = []
        self.mirrored: list[torch.Tensor] = []
        self.rows: list[dict[str, Any]] = []

    def flush(self, vae: Any, cfg: Any, generator: torch.Generator, bar: Any) -> None:
        if not self.batch:
            return
        x = pil_to_tensor(self.batch)
        sample = cfg.sample_posterior
        self.originals.append(vae.encode(x, batch_size=None, sample=sample, generator=generator))
        if cfg.flip:
            # A mirrored latent is not the latent of the mirrored image, so the flip is re-encoded.
            self.mirrored.append(vae.encode(x.flip(-1), batch_size=None, sample=sample, generator=generator))
        bar.update(len(self.batch))
        self.batch.clear()


def shard_arrays(
    shard: Path, vae: Any, text: Any, cfg: Any, size: int | list[list[int]], bar: Any
) -> list[Arrays]:
    """Per size (one for an int `size`): latents (originals, then mirrored copies), caption
    embeddings, captions and counts. The shard's sample count and failures go with the first size."""
    sizes = [(size, size)] if isinstance(size, int) else [(int(h), int(w)) for h, w in size]
    buckets = [_Bucket(s) for s in sizes]
    failed: Counter[str] = Counter()
    # Seeded per shard so a resumed run samples the posterior exactly as an uninterrupted one.
    generator = torch.Generator(device=vae.device).manual_seed(cfg.seed * 100_003 + _shard_number(shard))
    samples = 0
    for sample in iter_shard(shard):
        samples += 1
        if sample.get("caption_error"):  # an empty or mangled caption would teach the wrong text
            failed[sample["caption_error"]] += 1
            continue
        image = decode_sample_image(sample["image"], None, failed)
        if image is None:
            continue
        bucket = buckets[nearest_bucket(image.width, image.height, sizes) if len(sizes) > 1 else 0]
        h, w = bucket.size
        bucket.batch.append(image if image.size == (w, h) else center_crop_resize(image, (h, w)))
        meta = sample["json"] if isinstance(sample["json"], dict) else {}
        url = str(meta.get("url") or "")
        bucket.rows.append(
            {"caption": sample["caption"], "key": sample["key"], "url": url, "label": _label(meta)}
        )
        if len(bucket.batch) >= cfg.batch_size:
            bucket.flush(vae, cfg, generator, bar)
    out = []
    for i, bucket in enumerate(buckets):
        bucket.flush(vae, cfg, generator, bar)
        first = i == 0
        result = ShardResult(samples if first else 0, len(bucket.rows), dict(failed) if first else {})
        out.append((*_bucket_arrays(bucket, shard, vae, text, cfg), result))
    return out


def _bucket_arrays(
    bucket: _Bucket, shard: Path, vae: Any, text: Any, cfg: Any
) -> tuple[np.ndarray, TextEmbeddings, pd.DataFrame]:
    captions = pd.DataFrame(bucket.rows, columns=["caption", "key", "url", "label"]).astype(
        {"label": "int64"}
    )
    captions["shard"] = shard.name
    captions["flipped"] = False
    empty = torch.zeros((0, *vae.latent_shape(*bucket.size)))
    z = torch.cat(bucket.originals + bucket.mirrored) if bucket.originals else empty
    emb = _encode_texts(text, captions["caption"].tolist(), cfg)
    if cfg.flip:
        captions = pd.concat([captions, captions.assign(flipped=True)], ignore_index=True)
    return z.numpy(), emb, captions


def stored_arrays(z: np.ndarray, emb: Any, cfg: Any, result: ShardResult) -> dict[str, np.ndarray]:
    """The arrays as stored on disk (quantized or float16; embeddings repeated for the flips)."""
    if cfg.latent_dtype == "uint8":
        result.clipped_values = int((np.abs(z) > cfg.latent_clip).sum())
        stored = quantize_latents(z, cfg.latent_clip)
    else:
        stored = z.astype(np.float16)
    repeat = 2 if cfg.flip else 1
    text_emb = emb.tokens if cfg.text_tokens else emb.pooled
    arrays = {LATENTS: stored, TEXT_EMB: np.concatenate([text_emb.numpy().astype(np.float16)] * repeat)}
    if cfg.text_tokens:
        arrays[TEXT_MASK] = np.concatenate([emb.mask.numpy().astype(bool)] * repeat)
    return arrays


def _label(meta: dict[str, Any]) -> int:
    """The sample's integer class (`label` in its json, as class-labelled sources write it), else -1."""
    label = meta.get("label")
    return label if isinstance(label, int) and not isinstance(label, bool) and label >= 0 else -1


def _encode_texts(text: Any, captions: list[str], cfg: Any) -> TextEmbeddings:
    """Embeddings of the captions, each distinct caption encoded once (class names repeat thousands of times)."""
    unique = list(dict.fromkeys(captions))
    emb = text.encode(unique, batch_size=cfg.text_batch_size, tokens=cfg.text_tokens)
    if len(unique) == len(captions):
        return emb
    position = {caption: i for i, caption in enumerate(unique)}
    index = torch.tensor([position[c] for c in captions], dtype=torch.long)
    pick = lambda t: None if t is None else t[index]  # noqa: E731
    return TextEmbeddings(emb.pooled[index], pick(emb.tokens), pick(emb.mask))


def _shard_number(shard: Path) -> int:
    digits = "".join(ch for ch in shard.stem if ch.isdigit())
    return int(digits) if digits else 0
