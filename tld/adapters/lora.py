"""Low-rank adapters (LoRA, Hu et al. 2021) on the denoiser's block linears, built on `peft`.

    attach_lora(net, LoraSettings(rank=8), name="style")    # injects peft LoRA layers, freezes the base
    set_active(net, {"style": 1.0, "other": 0.5})           # which adapters run, at which scale
    fuse(net) / unfuse(net)                                  # merge the active adapters into the weights
    adapter_state(net, "style")                              # its tensors, keys without the adapter name
    base_state(net)                                          # the plain network's state dict

The network stays a `Denoiser`: peft wraps each targeted `nn.Linear` (or its `CPULinear` subclass,
`tld.model.cpu`) as the `base_layer` of a `lora.Linear`, whose state dict keys read
`<name>.base_layer.weight` and `<name>.lora_A.<adapter>.weight`. `peft` is in the `train` extra and
imported only when an adapter is attached.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tld.common import require
from tld.errors import TLDError, check_int, check_number

# The block linears an adapter may target. `cross.q` is left out: with few conditioning tokens the
# cross-attention folds the query projection into the keys and reads `q.weight` directly
# (tld.model.blocks.CrossAttention.folded), which would skip an unfused adapter on it.
TARGETS = ("attn.qkv", "cross.kv", "ffn.fc1", "ffn.fc2")
_ADAPTER_KEY = re.compile(r"\.(lora_[AB])\.([^.]+)\.")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass
class LoraSettings:
    """An adapter's shape: rank, alpha (the update is scaled by alpha / rank), targets, dropout."""

    rank: int = 8
    alpha: float = 8.0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_int(self.rank, "lora.rank", 1)
        check_number(self.alpha, "lora.alpha", 0.0, None)
        check_number(self.dropout, "lora.dropout", 0.0, 1.0)
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise TLDError(f"lora.targets must be a non-empty subset of {list(TARGETS)}, got {self.targets}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "targets": list(self.targets),
            "dropout": self.dropout,
        }


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise TLDError(
            f"adapter names are a letter then letters, digits, '_' or '-' (at most 64), got {name!r}"
        )
    return name


def lora_layers(net: nn.Module) -> Iterator[nn.Module]:
    """The network's peft LoRA layers (none when peft was never imported)."""
    import sys

    if "peft" not in sys.modules:
        return iter(())
    layer_cls = sys.modules["peft"].tuners.lora.LoraLayer
    return (m for m in net.modules() if isinstance(m, layer_cls))


def adapter_names(net: nn.Module) -> list[str]:
    """The adapters attached to `net`, in the order they were attached."""
    names: list[str] = []
    for layer in lora_layers(net):
        names += [n for n in layer.lora_A if n not in names]
    return names


def attach_lora(net: nn.Module, settings: LoraSettings, name: str = "default") -> nn.Module:
    """Inject a fresh adapter `name` (B = 0, so the network's function is unchanged) and freeze
    everything else; the new adapter is made the only active one, trainable, at scale 1."""
    check_name(name)
    if name in adapter_names(net):
        raise TLDError(f"an adapter named {name!r} is already attached; pick another name")
    if is_fused(net):
        raise TLDError("adapters are fused into the weights: unfuse them before attaching another")
    peft = require("peft", "train")
    pattern = r"blocks\.\d+\.(" + "|".join(re.escape(t) for t in settings.targets) + r")"
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=pattern,
        bias="none",
    )
    with warnings.catch_warnings():  # "multiple adapters": intended
        warnings.simplefilter("ignore")
        peft.inject_adapter_in_model(config, net, adapter_name=name)
    for param_name, param in net.named_parameters():
        param.requires_grad_(f".{name}." in param_name and ".lora_" in param_name)
    set_active(net, {name: 1.0}, trainable=True)
    return net


def set_active(net: nn.Module, scales: Mapping[str, float], trainable: bool = False) -> None:
    """Run only the adapters in `scales`, each at its scale (0 = off, exactly the base network)."""
    known = adapter_names(net)
    unknown = [n for n in scales if n not in known]
    if unknown:
        raise TLDError(f"no adapter named {unknown[0]!r}; attached: {known or 'none'}")
    for layer in lora_layers(net):
        active = [n for n in scales if n in layer.lora_A]
        layer.set_adapter(active or [n for n in known if n in layer.lora_A][:1])
        for n in layer.lora_A:
            layer.set_scale(n, float(scales.get(n, 0.0)))
            for module in (layer.lora_A[n], layer.lora_B[n]):
                module.requires_grad_(trainable and n in scales)


def active_scales(net: nn.Module) -> dict[str, float]:
    """{adapter: scale} of the adapters that run (scale = scaling / (alpha / rank))."""
    out: dict[str, float] = {}
    for layer in lora_layers(net):
        for n in layer.active_adapters:
            out.setdefault(n, layer.scaling[n] * layer.r[n] / layer.lora_alpha[n])
    return out


def is_fused(net: nn.Module) -> bool:
    return any(layer.merged for layer in lora_layers(net))


def fuse(net: nn.Module) -> None:
    """Add the active adapters' updates (at their scales) into the base weights."""
    if is_fused(net):
        raise TLDError("adapters are already fused; unfuse them first")
    for layer in lora_layers(net):
        names = [n for n in layer.active_adapters if layer.scaling[n] != 0]
        if names:
            layer.merge(adapter_names=names)


def unfuse(net: nn.Module) -> None:
    """Subtract the fused updates again (the base weights up to float rounding)."""
    for layer in lora_layers(net):
        if layer.merged:
            layer.unmerge()


def adapter_state(state: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Adapter `name`'s tensors from a LoRA network's state dict (or an EMA of it), keys without the
    adapter name: `blocks.0.attn.qkv.lora_A.weight`."""
    out = {}
    for key, value in state.items():
        match = _ADAPTER_KEY.search(key)
        if match and match.group(2) == name:
            out[key[: match.start()] + f".{match.group(1)}." + key[match.end() :]] = value.detach()
    return out


def load_adapter_state(net: nn.Module, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy saved adapter tensors (keys as `adapter_state` writes them) into adapter `name`."""
    params = dict(net.named_parameters())
    expected = adapter_state(params, name)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise TLDError(
            f"adapter tensors do not match the network: {len(missing)} missing (e.g. {missing[:1]}), "
            f"{len(extra)} unexpected (e.g. {extra[:1]})"
        )
    with torch.no_grad():
        for key, value in tensors.items():
            module, _, leaf = key.rpartition(".")
            path, kind = module.rsplit(".", 1)
            target = params[f"{path}.{kind}.{name}.{leaf}"]
            if target.shape != value.shape:
                raise TLDError(
                    f"adapter tensor {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(value.to(target.dtype))


def base_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the network without adapter layers: the base weights (the fused ones while
    adapters are fused), keys as a plain `Denoiser` has them."""
    out = {}
    for key, value in net.state_dict().items():
        if _ADAPTER_KEY.search(key):
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


__all__ = [
    "TARGETS",
    "LoraSettings",
    "active_scales",
    "adapter_names",
    "adapter_state",
    "attach_lora",
    "base_state",
    "check_name",
    "fuse",
    "is_fused",
    "load_adapter_state",
    "lora_layers",
    "set_active",
    "unfuse",
]
