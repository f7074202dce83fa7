"""Loading weights into a module with errors that name what was expected and what came."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from tld.errors import TLDError


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a one-line TLDError unless `state` has exactly the module's keys and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys [{_short(missing)}]")
        if unexpected:
            parts.append(f"unexpected keys [{_short(unexpected)}]")
        raise TLDError(f"{source} does not match the denoiser config: " + "; ".join(parts))
    wrong = [
        f"{k}: expected {tuple(v.shape)}, found {tuple(state[k].shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise TLDError(f"{source} has tensors of the wrong shape: {_short(wrong, 4)}")


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Check keys and shapes, then copy the tensors in (casting to the module's dtypes)."""
    check_state_dict(module, state, source)
    module.load_state_dict(dict(state), strict=True)
