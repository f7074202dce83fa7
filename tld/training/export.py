"""Export a training checkpoint as a model folder that `TLDPipeline.from_pretrained` loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tld.errors import TLDError
from tld.generation.settings import default_schedule
from tld.model.files import CONFIG_NAME, read_config_json, update_config_json
from tld.training import checkpoint as ckpt
from tld.training.config import EMAConfig


def _is_local_dir(spec: Any) -> bool:
    path = spec.get("path") if isinstance(spec, dict) else spec
    return bool(path) and Path(str(path)).is_dir()


def _export_vae(spec: dict[str, Any], out: Path, copy_local: bool) -> Any:
    if not spec:
        return None
    if copy_local and _is_local_dir(spec):
        from tld.encoders.vae import VAE

        VAE.from_pretrained(spec["path"], latent_scale=float(spec.get("latent_scale", 8.0))).save_pretrained(
            out / "vae"
        )
        return "vae"
    return spec


def _export_text_encoder(spec: dict[str, Any], out: Path, copy_local: bool) -> Any:
    if not spec:
        return None
    if copy_local and _is_local_dir(spec):
        from tld.encoders.text import load_text_encoder

        load_text_encoder(spec).save_pretrained(out / "text_encoder")
        return "text_encoder"
    return spec


def sampling_defaults(train_cfg: dict[str, Any]) -> dict[str, Any]:
    """The `sampling` entry of an exported model folder.

    A fine-tune inherits its base model folder's defaults (they were tuned for those weights);
    otherwise the settings of the training config's sample grids, which the user watched while
    training, become the model's defaults.
    """
    base = train_cfg.get("init_from")
    if base and Path(str(base)).is_dir():
        inherited = read_config_json(base).get("sampling")
        if inherited:
            return dict(inherited)
    sample = train_cfg.get("sample") or {}
    names = ("cfg", "steps", "sampler", "schedule")
    out = {name: sample[name] for name in names if sample.get(name) is not None}
    if "schedule" not in out:  # the grids' default: the parameterization's own schedule, written down
        param = ((train_cfg.get("diffusion") or {}).get("parameterization") or {}).get("name", "tld")
        out["schedule"] = default_schedule(param)
    return out


def checkpoint_folder(checkpoint: str | os.PathLike) -> Path:
    """A step_<N> folder as given, or a run's output folder's newest checkpoint."""
    folder = Path(checkpoint)
    if (folder / ckpt.CHECKPOINTS).is_dir():
        found = ckpt.latest_checkpoint(folder / ckpt.CHECKPOINTS)
        if found is None:
            raise TLDError(f"no complete checkpoint under {folder / ckpt.CHECKPOINTS}")
        return found
    return folder


def _main_decay(state: dict[str, Any]) -> float:
    return float(((state.get("config") or {}).get("ema") or {}).get("decay", EMAConfig.decay))


def ema_files(folder: Path, state: dict[str, Any]) -> dict[float, Path]:
    """Every EMA a checkpoint holds by decay: the main one (`ema.decay`) and those of `ema.extra_decays`."""
    main = {_main_decay(state): folder / ckpt.EMA} if (folder / ckpt.EMA).is_file() else {}
    return dict(sorted({**main, **ckpt.extra_ema_files(folder)}.items()))


def _pick_weights(
    folder: Path, state: dict[str, Any], ema: bool, ema_decay: float | None
) -> tuple[dict[str, Any], float | None]:
    """(weights, the decay of the EMA they are; None for the raw weights). ema_decay None: the main EMA."""
    if not ema:
        if ema_decay is not None:
            raise TLDError("--ema-decay picks one of the EMA weights; it cannot go with --no-ema")
        return ckpt.load_weights(folder / ckpt.MODEL), None
    files = ema_files(folder, state)
    if not files:
        raise TLDError(f"{folder} holds no EMA weights; export with ema=False (--no-ema)")
    decay = _main_decay(state) if ema_decay is None else float(ema_decay)
    if decay not in files:
        have = ", ".join(str(d) for d in files)
        raise TLDError(f"{folder} has no EMA of decay {decay}; its EMA decays are {have}")
    return ckpt.load_weights(files[decay]), decay


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    ema: bool = True,
    copy_local_components: bool = True,
    ema_decay: float | None = None,
) -> Path:
    """Write `out_dir/config.json` + `denoiser.safetensors` (EMA weights unless ema=False).

    `ema_decay` picks one of the EMAs the run tracked (`ema.decay` or one of `ema.extra_decays`);
    None: the main one. config.json records it as `ema_decay`.
    The VAE and text encoder come from the training dataset's meta.json: hub ids stay specs in
    config.json; local folders are re-saved as `vae/` and `text_encoder/` so the export is self-contained.
    The sampling defaults come from the fine-tuned base model or the training config's `sample`.
    """
    from tld.model import Denoiser, DenoiserConfig
    from tld.model.state import load_checked

    folder = checkpoint_folder(checkpoint)
    state = ckpt.read_state(folder)
    weights, decay = _pick_weights(folder, state, ema, ema_decay)
    net = Denoiser(DenoiserConfig.from_dict(state["compat"]["model"]))
    load_checked(net, weights, str(folder))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = state.get("dataset", {})
    train_cfg = state.get("config", {})
    # A class-conditional or unconditional model never reads text: no text encoder in its folder.
    text_spec = dataset.get("text_encoder") if state["compat"].get("condition", "text") == "text" else None
    config = {
        "parameterization": state["compat"]["parameterization"],
        "vae": _export_vae(dataset.get("vae") or {}, out, copy_local_components),
        "text_encoder": _export_text_encoder(text_spec or {}, out, copy_local_components),
        "ema": bool(ema),
        "ema_decay": decay,
        "text_tokens": bool(dataset.get("text_tokens", False)),
        "sampling": sampling_defaults(train_cfg),
        "training": {
            "step": state["step"],
            "dataset": dataset.get("path"),
            "condition": train_cfg.get("data", {}).get("condition"),
            "inpaint": state["compat"].get("inpaint", False),
            "augment_cond": train_cfg.get("augment", {}).get("prob", 0) > 0,
            "buckets": dataset.get("buckets"),  # [[height, width], ...] of an aspect-ratio bucketed dataset
        },
    }
    (out / CONFIG_NAME).unlink(missing_ok=True)  # an export is a fresh folder, never a merge
    update_config_json(out, config)
    net.save_pretrained(out)  # adds the "denoiser" entry to config.json
    return out


def export_every_ema(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, copy_local_components: bool = True
) -> list[Path]:
    """One model folder per EMA the run tracked, `out_dir/ema_<decay>/`, e.g. to score each with
    `tld eval sweep`."""
    folder = checkpoint_folder(checkpoint)
    decays = ema_files(folder, ckpt.read_state(folder))
    if not decays:
        raise TLDError(f"{folder} holds no EMA weights")
    out = Path(out_dir)
    return [
        export_checkpoint(folder, out / f"ema_{decay!r}", True, copy_local_components, decay)
        for decay in decays
    ]
