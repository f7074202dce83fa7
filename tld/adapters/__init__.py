"""Adapters: small trained additions to a frozen denoiser, saved apart from it.

- lora.py: LoRA layers on the block linears (built on `peft`): attach, activate at scales, fuse /
  unfuse, their tensors and the network's base state dict.
- files.py: adapter folders (`adapter.safetensors` + `adapter_config.json` naming the base model by
  path and fingerprint): save, read, check the base, load into a network.

Sits between tld.model and the layers that use it (training writes adapters, the pipeline loads them).
"""

from tld.adapters.files import load_adapter, network_fingerprint, read_adapter, save_adapter
from tld.adapters.lora import (
    TARGETS,
    LoraSettings,
    active_scales,
    adapter_names,
    attach_lora,
    base_state,
    fuse,
    is_fused,
    set_active,
    unfuse,
)

__all__ = [
    "TARGETS",
    "LoraSettings",
    "active_scales",
    "adapter_names",
    "attach_lora",
    "base_state",
    "fuse",
    "is_fused",
    "load_adapter",
    "network_fingerprint",
    "read_adapter",
    "save_adapter",
    "set_active",
    "unfuse",
]
