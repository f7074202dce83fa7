"""Classifier-free guidance and x0 thresholding, as a denoiser that wraps a denoiser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tld.diffusion.tensors import append_dims
from tld.errors import TLDError


@dataclass
class DynamicThreshold:
    """Imagen's dynamic thresholding (Saharia et al. 2022) of x0.

    Per sample, s = max(percentile of |x0|, floor); x0 is clipped to [-s, s] and scaled back into
    [-floor, floor]. floor = 1 is Imagen for [-1, 1] pixels; latents want their own typical range.
    """

    percentile: float = 0.995
    floor: float = 1.0

    def __post_init__(self):
        if not 0 < self.percentile <= 1 or self.floor <= 0:
            raise TLDError(
                f"dynamic threshold needs 0 < percentile <= 1 and floor > 0, got {self.percentile}, {self.floor}"
            )

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        s = torch.quantile(x0.float().abs().flatten(1), self.percentile, dim=1).clamp(min=self.floor)
        s = append_dims(s, x0.ndim).to(x0.dtype)
        return x0.clamp(-s, s) * (self.floor / s)


Threshold = float | DynamicThreshold | None
CFGSchedule = list[tuple[float, float]]


def parse_cfg_schedule(pieces: Any) -> CFGSchedule | None:
    """A guidance schedule as (sigma, scale) pieces, highest sigma first; None or empty is none.

    Accepts pairs ([[2, 4]]) or the CLI's text "SIGMA:SCALE[,SIGMA:SCALE...]" ("2:4,0.5:2"); the
    text "none" (any case) is no schedule too.
    """
    if pieces is None or pieces == [] or (isinstance(pieces, str) and pieces.strip().lower() in ("", "none")):
        return None
    given = pieces
    if isinstance(pieces, str):
        try:
            pieces = [tuple(float(v) for v in part.split(":")) for part in pieces.split(",")]
        except ValueError:
            pieces = None
    if not isinstance(pieces, list | tuple) or not all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in pieces
    ):
        raise TLDError(f"cfg schedule must be SIGMA:SCALE pieces such as '2:4,0.5:2', got {given!r}")
    out = sorted(((float(s), float(w)) for s, w in pieces), reverse=True)
    for sigma, scale in out:
        if not (sigma >= 0 and 0 <= scale < float("inf")):
            raise TLDError(f"cfg schedule needs sigma >= 0 and a finite scale >= 0, got {sigma:g}:{scale:g}")
    return out


def scheduled_scale(
    sigma: torch.Tensor, base: float | torch.Tensor, schedule: CFGSchedule | None
) -> float | torch.Tensor:
    """The guidance scale per row at noise level `sigma`: the first schedule piece whose sigma it
    reaches (highest first), else `base`."""
    if not schedule:
        return base
    scale = torch.as_tensor(base, dtype=torch.float32, device=sigma.device).expand(sigma.shape).clone()
    for threshold, value in reversed(schedule):  # lowest first, so higher pieces overwrite
        scale = torch.where(sigma >= threshold, torch.full_like(scale, value), scale)
    return scale


def apply_threshold(x0: torch.Tensor, threshold: Threshold) -> torch.Tensor:
    """Static clamp to [-threshold, threshold] for a number, dynamic thresholding for a DynamicThreshold."""
    if threshold is None:
        return x0
    if isinstance(threshold, DynamicThreshold):
        return threshold(x0)
    return x0.clamp(-float(threshold), float(threshold))


def _merge_args(cond: dict[str, Any], uncond: dict[str, Any], batch: int) -> dict[str, Any]:
    """Stack cond and uncond keyword arguments along the batch so both branches run in one call."""
    if set(cond) != set(uncond):
        raise TLDError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    merged = {}
    for key, c in cond.items():
        u = uncond[key]
        if isinstance(c, torch.Tensor) and isinstance(u, torch.Tensor):
            if c.shape != u.shape or c.shape[:1] != (batch,):
                raise TLDError(
                    f"cond[{key!r}] and uncond[{key!r}] must both have shape ({batch}, ...), "
                    f"got {tuple(c.shape)} and {tuple(u.shape)}"
                )
            merged[key] = torch.cat([c, u])
        elif not isinstance(c, torch.Tensor) and not isinstance(u, torch.Tensor) and c == u:
            merged[key] = c  # None or a plain option shared by both branches
        else:
            raise TLDError(
                f"cond[{key!r}] and uncond[{key!r}] must both be tensors or equal, got {c!r} and {u!r}"
            )
    return merged


class CFGDenoiser(nn.Module):
    """Classifier-free guidance: x0 = uncond + cfg_scale * (cond - uncond); cfg_scale = 1 is no guidance.

    ``schedule`` makes the scale depend on the noise level: (sigma, scale) pieces, highest sigma first;
    a row at noise level >= a piece's sigma (the first such piece) gets its scale, the rest
    `cfg_scale`. [(2, 4)] with cfg_scale 1.5 guides hard while the layout and colours form and
    lightly on the details (which strong guidance over-sharpens); [(hi, 1), (lo, w)] with cfg_scale
    1 is guidance in the limited interval [lo, hi) of Kynkaenniemi et al. (2024). Steps whose
    scale is 1 for every row skip the unconditional branch.

    ``rescale`` (Lin et al. 2023) blends in the guided x0 rescaled to the conditional x0's per-sample std,
    countering the over-saturation of high scales. ``threshold`` is applied to the final x0, so a sampler's
    step d = (x - x0) / sigma uses the thresholded x0.
    """

    def __init__(
        self,
        denoiser: Any,
        cfg_scale: float | torch.Tensor = 7.0,
        rescale: float = 0.0,
        threshold: Threshold = None,
        schedule: CFGSchedule | None = None,
    ):
        super().__init__()
        if not 0 <= rescale <= 1:
            raise TLDError(f"guidance rescale must be in [0, 1], got {rescale}")
        if threshold is not None and not isinstance(threshold, DynamicThreshold) and float(threshold) <= 0:
            raise TLDError(f"static threshold must be > 0, got {threshold}")
        self.inner = denoiser
        self.cfg_scale = cfg_scale
        self.rescale = rescale
        self.threshold = threshold
        self.schedule = parse_cfg_schedule(schedule)

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        round_sigma = getattr(self.inner, "round_sigma", None)
        return round_sigma(sigma) if callable(round_sigma) else sigma

    @staticmethod
    def _only_cond(uncond: dict[str, Any] | None, scale: float | torch.Tensor) -> bool:
        if uncond is None:
            return True
        return bool((scale == 1).all()) if isinstance(scale, torch.Tensor) else scale == 1

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: dict[str, Any] | None = None,
        uncond: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        cond = {} if cond is None else cond
        sigma = torch.as_tensor(sigma, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        scale = scheduled_scale(sigma, self.cfg_scale, self.schedule)
        if self._only_cond(uncond, scale):
            return apply_threshold(self.inner(x, sigma, **cond), self.threshold)
        merged = _merge_args(cond, uncond, x.shape[0])
        both = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **merged)
        x0_cond, x0_uncond = both.chunk(2)
        if isinstance(scale, torch.Tensor):
            scale = append_dims(scale.to(x.device, x.dtype), x.ndim)
        guided = x0_uncond + scale * (x0_cond - x0_uncond)
        if self.rescale > 0:
            std_ratio = x0_cond.flatten(1).std(1) / guided.flatten(1).std(1).clamp(min=1e-8)
            rescaled = guided * append_dims(std_ratio, x.ndim)
            guided = self.rescale * rescaled + (1 - self.rescale) * guided
        return apply_threshold(guided, self.threshold)
