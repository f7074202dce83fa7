"""The pipeline's adapter methods (a mixin of TLDPipeline): load LoRA adapters, set their scales,
fuse / unfuse them (docs/adapters.md).

    pipe.load_lora("runs/owl/adapter", scale=0.8)          # -> "adapter" (the folder's name)
    pipe.load_lora("runs/ink/adapter", name="ink")          # several adapters run together
    pipe.set_lora_scale({"adapter": 1.0, "ink": 0.5})        # which run, at which scale; {} = none
    pipe.fuse_lora(); pipe.unfuse_lora()                     # merged into the weights and back
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from tld.adapters import (
    active_scales,
    adapter_names,
    base_state,
    fuse,
    is_fused,
    load_adapter,
    set_active,
    unfuse,
)
from tld.errors import TLDError, check_number
from tld.model import Denoiser


class LoraMixin:
    """LoRA methods over `self.denoiser` (peft is imported only when an adapter is loaded)."""

    denoiser: Denoiser

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
        """Load an adapter folder (`tld train --lora`); it runs at `scale` next to those already
        active. An adapter trained on another base model is refused. Returns its name."""
        return load_adapter(self.denoiser, path, scale=scale, name=name)

    @property
    def lora_adapters(self) -> dict[str, float]:
        """{name: scale} of the adapters that run (loaded ones not in it are off)."""
        return active_scales(self.denoiser) if adapter_names(self.denoiser) else {}

    def set_lora_scale(self, scales: Mapping[str, float] | float) -> None:
        """Run exactly the adapters in `scales` ({name: scale}; a number sets every loaded one)."""
        if is_fused(self.denoiser):
            raise TLDError("adapters are fused into the weights: unfuse_lora() before changing scales")
        names = adapter_names(self.denoiser)
        if not isinstance(scales, Mapping):
            scales = dict.fromkeys(names, check_number(scales, "scale"))
        for value in scales.values():
            check_number(value, "scale")
        set_active(self.denoiser, scales)

    def fuse_lora(self) -> None:
        """Merge the active adapters (at their scales) into the denoiser's weights: sampling then
        costs what the base model costs."""
        if not adapter_names(self.denoiser):
            raise TLDError("no adapter is loaded: load_lora(path) first")
        fuse(self.denoiser)

    def unfuse_lora(self) -> None:
        """Undo fuse_lora (the base weights again, up to float rounding)."""
        unfuse(self.denoiser)


def save_denoiser(net: nn.Module, folder: str | os.PathLike) -> Path:
    """Write the denoiser without adapter layers: the base weights, or the fused ones after fuse_lora()."""
    if not adapter_names(net):
        return net.save_pretrained(folder)
    plain = Denoiser(net.config).to(next(net.parameters()).dtype)
    plain.load_state_dict(base_state(net))
    return plain.save_pretrained(folder)
