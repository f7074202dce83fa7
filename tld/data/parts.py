"""A latent dataset in parts: each part is its own set of arrays plus a small index, and the dataset
is a manifest (parts.json) listing them. Nothing is ever merged or copied.

    <dataset>/meta.json              DatasetMeta with layout="parts" (count = rows over all parts)
    <dataset>/parts.json             the manifest: {"format": "tld-parts", "parts": [PartIndex, ...]}
    <dataset>/parts/<name>/          latents.npy, text_emb.npy [, text_mask.npy, labels.npy],
                                     captions.parquet, part.json (this part's PartIndex)

A part's index records its row count, every array's shape, dtype and a checksum of its .npy header,
and the result of the NaN/Inf check made once when the part was written. Readers trust the manifest:
opening a dataset reads no array data, and each part's memmap is opened (and its header checked)
the first time a row of it is read. `keep` lists the row ranges of a part that belong to the
training set (validation hold-outs are left out without rewriting anything).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tld.common import write_json_atomic
from tld.errors import TLDError, from_dict

PARTS_DIR = "parts"
PART_INDEX = "part.json"
MANIFEST = "parts.json"
MANIFEST_FORMAT = "tld-parts"


@dataclass
class PartIndex:
    """The small index of one part (also its entry in the manifest)."""

    name: str
    rows: int
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> shape, dtype, header
    nonfinite: dict[str, Any] | None = None  # {"file": ..., "row": ...} of the first NaN/Inf, else None
    label_max: int | None = None  # the largest class label, when the part has labels.npy
    keep: list[list[int]] | None = None  # [[start, stop), ...] rows used for training; None = all
    shards: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def kept_ranges(self) -> list[tuple[int, int]]:
        return [(0, self.rows)] if self.keep is None else [(int(a), int(b)) for a, b in self.keep]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartIndex:
        return from_dict(cls, d, "part index keys")


def _read_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def header_checksum(path: Path) -> str:
    """sha256 (16 hex digits) of a .npy file's magic + header: its shape, dtype and order."""
    with open(path, "rb") as f:
        _read_header(f)
        size = f.tell()
        f.seek(0)
        return hashlib.sha256(f.read(size)).hexdigest()[:16]


def map_checked(path: Path, checksum: str) -> np.ndarray | None:
    """The .npy at path memory-mapped (random access), or None when its header checksum differs."""
    with open(path, "rb") as f:
        shape, fortran, dtype = _read_header(f)
        offset = f.tell()
        f.seek(0)
        if hashlib.sha256(f.read(offset)).hexdigest()[:16] != checksum:
            return None
    if not int(np.prod(shape)):
        return np.empty(shape, dtype=dtype)
    order = "F" if fortran else "C"
    mapped = np.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)
    return random_access(mapped).view(np.ndarray)  # a plain view: cheaper to index than a memmap


def first_nonfinite(array: np.ndarray) -> int | None:
    """Row of the first NaN/Inf of an in-memory array (None: all finite; integer arrays are finite)."""
    if array.dtype.kind != "f" or len(array) == 0:
        return None
    bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def random_access(array: np.ndarray) -> np.ndarray:
    """Tell the kernel a memmap is read at random rows: no read-ahead around each row touched.

    Read-ahead makes each 4 KiB row of a shuffled epoch fault in up to hundreds of KiB (measured in
    bench/scale.py: 83 ms per 25 random rows of a part without this, docs/scale.md)."""
    raw = getattr(array, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        raw.madvise(mmap.MADV_RANDOM)
    return array


def part_name(shard_names: list[str]) -> str:
    """A stable name for the part of a group of shards: first stem + a hash of the whole group."""
    digest = hashlib.sha1("\n".join(shard_names).encode()).hexdigest()[:8]
    return f"{Path(shard_names[0]).stem}-{digest}"


def write_part(dest: Path, arrays: dict[str, np.ndarray], captions: Any, index: PartIndex) -> PartIndex:
    """Write the arrays + captions + part.json into dest (through dest.tmp/, renamed when complete)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file, array in arrays.items():
        np.save(tmp / file, array)
        index.arrays[file] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "header": header_checksum(tmp / file),
        }
        bad = first_nonfinite(array)
        if bad is not None and index.nonfinite is None:
            index.nonfinite = {"file": file, "row": bad}
    if "labels.npy" in arrays and len(arrays["labels.npy"]):
        index.label_max = int(arrays["labels.npy"].max())
    if captions is not None:
        captions.to_parquet(tmp / "captions.parquet", index=False)
    write_json_atomic(tmp / PART_INDEX, asdict(index))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return index


def read_part_index(folder: Path) -> PartIndex:
    path = folder / PART_INDEX
    try:
        return PartIndex.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise TLDError(f"cannot read part index {path}: {exc}") from None


@contextmanager
def manifest_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the dataset's manifest while reading and rewriting it: two `encode
    --add` runs that finish at the same time then take turns, and the second one's read sees the
    first one's parts instead of overwriting them. A POSIX advisory lock (flock) on the dataset folder
    itself (no lock file is left behind): it serialises processes on one machine or on a shared file
    system that supports flock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (concurrent --add is then the user's to avoid)
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def write_manifest(root: Path, parts: list[PartIndex]) -> None:
    write_json_atomic(root / MANIFEST, {"format": MANIFEST_FORMAT, "parts": [asdict(p) for p in parts]})


def read_manifest(root: Path) -> list[PartIndex]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TLDError(f"cannot read the parts manifest {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise TLDError(f"{path} is not a {MANIFEST_FORMAT} manifest")
    return [PartIndex.from_dict(p) for p in data.get("parts", [])]


class PartedArray:
    """Row-wise concatenation of one .npy per part, memory-mapped lazily; O(parts) memory.

    Global row r is found arithmetically: `offsets` holds the first global row of each kept segment
    (a part's kept row range), so no per-row table is ever built.
    """

    def __init__(
        self, root: Path, parts: list[PartIndex], file: str, opener: Any = None, row_shape: Any = None
    ):
        self.root, self.parts, self.file = root, parts, file
        self.opener = opener  # callable(part folder relative path) -> local Path, for remote datasets
        first = parts[0].arrays[file]
        self.dtype = np.dtype(first["dtype"])
        # Parts of an aspect-ratio bucketed dataset differ in row shape: `shape` reports row_shape
        # (the first bucket's) and `take` reads rows of one shape at a time.
        self._part_shapes = [tuple(int(s) for s in p.arrays[file]["shape"][1:]) for p in parts]
        self._row_shape = tuple(int(s) for s in row_shape) if row_shape else self._part_shapes[0]
        segments = [(i, a, b) for i, p in enumerate(parts) for a, b in p.kept_ranges() if b > a]
        self.seg_part = np.array([s[0] for s in segments], dtype=np.int64)
        self.seg_start = np.array([s[1] for s in segments], dtype=np.int64)
        lengths = np.array([s[2] - s[1] for s in segments], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.offsets[-1]), *self._row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen their own maps
        return {**self.__dict__, "_maps": {}}

    def part_folder(self, i: int) -> Path:
        rel = f"{PARTS_DIR}/{self.parts[i].name}"
        return Path(self.opener(rel)) if self.opener else self.root / rel

    def _map(self, i: int) -> np.ndarray:
        if i not in self._maps:
            path = self.part_folder(i) / self.file
            want = self.parts[i].arrays[self.file]
            if not path.is_file():
                raise TLDError(f"part {self.parts[i].name} of {self.root} is missing {self.file}")
            mapped = map_checked(path, want["header"])
            if mapped is None:
                raise TLDError(f"{path} does not match its part index (header checksum); re-encode the part")
            self._maps[i] = mapped
        return self._maps[i]

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part number, row within the part) of global rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        return self.seg_part[seg], self.seg_start[seg] + rows - self.offsets[seg]

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        part, local = self.locate(rows)
        shapes = {self._part_shapes[int(p)] for p in np.unique(part)}
        if len(shapes) > 1:
            raise TLDError(f"rows of {self.file} with different shapes {sorted(shapes)} cannot form one batch")
        out = np.empty((len(rows), *(shapes.pop() if shapes else self._row_shape)), dtype=self.dtype)
        for p in np.unique(part):
            sel = part == p
            out[sel] = self._map(int(p))[local[sel]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([int(key) % max(1, len(self))]))[0]
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(len(self))))
        key = np.asarray(key)
        if key.dtype == bool:
            key = np.flatnonzero(key)
        return self.take(np.where(key < 0, key + len(self), key))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self.take(np.arange(len(self)))
        return full if dtype is None else full.astype(dtype)
