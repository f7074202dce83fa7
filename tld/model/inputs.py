"""Validation of the denoiser's inputs: one clear TLDError per kind of mistake."""

from __future__ import annotations

import torch

from tld.errors import TLDError
from tld.model.config import DenoiserConfig


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise TLDError(f"{name} must be finite, but {bad} of {t.numel()} values are NaN or infinite")


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise TLDError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_inputs(
    cfg: DenoiserConfig,
    x: torch.Tensor,
    noise_level: torch.Tensor,
    text_emb: torch.Tensor | None,
    text_mask: torch.Tensor | None,
    class_labels: torch.Tensor | None,
    extra_cond: torch.Tensor | None,
    drop_cond: torch.Tensor | None,
) -> None:
    """Raise a TLDError naming the expected and the received shape/value of the first bad input."""
    x = _check_tensor("x", x)
    if x.ndim != 4 or x.shape[1] != cfg.in_channels:
        raise TLDError(f"x must have shape (B, {cfg.in_channels}, H, W), got {_shape(x)}")
    b, _, h, w = x.shape
    p = cfg.patch_size
    if h % p or w % p or h == 0 or w == 0:
        raise TLDError(f"latent height and width must be positive multiples of patch_size {p}, got {h}x{w}")
    _check_finite("x", x)

    noise_level = _check_tensor("noise_level", noise_level)
    if noise_level.numel() != 1 and _shape(noise_level) not in ((b,), (b, 1)):
        raise TLDError(
            f"noise_level must have shape ({b},) or ({b}, 1) or be a scalar, got {_shape(noise_level)}"
        )
    _check_finite("noise_level", noise_level)

    if text_emb is not None:
        text_emb = _check_tensor("text_emb", text_emb)
        if cfg.text_dim == 0:
            raise TLDError("this denoiser has no text conditioning (text_dim=0), but text_emb was given")
        if text_emb.ndim not in (2, 3) or text_emb.shape[0] != b or text_emb.shape[-1] != cfg.text_dim:
            raise TLDError(
                f"text_emb must have shape ({b}, {cfg.text_dim}) or ({b}, T, {cfg.text_dim}), "
                f"got {_shape(text_emb)}"
            )
        _check_finite("text_emb", text_emb)
    if text_mask is not None:
        text_mask = _check_tensor("text_mask", text_mask)
        if text_emb is None or text_emb.ndim != 3:
            raise TLDError("text_mask only goes with per-token text_emb of shape (B, T, D)")
        if text_mask.dtype != torch.bool or _shape(text_mask) != _shape(text_emb)[:2]:
            raise TLDError(
                f"text_mask must be a bool tensor of shape {_shape(text_emb)[:2]}, "
                f"got {text_mask.dtype} {_shape(text_mask)}"
            )

    if class_labels is not None:
        class_labels = _check_tensor("class_labels", class_labels)
        if cfg.num_classes == 0:
            raise TLDError("this denoiser has no class labels (num_classes=0), but class_labels were given")
        if class_labels.is_floating_point() or _shape(class_labels) != (b,):
            raise TLDError(
                f"class_labels must be an integer tensor of shape ({b},), got "
                f"{class_labels.dtype} {_shape(class_labels)}"
            )
        lo, hi = int(class_labels.min()), int(class_labels.max())
        if lo < 0 or hi > cfg.num_classes:
            raise TLDError(
                f"class_labels must lie in [0, {cfg.num_classes}] ({cfg.num_classes} = null class), "
                f"got values in [{lo}, {hi}]"
            )

    if extra_cond is not None:
        extra_cond = _check_tensor("extra_cond", extra_cond)
        if cfg.extra_cond_dim == 0:
            raise TLDError(
                "this denoiser has no extra conditioning (extra_cond_dim=0), but extra_cond was given"
            )
        if _shape(extra_cond) != (b, cfg.extra_cond_dim):
            raise TLDError(
                f"extra_cond must have shape ({b}, {cfg.extra_cond_dim}), got {_shape(extra_cond)}"
            )
        _check_finite("extra_cond", extra_cond)

    if drop_cond is not None:
        drop_cond = _check_tensor("drop_cond", drop_cond)
        if drop_cond.dtype != torch.bool or _shape(drop_cond) != (b,):
            raise TLDError(
                f"drop_cond must be a bool tensor of shape ({b},), got {drop_cond.dtype} {_shape(drop_cond)}"
            )
