"""LoRA fine-tuning in `train` (the `lora:` config block, `tld train --lora RANK`; docs/adapters.md).

With `lora.rank > 0` the `init_from` model is frozen, low-rank adapters on its block linears are the
only trained weights (the optimizer sees only them; the EMA of the frozen ones stays the weights),
and the run writes `output_dir/adapter`: the EMA adapter, a small folder naming its base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tld.adapters import LoraSettings, attach_lora, network_fingerprint, save_adapter
from tld.adapters.lora import adapter_state
from tld.errors import TLDError

if TYPE_CHECKING:
    from tld.training.config import TrainConfig

ADAPTER_NAME = "default"  # the adapter's name inside a training run's network and checkpoints


def lora_settings(config: TrainConfig) -> LoraSettings:
    lora = config.lora
    alpha = float(lora.rank if lora.alpha is None else lora.alpha)
    return LoraSettings(rank=lora.rank, alpha=alpha, targets=list(lora.targets), dropout=lora.dropout)


def attach_training_lora(config: TrainConfig, net: nn.Module) -> nn.Module:
    """Freeze `net` (the `init_from` model) and attach a fresh trainable adapter (rank > 0 only)."""
    if not config.lora.rank:
        return net
    if not config.init_from:
        raise TLDError(
            "lora.rank > 0 trains adapters on a frozen base model: set init_from to a model folder"
        )
    if config.inpaint.enabled:
        raise TLDError("lora.rank > 0 cannot grow the base model's input channels: set inpaint.enabled=false")
    return attach_lora(net, lora_settings(config), ADAPTER_NAME)


def write_run_adapter(config: TrainConfig, net: nn.Module, ema_state: dict[str, Any], step: int) -> Path:
    """`output_dir/adapter` from the EMA of the adapter weights."""
    tensors = adapter_state(ema_state, ADAPTER_NAME)
    info = {"steps": step, "data": config.data.path, "lr": config.optim.lr, "batch_size": config.batch_size}
    return save_adapter(
        Path(config.output_dir) / "adapter",
        tensors,
        lora_settings(config),
        str(config.init_from),
        network_fingerprint(net),
        info,
    )
