"""What `--resume` loads and what it lets change.

The newest checkpoint that loads is taken (a truncated or garbled newer one is skipped, and said so).
A resumed run is exact only with the settings the checkpoint was written with: a change to the batch
size, the data, the seed, the model or the optimizer is refused, naming the settings, unless the
user passes `--resume-with-changes`. Settings that do not touch the trajectory (logging, samples,
checkpoint cadence, workers, where the run writes) and the step count may always change. The run's
config.yaml keeps the settings the run started with; a resume with other settings writes its own
config beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from tld.errors import TLDError
from tld.training import checkpoint as ckpt
from tld.training.config import TrainConfig
from tld.training.ema import EMA

# Dotted keys (or key prefixes ending in ".") a resume may change without losing exactness.
FREE = (
    "steps",
    "output_dir",
    "progress",
    "log_every",
    "tracker",
    "checkpoint_every",
    "keep_last",
    "compile",
    "grad_checkpointing",
    "cpu_kernels",
    "data.num_workers",
    "data.check_finite",
    "sample.",
    "fid.",
)
CONFIG = "config.yaml"


def load_resume(config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint to resume from (load_checkpoint's dict plus "folder" and "skipped"), or None."""
    if not config.resume:
        return None
    if config.resume not in ("latest", "auto"):
        folder = Path(str(config.resume))
        return {**ckpt.load_checkpoint(folder), "folder": folder, "skipped": []}
    root = ckpt.run_checkpoints(config.output_dir)
    found = ckpt.load_newest(root)
    if found is None:
        if config.resume == "auto":
            return None
        raise TLDError(f"--resume: no complete checkpoint under {root}")
    folder, saved, skipped = found
    return {**saved, "folder": folder, "skipped": skipped}


def restore_extra_emas(
    extra_emas: dict[float, EMA], saved: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Restore each extra EMA (`ema.extra_decays`); one the checkpoint lacks (added with
    --resume-with-changes) starts from the checkpoint's main EMA, the nearest average it has."""
    missing = [decay for decay in extra_emas if decay not in saved["extra_ema"]]
    for decay, average in extra_emas.items():
        average.load_state_dict(saved["extra_ema"].get(decay, saved["ema"]))
    if missing:
        names = ", ".join(str(decay) for decay in missing)
        say(f"--resume: the checkpoint has no EMA of decay {names}; it starts from the main EMA")


def _leaves(defaults: Any, data: Any, prefix: str = "") -> dict[str, Any]:
    """A config's settings by dotted key, from `data` (a to_dict()) where it has them, else from
    `defaults` (fields newer than a checkpoint); dict-valued settings (model, ...) one key per entry."""
    data = data if isinstance(data, dict) else {}
    out: dict[str, Any] = {}
    for f in fields(defaults):
        default, key = getattr(defaults, f.name), prefix + f.name
        if is_dataclass(default):
            out.update(_leaves(default, data.get(f.name), key + "."))
            continue
        value = data.get(f.name, default)
        out.update(_entries(value, key) if isinstance(value, dict) else {key: value})
    return out


def _entries(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(
            _entries(value, f"{prefix}.{key}") if isinstance(value, dict) else {f"{prefix}.{key}": value}
        )
    return out


def _same(key: str, old: Any, new: Any) -> bool:
    if key == "data.path" and old and new:
        return Path(old).resolve() == Path(new).resolve()
    return old == new


def config_changes(saved: dict[str, Any] | None, config: TrainConfig) -> tuple[list[str], list[str]]:
    """(free, breaking): the settings that differ from the checkpoint's, as "key old -> new"."""
    if not saved:
        return [], []
    old = _leaves(TrainConfig(), saved)
    new = _leaves(TrainConfig(), config.to_dict())
    free, breaking = [], []
    for key in sorted(set(old) | set(new)):
        if key in ("resume", "resume_with_changes"):  # differ on every resume
            continue
        if not _same(key, old.get(key), new.get(key)):
            line = f"{key} {old.get(key)!r} -> {new.get(key)!r}"
            is_free = any(key == f or (f.endswith(".") and key.startswith(f)) for f in FREE)
            (free if is_free else breaking).append(line)
    return free, breaking


def check_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Refuse settings that break exact resume unless `resume_with_changes`; returns every change."""
    free, breaking = config_changes(saved["state"].get("config"), config)
    if breaking and not config.resume_with_changes:
        original = Path(config.output_dir) / CONFIG
        where = f" (the run's settings are in {original})" if original.is_file() else ""
        raise TLDError(
            f"cannot resume {saved['folder']} exactly, settings differ from those it was trained with"
            f"{where}: {'; '.join(breaking)}; repeat them, or pass --resume-with-changes to go on with the new ones"
        )
    return breaking + free


def report(saved: dict[str, Any], changes: list[str], say: Callable[[str], None]) -> None:
    """Print where the run resumed from, which newer checkpoints were skipped and why, what changed.

    A skipped checkpoint is renamed to step_<N>.broken: out of the way of later resumes, and of
    keep_last, which would otherwise count it and prune the good checkpoint this run resumed from.
    """
    for folder, why in saved["skipped"]:
        aside = folder.with_name(folder.name + ".broken")
        moved = not aside.exists() and _rename(folder, aside)
        say(f"--resume: skipped {folder.name}{f' (renamed {aside.name})' if moved else ''}: {why}")
    step = saved["state"]["step"]
    tail = f"; changed: {', '.join(changes)}" if changes else ""
    say(f"resumed from step {step} ({saved['folder']}){tail}")


def record_config(
    out_dir: Path, config: TrainConfig, saved: dict[str, Any] | None, changes: list[str]
) -> Path | None:
    """Write the run's config.yaml; a resume keeps an existing one, and one with other settings
    writes its own beside it (config.resumed_step_<N>.yaml). Returns the file written, if any."""
    path = out_dir / CONFIG
    if saved is not None and path.is_file():
        if not changes:
            return None
        path = out_dir / f"config.resumed_step_{saved['state']['step']}.yaml"
    config.save(path)
    return path


def _rename(src: Path, dst: Path) -> bool:
    try:
        os.replace(src, dst)
    except OSError:
        return False
    return True
