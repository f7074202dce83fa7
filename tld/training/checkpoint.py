"""Training checkpoints: `step_<N>/` folders written atomically, newest-complete lookup, RNG state.

A checkpoint is written into `.tmp_step_<N>/` and renamed into place only after every file is on
disk, and `state.json` is written last inside it, so a crash at any point leaves either no
`step_<N>/` at all or a complete one: `latest_checkpoint` never picks a half-written folder.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tld.common import first_line
from tld.errors import TLDError

MODEL = "model.safetensors"
EMA = "ema.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
RNG = "rng.pt"
SCALER = "scaler.pt"  # fp16 only: the GradScaler's scale and growth tracker
STATE = "state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_EXTRA_EMA = re.compile(r"^ema_(.+)\.safetensors$")
CHECKPOINTS = "checkpoints"  # the folder of a run's output_dir that holds its step_<N>/ checkpoints


def capture_rng() -> dict[str, Any]:
    """The global RNG states of python, numpy and torch (CPU and every CUDA device)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; checkpoints must not depend on that layout.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def extra_ema_name(decay: float) -> str:
    """The file of an extra EMA (`ema.extra_decays`) in a checkpoint, e.g. ema_0.9999.safetensors."""
    return f"ema_{float(decay)!r}.safetensors"


def extra_ema_files(folder: str | os.PathLike) -> dict[float, Path]:
    """A checkpoint's extra EMA weight files by decay (none for a run without `ema.extra_decays`)."""
    found = {}
    for child in Path(folder).glob("ema_*.safetensors"):
        match = _EXTRA_EMA.match(child.name)
        try:
            decay = float(match.group(1)) if match else None
        except ValueError:
            continue
        if decay is not None and child.name == extra_ema_name(decay):
            found[decay] = child
    return dict(sorted(found.items()))


def _write_weights(
    folder: Path, model_state: dict, ema_state: dict | None, extra_ema_states: dict[float, dict] | None
) -> None:
    save_file(_contiguous(model_state), str(folder / MODEL))
    if ema_state is not None:
        save_file(_contiguous(ema_state), str(folder / EMA))
    for decay, state in (extra_ema_states or {}).items():
        save_file(_contiguous(state), str(folder / extra_ema_name(decay)))


def _write_training_state(
    folder: Path, optimizer_state: dict, scheduler_state: dict, rng: dict, scaler_state: dict | None = None
) -> None:
    torch.save(optimizer_state, folder / OPTIMIZER)
    torch.save(scheduler_state, folder / SCHEDULER)
    torch.save(rng, folder / RNG)
    if scaler_state is not None:
        torch.save(scaler_state, folder / SCALER)


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None,
    optimizer_state: dict,
    scheduler_state: dict,
    rng: dict,
    state: dict[str, Any],
    keep_last: int = 3,
    scaler_state: dict | None = None,
    extra_ema_states: dict[float, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write `root/step_<step>/` atomically and prune all but the newest `keep_last` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_step_{step}"
    final = root / f"step_{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_weights(tmp, model_state, ema_state, extra_ema_states)
    _write_training_state(tmp, optimizer_state, scheduler_state, rng, scaler_state)
    (tmp / STATE).write_text(json.dumps({"step": step, **state}, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune_checkpoints(root, keep_last)
    return final


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under root as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def run_checkpoints(output_dir: str | os.PathLike) -> Path:
    """The checkpoint folder of a training run's output_dir."""
    return Path(output_dir) / CHECKPOINTS


def latest_step(root: str | os.PathLike) -> int:
    """The step of the newest complete checkpoint under root; 0 when there is none."""
    found = list_checkpoints(root)
    return found[-1][0] if found else 0


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: str | os.PathLike, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in Path(root).glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / STATE
    if not path.is_file():
        raise TLDError(f"{folder} is not a complete training checkpoint (no {STATE})")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise TLDError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise TLDError(f"{path} is not a checkpoint state (a JSON object with an integer 'step')")
    return state


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint; a truncated or garbled file is a one-line TLDError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise TLDError(f"cannot load {path}: {first_line(exc)}") from None


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        # The unpickler's first line advises weights_only=False: never for a file that fails to load.
        reason = (
            "not a file written by torch.save" if isinstance(exc, pickle.UnpicklingError) else first_line(exc)
        )
        raise TLDError(f"cannot load {path}: {reason}") from None


def load_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """Everything a checkpoint holds; tensors load without pickle-executed code. A missing,
    truncated or garbled file is a one-line TLDError naming it."""
    folder = Path(folder)
    state = read_state(folder)
    out: dict[str, Any] = {"state": state, "model": load_weights(folder / MODEL)}
    out["ema"] = load_weights(folder / EMA) if (folder / EMA).is_file() else None
    out["extra_ema"] = {decay: load_weights(path) for decay, path in extra_ema_files(folder).items()}
    for key, name in (("optimizer", OPTIMIZER), ("scheduler", SCHEDULER), ("rng", RNG)):
        out[key] = _load_torch(folder / name)
    scaler = folder / SCALER
    out["scaler"] = _load_torch(scaler) if scaler.is_file() else None
    return out


def load_newest(root: str | os.PathLike) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]] | None:
    """The newest checkpoint under root that loads, as (folder, contents, skipped); None if there is
    none. `skipped` holds (folder, why) of each newer checkpoint that did not load."""
    skipped: list[tuple[Path, str]] = []
    for _, folder in reversed(list_checkpoints(root)):
        try:
            return folder, load_checkpoint(folder), skipped
        except TLDError as exc:
            skipped.append((folder, str(exc)))
    if skipped:
        raise TLDError(f"no checkpoint under {root} loads; the newest, {skipped[0][0].name}: {skipped[0][1]}")
    return None
