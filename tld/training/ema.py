"""Exponential moving average of model weights, kept in float32 whatever the training precision."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """EMA of a module's parameters and buffers; `decay_at(step)` ramps up when warmup is on.

    The ramp min(decay, (1 + n) / (10 + n)) keeps the early average from being dominated by the
    random initialisation, which a fixed 0.999 would remember for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.start_step = start_step
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    def decay_at(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        if not self.warmup:
            return self.decay
        n = step - self.start_step
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if value.dtype.is_floating_point:
                shadow.lerp_(value.detach().to(shadow.device, torch.float32), 1.0 - d)
            else:
                shadow.copy_(value)

    def to(self, device: torch.device | str) -> EMA:
        """Keep the average next to the weights: a per-step device-to-host copy would dominate a GPU step."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state is missing {len(missing)} tensors, e.g. {missing[:3]}")
        for name, value in state.items():
            if name in self.shadow:
                self.shadow[name].copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (cast to its dtypes)."""
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
