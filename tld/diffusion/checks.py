"""Cheap input validation shared by the diffusion modules; every failure is a one-line TLDError."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tld.errors import TLDError


def check_choice(name: str, valid: Iterable[str], what: str) -> str:
    """Return ``name`` if it is one of ``valid``, else raise naming every valid choice."""
    valid = list(valid)
    if name not in valid:
        raise TLDError(f"unknown {what} {name!r}; expected one of: {', '.join(valid)}")
    return name


def check_options(options: Iterable[str], valid: Iterable[str], what: str) -> None:
    """Raise naming the options that are not in ``valid``, and every valid one (in ``valid``'s order)."""
    valid = list(valid)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TLDError(f"unknown option(s) {unknown} for {what}; expected: {', '.join(valid)}")


def check_nonnegative(value: float, what: str) -> None:
    if value < 0:
        raise TLDError(f"{what} must be >= 0, got {value}")


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    if not sigma_min > 0:
        raise TLDError(f"sigma_min must be > 0, got {sigma_min}")
    if not sigma_min < sigma_max:
        raise TLDError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")


def check_sigmas(sigmas: torch.Tensor) -> None:
    """A sampler's sigmas: a 1-D tensor of >= 2 finite values, strictly decreasing, >= 0, ending in 0.

    A repeated sigma is a zero-length step: the DPM-Solver samplers divide by its log-step and give NaN.
    """
    if not isinstance(sigmas, torch.Tensor):
        raise TLDError(f"sigmas must be a 1-D torch.Tensor, got {type(sigmas).__name__}")
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise TLDError(f"sigmas must be 1-D with at least 2 values, got shape {tuple(sigmas.shape)}")
    s = sigmas.detach().double().cpu()
    if not torch.isfinite(s).all():
        raise TLDError(f"sigmas must be finite, got {s.tolist()}")
    if (s < 0).any():
        raise TLDError(f"sigmas must be >= 0, got min {s.min().item()}")
    if s[-1] != 0:
        raise TLDError(f"sigmas must end in 0, got last value {s[-1].item()}")
    if (s[1:] >= s[:-1]).any():
        i = int(torch.nonzero(s[1:] >= s[:-1])[0])
        raise TLDError(
            f"sigmas must be strictly decreasing, got sigmas[{i}]={s[i].item():.6g} <= "
            f"sigmas[{i + 1}]={s[i + 1].item():.6g}"
        )
