"""Export a training checkpoint as a model folder that `TLDPipeline.from_pretrained` loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tld.errors import TLDError
from tld.generation.settings import default_schedule
from tld.model.files import CONFIG_NAME, read_config_json, update_config_json
from tld.training import checkpoint as ckpt


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


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    ema: bool = True,
    copy_local_components: bool = True,
) -> Path:
    """Write `out_dir/config.json` + `denoiser.safetensors` (EMA weights unless ema=False).

    The VAE and text encoder come from the training dataset's meta.json: hub ids stay specs in
    config.json; local folders are re-saved as `vae/` and `text_encoder/` so the export is self-contained.
    The sampling defaults come from the fine-tuned base model or the training config's `sample`.
    """
    from tld.model import Denoiser, DenoiserConfig
    from tld.model.state import load_checked

    folder = Path(checkpoint)
    if (folder / "checkpoints").is_dir():  # a run's output folder: take its newest checkpoint
        found = ckpt.latest_checkpoint(folder / "checkpoints")
        if found is None:
            raise TLDError(f"no complete checkpoint under {folder / 'checkpoints'}")
        folder = found
    loaded = ckpt.load_checkpoint(folder)
    state = loaded["state"]
    weights = loaded["ema"] if ema else loaded["model"]
    if weights is None:
        raise TLDError(f"{folder} holds no EMA weights; export with ema=False (--no-ema)")
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
