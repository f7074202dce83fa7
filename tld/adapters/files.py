"""Adapter folders: `adapter.safetensors` (the LoRA tensors) + `adapter_config.json`.

    {"format": "tld-lora", "version": 1, "lora": {"rank": 8, "alpha": 8.0, "targets": [...], ...},
     "base": {"path": "weights/tld-emoji", "fingerprint": {"id": "3f9c...", "config_sha256": ..., "probe": {...}}},
     "info": {...}}

The fingerprint names the base network an adapter was trained on: a hash of its DenoiserConfig and
a few weights read at fixed positions of four of its tensors. The weights are compared within a
tolerance, so the same base loaded in float16 or bfloat16 still matches; another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tld.adapters.lora import (
    LoraSettings,
    active_scales,
    attach_lora,
    base_state,
    check_name,
    is_fused,
    load_adapter_state,
    set_active,
)
from tld.common import write_json_atomic
from tld.errors import TLDError, check_number

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = "tld-lora"
_PROBES = 8
_RTOL, _ATOL = 2e-2, 2e-3


def fingerprint(config: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The base network's identity: its config's hash and `_PROBES` weights of four tensors."""
    blob = json.dumps(config, sort_keys=True).encode()
    keys = sorted(k for k, v in state.items() if v.is_floating_point() and v.numel() >= _PROBES)
    chosen = [keys[0], keys[len(keys) // 3], keys[2 * len(keys) // 3], keys[-1]] if keys else []
    probe = {}
    for key in chosen:
        flat = state[key].detach().reshape(-1).float().cpu()
        gen = torch.Generator().manual_seed(len(key) * 7919 + flat.numel())
        idx = torch.randint(flat.numel(), (_PROBES,), generator=gen)
        probe[key] = [float(v) for v in flat[idx]]
    digest = hashlib.sha256(blob)
    for key, values in probe.items():
        digest.update(f"{key}:{[round(v, 2) for v in values]}".encode())
    return {"id": digest.hexdigest()[:12], "config_sha256": hashlib.sha256(blob).hexdigest(), "probe": probe}


def network_fingerprint(net: nn.Module) -> dict[str, Any]:
    return fingerprint(net.config.to_dict(), base_state(net))


def same_base(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.get("config_sha256") != b.get("config_sha256") or set(a.get("probe", {})) != set(b.get("probe", {})):
        return False
    return all(
        torch.allclose(torch.tensor(a["probe"][k]), torch.tensor(b["probe"][k]), rtol=_RTOL, atol=_ATOL)
        for k in a["probe"]
    )


def save_adapter(
    folder: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    settings: LoraSettings,
    base_path: str,
    base_fingerprint: dict[str, Any],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write an adapter folder from its tensors (keys as `tld.adapters.lora.adapter_state` gives them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, folder / ADAPTER_FILE)
    config = {
        "format": FORMAT,
        "version": 1,
        "lora": settings.to_dict(),
        "base": {"path": str(base_path), "fingerprint": base_fingerprint},
        "info": info or {},
    }
    write_json_atomic(folder / ADAPTER_CONFIG, config)
    return folder


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, tensors) of an adapter folder, or a one-line TLDError saying what is wrong."""
    folder = Path(path)
    if folder.is_file() and folder.name in (ADAPTER_FILE, ADAPTER_CONFIG):
        folder = folder.parent
    config_file, tensor_file = folder / ADAPTER_CONFIG, folder / ADAPTER_FILE
    if not config_file.is_file() or not tensor_file.is_file():
        raise TLDError(f"{path} is not an adapter folder (expected {ADAPTER_CONFIG} and {ADAPTER_FILE})")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TLDError(f"cannot parse {config_file}: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TLDError(f"{config_file} is not a tld LoRA adapter config (format {FORMAT!r})")
    return config, load_file(tensor_file)


def check_base(config: dict[str, Any], net: nn.Module, path: str | os.PathLike) -> None:
    """Refuse an adapter whose base network is not `net` (one line naming both)."""
    base = config.get("base", {})
    mine = network_fingerprint(net)
    if not same_base(base.get("fingerprint", {}), mine):
        theirs = base.get("fingerprint", {}).get("id", "?")
        raise TLDError(
            f"adapter {path} was trained on base model {base.get('path', '?')} (fingerprint {theirs}), "
            f"not on this pipeline's denoiser (fingerprint {mine['id']})"
        )


def load_adapter(net: nn.Module, path: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
    """Attach the adapter folder at `path` to `net` as adapter `name` (default: the folder's name)
    running at `scale` next to the adapters already active; returns the name."""
    config, tensors = read_adapter(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    name = check_name(name if name is not None else _default_name(folder))
    if is_fused(net):
        raise TLDError("adapters are fused into the weights: unfuse_lora() before loading another")
    check_base(config, net, path)
    try:
        settings = LoraSettings(**config.get("lora", {}))
    except TypeError as exc:
        raise TLDError(f"{folder / ADAPTER_CONFIG}: bad 'lora' entry ({exc})") from None
    before = active_scales(net)
    attach_lora(net, settings, name)
    load_adapter_state(net, name, tensors)
    set_active(net, {**before, name: check_number(scale, "scale", None, None)})
    return name


def _default_name(folder: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in folder.resolve().name)
    return cleaned if cleaned[:1].isalpha() else f"lora_{cleaned}"
