"""The denoiser's conditioning inputs, and their validation: one clear TLDError per kind of mistake.

`check_inputs` runs where data enters (pipeline calls, the first training batch), never inside
`Denoiser.forward`: its finiteness and label-range checks would sync the device at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from tld.errors import TLDError
from tld.model.config import DenoiserConfig


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser is conditioned on besides the noise level; None = the null condition.

    text_emb (B, D) pooled or (B, T, D) per token; text_mask (B, T) bool, True = real token;
    class_labels (B,) ints, `num_classes` = null; extra_cond (B, extra_cond_dim); drop_cond (B,)
    bool, True = use the null condition for that row (classifier-free guidance).
    """

    text_emb: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None
    extra_cond: torch.Tensor | None = None
    drop_cond: torch.Tensor | None = None


CONDITIONING_KEYS = tuple(f.name for f in fields(Conditioning))


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
    config: DenoiserConfig, x: torch.Tensor, noise_level: torch.Tensor | float, **conditioning: object
) -> None:
    """Raise a TLDError naming the expected and the received shape/value of the first bad input.

    Takes the same arguments as `Denoiser.forward` (plus the config): `check_inputs(net.config, x,
    sigma, text_emb=...)`.
    """
    unknown = sorted(set(conditioning) - set(CONDITIONING_KEYS))
    if unknown:
        raise TLDError(f"unknown conditioning inputs {unknown}; expected some of {list(CONDITIONING_KEYS)}")
    x = _check_tensor("x", x)
    if x.ndim != 4 or x.shape[1] != config.in_channels:
        raise TLDError(f"x must have shape (B, {config.in_channels}, H, W), got {_shape(x)}")
    b, _, h, w = x.shape
    p = config.patch_size
    if h % p or w % p or h == 0 or w == 0:
        raise TLDError(f"latent height and width must be positive multiples of patch_size {p}, got {h}x{w}")
    _check_finite("x", x)
    if not torch.is_tensor(noise_level):
        noise_level = torch.tensor(float(noise_level))
    if noise_level.numel() != 1 and _shape(noise_level) not in ((b,), (b, 1)):
        raise TLDError(
            f"noise_level must have shape ({b},) or ({b}, 1) or be a scalar, got {_shape(noise_level)}"
        )
    _check_finite("noise_level", noise_level)
    c = Conditioning(**{k: _check_tensor(k, v) for k, v in conditioning.items() if v is not None})
    _check_text(config, b, c.text_emb, c.text_mask)
    _check_labels(config, b, c.class_labels)
    _check_extra(config, b, c.extra_cond)
    if c.drop_cond is not None and (c.drop_cond.dtype != torch.bool or _shape(c.drop_cond) != (b,)):
        raise TLDError(
            f"drop_cond must be a bool tensor of shape ({b},), got {c.drop_cond.dtype} {_shape(c.drop_cond)}"
        )


def _check_text(config: DenoiserConfig, b: int, emb: torch.Tensor | None, mask: torch.Tensor | None) -> None:
    if emb is not None:
        if config.text_dim == 0:
            raise TLDError("this denoiser has no text conditioning (text_dim=0), but text_emb was given")
        if emb.ndim not in (2, 3) or emb.shape[0] != b or emb.shape[-1] != config.text_dim:
            raise TLDError(
                f"text_emb must have shape ({b}, {config.text_dim}) or ({b}, T, {config.text_dim}), "
                f"got {_shape(emb)}"
            )
        _check_finite("text_emb", emb)
    if mask is not None:
        if emb is None or emb.ndim != 3:
            raise TLDError("text_mask only goes with per-token text_emb of shape (B, T, D)")
        if mask.dtype != torch.bool or _shape(mask) != _shape(emb)[:2]:
            raise TLDError(
                f"text_mask must be a bool tensor of shape {_shape(emb)[:2]}, got {mask.dtype} {_shape(mask)}"
            )


def _check_labels(config: DenoiserConfig, b: int, labels: torch.Tensor | None) -> None:
    if labels is None:
        return
    if config.num_classes == 0:
        raise TLDError("this denoiser has no class labels (num_classes=0), but class_labels were given")
    if labels.is_floating_point() or _shape(labels) != (b,):
        raise TLDError(
            f"class_labels must be an integer tensor of shape ({b},), got {labels.dtype} {_shape(labels)}"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > config.num_classes:
        raise TLDError(
            f"class_labels must lie in [0, {config.num_classes}] ({config.num_classes} = null class), "
            f"got values in [{lo}, {hi}]"
        )


def _check_extra(config: DenoiserConfig, b: int, extra: torch.Tensor | None) -> None:
    if extra is None:
        return
    if config.extra_cond_dim == 0:
        raise TLDError("this denoiser has no extra conditioning (extra_cond_dim=0), but extra_cond was given")
    if _shape(extra) != (b, config.extra_cond_dim):
        raise TLDError(f"extra_cond must have shape ({b}, {config.extra_cond_dim}), got {_shape(extra)}")
    _check_finite("extra_cond", extra)
