"""Shipping the demo model: the fp16 bundle (`tld.pipeline.folder.export_fp16`) with its model card,
whose facts are read here from the files the recipe's steps wrote."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tld.encoders.vae import TLD_VAE_JSON
from tld.model.files import update_config_json
from tld.pipeline.folder import export_fp16
from tld.preprocessing.shards import SOURCE_INFO
from tld.recipes.card import model_card
from tld.training import checkpoint as ckpt

if TYPE_CHECKING:
    from tld.recipes.emoji import EmojiRecipe

TIMINGS = "timings.json"  # the recipe's wall time per step, summed over resumed calls
EVAL_SUMMARY = "eval.json"  # the colour table's summary; its presence marks the eval step done


def _vae_facts(r: EmojiRecipe) -> dict[str, Any]:
    """Steps, batch, seconds and held-out scores of the VAE: from its checkpoints when the recipe
    trained it, else from the `training` record in the tld_vae.json of a VAE passed with --vae."""
    found = ckpt.latest_checkpoint(ckpt.run_checkpoints(r.out / "vae"))
    if found is not None:
        state = ckpt.read_state(found)
        config = json.loads((r.out / "vae" / "config.json").read_text())  # the trainer's, not a model's
        return {"vae_steps": state["step"], "vae_seconds": state.get("elapsed_s"),
                "vae_batch": config.get("batch_size", "?"), "vae_val": (state.get("history") or [{}])[-1]}  # fmt: skip
    record = json.loads((r.out / "vae" / "vae" / TLD_VAE_JSON).read_text())
    done = record.get("training", {})
    return {"vae_steps": done.get("steps", "?"), "vae_seconds": done.get("elapsed_s"),
            "vae_batch": done.get("batch_size", "?"), "vae_val": record.get("val", {}),
            "vae_note": done.get("note", "")}  # fmt: skip


def _denoiser_recipe(config: dict[str, Any]) -> str:
    """'TLD parameterization, adaLN-Zero': the objective and the trunk options a training config set."""
    name = (config.get("diffusion", {}).get("parameterization") or {}).get("name", "tld")
    words = [{"tld": "TLD parameterization", "flow": "flow matching"}.get(name, f"{name} parameterization")]
    model = config.get("model", {})
    words += [label for key, label in (("adaln", "adaLN-Zero"), ("skips", "long skips"), ("qk_norm", "QK-norm"))
              if model.get(key)]  # fmt: skip
    return ", ".join(words)


def _polish_facts(r: EmojiRecipe) -> dict[str, Any] | None:
    """Steps, peak learning rate and precision of the polish phase's run, when the recipe had one."""
    found = ckpt.latest_checkpoint(ckpt.run_checkpoints(r.out / "polish")) if r.polish_steps else None
    if found is None:
        return None
    state = ckpt.read_state(found)
    config = state.get("config", {})
    return {"steps": state["step"], "lr": (config.get("optim") or {}).get("lr", "?"),
            "mixed_precision": config.get("mixed_precision", "no")}  # fmt: skip


def run_facts(r: EmojiRecipe) -> dict[str, Any]:
    """What the model card states about a recipe run, read from the files its steps wrote."""
    den_state = ckpt.read_state(ckpt.latest_checkpoint(ckpt.run_checkpoints(r.out / "denoiser")))
    timings_path = r.out / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    source = json.loads((r.shards / "all" / SOURCE_INFO).read_text())
    captioned = r.shards / "captioned" / SOURCE_INFO
    recaption = json.loads(captioned.read_text()).get("captions", "") if captioned.is_file() else ""
    gpu = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"
    variants = r.shards / "variants" / SOURCE_INFO
    finished = r.finish_steps and variants.is_file()
    return {
        **_vae_facts(r),
        "denoiser_steps": den_state["step"], "denoiser_batch": den_state.get("config", {}).get("batch_size", "?"),
        "balance": den_state.get("config", {}).get("data", {}).get("balance", {}),
        "denoiser_recipe": _denoiser_recipe(den_state.get("config", {})),
        "timings": timings, "source": source, "recaption": recaption,
        "finish_steps": r.finish_steps if finished else 0,
        "polish": _polish_facts(r) if finished else None,
        "first_balance": r.train_config().get("data", {}).get("balance", {}) if finished else None,
        "variants": json.loads(variants.read_text()).get("caption_variants", "") if finished else "",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s), {gpu}",
    }  # fmt: skip


def ship_model(r: EmojiRecipe, model: Path, dest: Path, summary: dict[str, Any]) -> Path:
    """Write the fp16 bundle to `dest` with a model card (README.md) built from the run's records."""
    export_fp16(model, dest)
    # The settings the colour table was measured with become the bundle's defaults.
    sampling = {"cfg": summary["cfg"], "steps": summary["steps"], "cfg_schedule": summary.get("cfg_schedule")}
    update_config_json(dest, {"sampling": sampling})
    facts = run_facts(r)
    size_mb = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    (dest / "README.md").write_text(model_card(facts, summary, size_mb))
    (dest / EVAL_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return dest
