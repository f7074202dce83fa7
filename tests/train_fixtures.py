"""Synthetic latent datasets for the training tests, written with the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tld.data.format import DatasetMeta, quantize_latents, write_meta

PATTERNS = 4  # distinct latent patterns, each tied to its own text embedding and class


def pattern_latents(shape: tuple[int, int, int] = (4, 8, 8)) -> np.ndarray:
    """PATTERNS fixed, clearly different latents with values in about [-1, 1]."""
    c, h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    bases = [xx, yy, -xx, xx * yy * 2]
    out = np.stack([np.stack([bases[(p + ch) % 4] for ch in range(c)]) for p in range(PATTERNS)])
    return out.astype(np.float32)


def write_dataset(
    folder: Path,
    n: int = 64,
    shape: tuple[int, int, int] = (4, 8, 8),
    text_dim: int = 16,
    tokens: int = 0,
    uint8: bool = False,
    labels: bool = False,
    noise: float = 0.05,
    val: int = 4,
) -> Path:
    """A dataset of n noisy copies of the patterns; row i shows pattern i % PATTERNS."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    which = np.arange(n) % PATTERNS
    latents = pattern_latents(shape)[which] + noise * rng.standard_normal((n, *shape)).astype(np.float32)
    codes = np.eye(PATTERNS, text_dim, dtype=np.float32) * 2.0
    emb = codes[which]
    if tokens:
        emb = np.repeat(emb[:, None, :], tokens, axis=1)
        np.save(folder / "text_mask.npy", np.ones((n, tokens), dtype=bool))
    clip = 2.5
    np.save(folder / "latents.npy", quantize_latents(latents, clip) if uint8 else latents.astype(np.float16))
    np.save(folder / "text_emb.npy", emb.astype(np.float16))
    if labels:
        np.save(folder / "labels.npy", which.astype(np.int64))
    if val:
        val_emb = codes[np.arange(val) % PATTERNS]
        if tokens:
            val_emb = np.repeat(val_emb[:, None, :], tokens, axis=1)
        np.save(folder / "val_text_emb.npy", val_emb.astype(np.float16))
        (folder / "val_prompts.txt").write_text("".join(f"pattern {i % PATTERNS}\n" for i in range(val)))
    meta = DatasetMeta(
        count=n,
        latent_shape=list(shape),
        latent_dtype="uint8" if uint8 else "float16",
        latent_clip=clip if uint8 else None,
        latent_scale=1.0,
        text_dim=text_dim,
        text_tokens=tokens,
        source="synthetic test patterns",
    )
    write_meta(folder, meta)
    return folder


def tiny_run_settings(tmp_path: Path, run: str = "run", warmup: int = 5) -> list[str]:
    """--set overrides of a tiny CPU training run on a 32-row pattern dataset under tmp_path/data."""
    data = tmp_path / "data"
    if not data.exists():
        write_dataset(data, n=32)
    return [
        f"data.path={data}",
        "model_preset=tiny",
        f"output_dir={tmp_path / run}",
        "batch_size=8",
        "optim.lr=2e-3",
        f"optim.warmup_steps={warmup}",
        "sample.every=0",
        "tracker=none",
        "progress=false",
    ]


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, so the next run in this process starts fresh."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
