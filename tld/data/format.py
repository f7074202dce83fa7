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

With layout="parts" (tld/data/parts.py) the per-row files live in parts/<name>/ folders listed by
parts.json, and the arrays opened here are `PartedArray`s: one lazily mapped .npy per part.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tld.common import write_json_atomic
from tld.data.buckets import check_bucket_parts
from tld.data.parts import PartedArray, PartIndex, random_access, read_manifest
from tld.data.storage import RemoteDataset, is_remote
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
    layout: str = "single"  # "single": the arrays above; "parts": parts.json lists parts (tld/data/parts.py)
    # layout="parts" only: aspect-ratio buckets, [{"image_size": [H, W], "latent_shape": [C, h, w],
    # "rows": n}, ...] (tld/data/buckets.py); the first is latent_shape. None: every row is latent_shape.
    buckets: list[dict[str, Any]] | None = None
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["buckets"] is None:  # datasets of one shape stay byte-for-byte what earlier versions wrote
            del d["buckets"]
        return d

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
    latents: Any  # np.ndarray (memmap) or PartedArray
    text_emb: Any
    text_mask: Any | None
    val_text_emb: np.ndarray | None
    val_prompts: list[str] | None
    parts: list[PartIndex] | None = None  # layout="parts": the manifest

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
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        return random_access(array) if mmap else array
    except (ValueError, OSError) as exc:
        raise TLDError(f"cannot read {path}: {exc}") from None


def open_latent_dataset(folder: str | os.PathLike, mmap: bool = True) -> LatentArrays:
    """Open and validate a dataset folder or URL (tld/data/storage.py); every mismatch is a one-line TLDError."""
    if is_remote(folder):
        remote = RemoteDataset(str(folder))
        root = remote.fetch_small()
        meta = read_meta(root)
        if meta.layout == "parts":
            return _open_parts(root, meta, remote.part)
        folder = remote.single()
    root = Path(folder)
    if not root.is_dir():
        raise TLDError(f"dataset folder {root} does not exist")
    meta = read_meta(root)
    if meta.layout == "parts":
        return _open_parts(root, meta)
    if meta.buckets is not None:
        raise TLDError(f"meta.json of {root} lists buckets, which need layout 'parts'")
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
    val_emb, val_prompts = _validation_files(root)
    return LatentArrays(root, meta, latents, text_emb, text_mask, val_emb, val_prompts)


def _validation_files(root: Path) -> tuple[np.ndarray | None, list[str] | None]:
    val_emb = _load_array(root / VAL_TEXT_EMB, mmap=False) if (root / VAL_TEXT_EMB).is_file() else None
    val_prompts = None
    if (root / VAL_PROMPTS).is_file():
        val_prompts = [ln for ln in (root / VAL_PROMPTS).read_text().splitlines() if ln.strip()]
    if val_emb is not None and val_prompts is not None and len(val_prompts) != val_emb.shape[0]:
        raise TLDError(
            f"{VAL_PROMPTS} has {len(val_prompts)} prompts but {VAL_TEXT_EMB} has {val_emb.shape[0]} rows"
        )
    return val_emb, val_prompts


def _check_part(root: Path, meta: DatasetMeta, part: PartIndex) -> None:
    """A part's index against meta.json: the arrays it must have, their rows, shapes and dtypes."""
    need = [LATENTS, TEXT_EMB] + ([TEXT_MASK] if meta.text_tokens else [])
    missing = [f for f in need if f not in part.arrays]
    if missing:
        raise TLDError(f"part {part.name} of {root} lists no {', '.join(missing)}")
    lat, emb = part.arrays[LATENTS], part.arrays[TEXT_EMB]
    shapes = [list(b.get("latent_shape") or []) for b in meta.buckets or [{"latent_shape": meta.latent_shape}]]
    if lat["shape"][1:] not in shapes or lat["dtype"] != meta.latent_dtype:
        said = f"{meta.latent_dtype} {shapes[0] if len(shapes) == 1 else shapes}"
        raise TLDError(
            f"part {part.name} of {root} holds {lat['dtype']} latents of shape {lat['shape'][1:]} but "
            f"meta.json says {said}"
        )
    if any(a["shape"][0] != part.rows for a in part.arrays.values()) or lat["shape"][0] != emb["shape"][0]:
        raise TLDError(f"part {part.name} of {root}: its arrays do not all have {part.rows} rows")
    if part.nonfinite is not None:
        bad = part.nonfinite
        raise TLDError(
            f"{root}/parts/{part.name}/{bad['file']} has NaN/Inf values, first at row {bad['row']}"
        )


def _open_parts(root: Path, meta: DatasetMeta, opener: Any = None) -> LatentArrays:
    """A parts dataset from its manifest alone: no array data is read here (O(parts), not O(rows))."""
    parts = [p for p in read_manifest(root) if any(b > a for a, b in p.kept_ranges())]
    if meta.latent_dtype == "uint8" and not meta.latent_clip:
        raise TLDError("uint8 latents need latent_clip in meta.json")
    for part in parts:
        _check_part(root, meta, part)
    if meta.buckets is not None:
        check_bucket_parts(root, meta, parts)
    total = sum(b - a for p in parts for a, b in p.kept_ranges())
    if total != meta.count:
        raise TLDError(f"the parts of {root} hold {total} training rows but meta.json count is {meta.count}")
    if not parts:
        empty = np.zeros((0, *meta.latent_shape), dtype=meta.latent_dtype)
        return LatentArrays(root, meta, empty, np.zeros((0, meta.text_dim), np.float16), None, None, None, [])
    latents = PartedArray(root, parts, LATENTS, opener, row_shape=meta.latent_shape)
    text_emb = PartedArray(root, parts, TEXT_EMB, opener)
    text_mask = PartedArray(root, parts, TEXT_MASK, opener) if TEXT_MASK in parts[0].arrays else None
    val_emb, val_prompts = _validation_files(root)
    return LatentArrays(root, meta, latents, text_emb, text_mask, val_emb, val_prompts, parts)


def first_nonfinite_row(array: np.ndarray, chunk: int = 4096) -> int | None:
    """Index of the first row holding NaN/Inf, scanning in chunks so a memmap is never fully loaded."""
    for start in range(0, array.shape[0], chunk):
        block = np.asarray(array[start : start + chunk], dtype=np.float32)
        bad = ~np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def read_captions(folder: str | os.PathLike, columns: list[str] | None = None) -> Any:
    """captions.parquet as one DataFrame aligned with the rows (a parts dataset: its kept rows, in order)."""
    import pandas as pd

    root = Path(folder)
    meta = read_meta(root)
    if meta.layout != "parts":
        path = root / CAPTIONS
        if not path.is_file():
            raise TLDError(f"{path} does not exist")
        return pd.read_parquet(path, columns=columns)
    frames = []
    for part in read_manifest(root):
        path = root / "parts" / part.name / CAPTIONS
        if not path.is_file():
            raise TLDError(f"{path} does not exist")
        frame = pd.read_parquet(path, columns=columns)
        frames += [frame.iloc[a:b] for a, b in part.kept_ranges()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
