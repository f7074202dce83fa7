"""The on-disk latent dataset: what the offline stage writes and training reads.

A dataset is a folder holding

    latents.npy         (N, C, H, W) float16, or uint8 quantized in [-clip, clip] (clip in meta.json)
    text_emb.npy        (N, D) pooled or (N, T, D) per-token text embeddings, float16
    text_mask.npy       (N, T) bool, only with per-token embeddings (True = real token)
    captions.parquet    one row per sample: caption, key, url (+ label) (aligned with the arrays)
    labels.npy          optional (N,) int64 class labels, written when every sample has one
    meta.json           DatasetMeta below
    val_text_emb.npy    optional (M, D) or (M, T, D): embeddings of the validation prompts
    val_prompts.txt     optional: the M validation prompts, one per line

All arrays are plain .npy files so they can be memory-mapped (`np.load(..., mmap_mode="r")`): a
dataset of a million latents never has to fit in RAM.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tld.common import write_json_atomic
from tld.errors import TLDError, from_dict

LATENTS = "latents.npy"
TEXT_EMB = "text_emb.npy"
TEXT_MASK = "text_mask.npy"
CAPTIONS = "captions.parquet"
META = "meta.json"
VAL_TEXT_EMB = "val_text_emb.npy"
VAL_PROMPTS = "val_prompts.txt"
LABELS = "labels.npy"  # optional (N,) int class labels, an alternative condition to text

FORMAT_NAME = "tld-latents"
FORMAT_VERSION = 1


@dataclass
class DatasetMeta:
    """Everything a reader needs to interpret the arrays, plus provenance."""

    count: int
    latent_shape: list[int]  # [C, H, W]
    latent_dtype: str = "float16"  # "float16" | "uint8"
    latent_clip: float | None = None  # the quantization range for uint8 latents
    latent_scale: float = 8.0  # latents on disk = VAE latents / latent_scale
    vae: dict[str, Any] = field(default_factory=dict)  # VAE spec (hub id or folder, scale)
    text_encoder: dict[str, Any] = field(default_factory=dict)  # text encoder spec
    text_dim: int = 0
    text_tokens: int = 0  # 0 for pooled embeddings, else T of (N, T, D)
    image_size: list[int] | None = None  # [height, width] in pixels of the encoded images
    flip_doubled: bool = False  # every image also stored horizontally flipped
    source: str = ""
    license: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetMeta:
        if isinstance(d, dict) and d.get("format", FORMAT_NAME) != FORMAT_NAME:
            raise TLDError(f"meta.json format is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        return from_dict(cls, d, "meta.json keys")


BUNDLED = "bundled:"  # meta.json's id of a component inside the installed package's weights/


def _bundled_root() -> Path:
    import tld.weights

    return Path(tld.weights.__file__).resolve().parent


def portable_spec(spec: Any, folder: Path) -> Any:
    """A VAE / text-encoder spec as meta.json stores it: a local folder's `path` relative to the
    dataset folder, or `bundled:<name>/...` inside the package's weights; hub ids as they are."""
    path = spec.get("path") if isinstance(spec, dict) else None
    if not isinstance(path, str) or not Path(path).is_dir():
        return spec
    target = Path(path).resolve()
    if target.is_relative_to(_bundled_root()):
        return {**spec, "path": BUNDLED + target.relative_to(_bundled_root()).as_posix()}
    return {**spec, "path": Path(os.path.relpath(target, folder.resolve())).as_posix()}


def resolved_spec(spec: Any, folder: Path) -> Any:
    """The inverse on reading: a relative `path` against the dataset folder, `bundled:` against the
    package's weights; an absolute path (datasets written before) and hub ids as they are."""
    path = spec.get("path") if isinstance(spec, dict) else None
    if not isinstance(path, str) or Path(path).is_absolute():
        return spec
    if path.startswith(BUNDLED):
        return {**spec, "path": str(_bundled_root() / path[len(BUNDLED) :])}
    local = folder / path
    return {**spec, "path": str(local.resolve())} if local.is_dir() else spec


def write_meta(folder: str | os.PathLike, meta: DatasetMeta) -> None:
    """Write meta.json atomically (temp file + rename); component paths relative (portable_spec),
    so the dataset keeps working when its folder moves."""
    root = Path(folder)
    d = meta.to_dict()
    d["vae"], d["text_encoder"] = portable_spec(d["vae"], root), portable_spec(d["text_encoder"], root)
    write_json_atomic(root / META, d)


def read_meta(folder: str | os.PathLike) -> DatasetMeta:
    path = Path(folder) / META
    if not path.is_file():
        raise TLDError(
            f"{path} not found: {folder} is not a tld latent dataset (run `tld preprocess encode`)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TLDError(f"{path} is not valid JSON: {exc}") from None
    meta = DatasetMeta.from_dict(data)
    root = Path(folder)
    meta.vae, meta.text_encoder = resolved_spec(meta.vae, root), resolved_spec(meta.text_encoder, root)
    return meta


def quantize_latents(latents: np.ndarray, clip: float) -> np.ndarray:
    """Map [-clip, clip] linearly onto 0..255 (values outside are clipped); error <= clip / 255."""
    if clip <= 0:
        raise TLDError(f"latent clip value must be > 0, got {clip}")
    x = np.asarray(latents, dtype=np.float32)
    scaled = (np.clip(x, -clip, clip) + clip) * (255.0 / (2.0 * clip))
    return np.rint(scaled).astype(np.uint8)


def dequantize_latents(q: np.ndarray, clip: float) -> np.ndarray:
    """Inverse of quantize_latents, as float32."""
    return np.asarray(q, dtype=np.float32) * (2.0 * clip / 255.0) - clip


@dataclass
class LatentArrays:
    """An opened dataset: arrays are memory-mapped read-only views."""

    folder: Path
    meta: DatasetMeta
    latents: np.ndarray
    text_emb: np.ndarray
    text_mask: np.ndarray | None
    val_text_emb: np.ndarray | None
    val_prompts: list[str] | None

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def latent(self, idx: int | np.ndarray) -> np.ndarray:
        """Latent(s) at idx as float32, dequantized if stored as uint8."""
        x = self.latents[idx]
        if self.meta.latent_dtype == "uint8":
            return dequantize_latents(x, float(self.meta.latent_clip or 0.0))
        return np.asarray(x, dtype=np.float32)


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise TLDError(f"cannot read {path}: {exc}") from None


def open_latent_dataset(folder: str | os.PathLike, mmap: bool = True) -> LatentArrays:
    """Open and validate a dataset folder; every mismatch is a one-line TLDError."""
    root = Path(folder)
    if not root.is_dir():
        raise TLDError(f"dataset folder {root} does not exist")
    meta = read_meta(root)
    missing = [name for name in (LATENTS, TEXT_EMB) if not (root / name).is_file()]
    if missing:
        raise TLDError(f"dataset {root} is missing {', '.join(missing)}")
    latents = _load_array(root / LATENTS, mmap)
    text_emb = _load_array(root / TEXT_EMB, mmap)
    if latents.ndim != 4:
        raise TLDError(f"{root / LATENTS} must be (N, C, H, W), got shape {tuple(latents.shape)}")
    if list(latents.shape[1:]) != list(meta.latent_shape):
        raise TLDError(
            f"{root / LATENTS} has latent shape {list(latents.shape[1:])} but meta.json says {meta.latent_shape}"
        )
    expected_dtype = np.dtype(meta.latent_dtype)
    if latents.dtype != expected_dtype:
        raise TLDError(f"{root / LATENTS} is {latents.dtype} but meta.json says {meta.latent_dtype}")
    if meta.latent_dtype == "uint8" and not meta.latent_clip:
        raise TLDError("uint8 latents need latent_clip in meta.json")
    if latents.shape[0] != text_emb.shape[0]:
        raise TLDError(
            f"latents.npy has {latents.shape[0]} rows but text_emb.npy has {text_emb.shape[0]}: "
            "the arrays must be aligned"
        )
    if latents.shape[0] != meta.count:
        raise TLDError(f"latents.npy has {latents.shape[0]} rows but meta.json count is {meta.count}")
    if text_emb.ndim not in (2, 3) or (meta.text_dim and text_emb.shape[-1] != meta.text_dim):
        raise TLDError(
            f"text_emb.npy must be (N, {meta.text_dim or 'D'}) or (N, T, D), got {tuple(text_emb.shape)}"
        )
    text_mask = None
    if text_emb.ndim == 3 and (root / TEXT_MASK).is_file():
        text_mask = _load_array(root / TEXT_MASK, mmap)
        if text_mask.shape != text_emb.shape[:2]:
            raise TLDError(
                f"text_mask.npy shape {text_mask.shape} does not match text_emb {text_emb.shape[:2]}"
            )
    val_emb = _load_array(root / VAL_TEXT_EMB, mmap=False) if (root / VAL_TEXT_EMB).is_file() else None
    val_prompts = None
    if (root / VAL_PROMPTS).is_file():
        val_prompts = [ln for ln in (root / VAL_PROMPTS).read_text().splitlines() if ln.strip()]
    if val_emb is not None and val_prompts is not None and len(val_prompts) != val_emb.shape[0]:
        raise TLDError(
            f"{VAL_PROMPTS} has {len(val_prompts)} prompts but {VAL_TEXT_EMB} has {val_emb.shape[0]} rows"
        )
    return LatentArrays(root, meta, latents, text_emb, text_mask, val_emb, val_prompts)


def first_nonfinite_row(array: np.ndarray, chunk: int = 4096) -> int | None:
    """Index of the first row holding NaN/Inf, scanning in chunks so a memmap is never fully loaded."""
    for start in range(0, array.shape[0], chunk):
        block = np.asarray(array[start : start + chunk], dtype=np.float32)
        bad = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None
