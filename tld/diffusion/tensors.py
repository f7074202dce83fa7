"""Shape helpers shared by the parameterizations, the guidance and the samplers."""

from __future__ import annotations

import torch


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a (B,) tensor so it broadcasts over a tensor with ``ndim`` dimensions."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))
