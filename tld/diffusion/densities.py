"""Training sigma densities: each is a small callable ``density(n, generator=None, device="cpu") -> (n,)``.

They are dataclasses so a training config can store them as JSON (``to_dict`` / ``get_density(**d)``).
Random numbers are drawn on the CPU from ``generator`` and then moved, so a seed gives the same sigmas
on every device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from tld.diffusion.checks import check_choice, check_options, check_sigma_range
from tld.errors import TLDError

# t = 1 would be sigma = inf and t = 0 makes eps targets undefined; Beta/uniform draws are kept inside.
T_EPS = 1e-4


def _uniform(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _t_to_sigma(t: torch.Tensor, device) -> torch.Tensor:
    t = t.clamp(T_EPS, 1 - T_EPS)
    return (t / (1 - t)).float().to(device)


@dataclass
class Density:
    name: ClassVar[str] = ""

    def __call__(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass
class TLDBeta(Density):
    """The original TLD density: t ~ Beta(a, b) (default 1, 2.5, favouring low noise), sigma = t / (1 - t)."""

    name: ClassVar[str] = "tld_beta"
    a: float = 1.0
    b: float = 2.5

    def __post_init__(self):
        if self.a <= 0 or self.b <= 0:
            raise TLDError(f"Beta density needs a > 0 and b > 0, got a={self.a}, b={self.b}")

    def __call__(self, n, generator=None, device="cpu"):
        # torch.distributions.Beta takes no generator; X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) is
        # Beta(a, b), and the (private but stable) _standard_gamma does take one, keeping seeds reproducible.
        x = torch._standard_gamma(torch.full((n,), self.a, dtype=torch.float64), generator=generator)
        y = torch._standard_gamma(torch.full((n,), self.b, dtype=torch.float64), generator=generator)
        return _t_to_sigma(x / (x + y), device)


@dataclass
class LogNormal(Density):
    """EDM's training density: log sigma ~ N(p_mean, p_std^2)."""

    name: ClassVar[str] = "lognormal"
    p_mean: float = -1.2
    p_std: float = 1.2

    def __call__(self, n, generator=None, device="cpu"):
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        return (self.p_mean + self.p_std * z).exp().float().to(device)


@dataclass
class LogLogistic(Density):
    """log sigma ~ Logistic(loc, scale) truncated to [sigma_min, sigma_max] (sampled by inverse CDF).

    The default scale 0.66 gives the same spread as EDM's lognormal (std = scale * pi / sqrt(3) ~ 1.2).
    """

    name: ClassVar[str] = "loglogistic"
    loc: float = -1.2
    scale: float = 0.66
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        check_sigma_range(self.sigma_min, self.sigma_max)
        if self.scale <= 0:
            raise TLDError(f"loglogistic scale must be > 0, got {self.scale}")

    def _cdf(self, sigma: float) -> float:
        return 1 / (1 + math.exp(-(math.log(sigma) - self.loc) / self.scale))

    def __call__(self, n, generator=None, device="cpu"):
        lo, hi = self._cdf(self.sigma_min), self._cdf(self.sigma_max)
        u = (lo + (hi - lo) * _uniform(n, generator)).clamp(1e-12, 1 - 1e-12)
        log_sigma = self.loc + self.scale * (u.log() - (-u).log1p())
        return log_sigma.exp().clamp(self.sigma_min, self.sigma_max).float().to(device)


@dataclass
class UniformT(Density):
    """t ~ U(t_min, t_max) on the TLD interpolant, sigma = t / (1 - t)."""

    name: ClassVar[str] = "uniform_t"
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self):
        if not 0 <= self.t_min < self.t_max <= 1:
            raise TLDError(
                f"uniform_t needs 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}"
            )

    def __call__(self, n, generator=None, device="cpu"):
        t = self.t_min + (self.t_max - self.t_min) * _uniform(n, generator)
        return _t_to_sigma(t, device)


@dataclass
class LogitNormal(Density):
    """SD3's logit-normal density over t (Esser et al. 2024, eq. 19): t = sigmoid(m + s * z), z ~ N(0, 1);
    sigma = t / (1 - t). m = 0, s = 1 was the best of their rectified-flow runs."""

    name: ClassVar[str] = "logit_normal"
    m: float = 0.0
    s: float = 1.0

    def __post_init__(self):
        if not self.s > 0:
            raise TLDError(f"logit_normal needs s > 0, got s={self.s}")

    def __call__(self, n, generator=None, device="cpu"):
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        return _t_to_sigma(torch.sigmoid(self.m + self.s * z), device)


@dataclass
class ModeDensity(Density):
    """SD3's mode sampling with heavy tails (eq. 20): t = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1).
    s = 0 is uniform; s > 0 puts more weight on the middle of the path (s = 1.29 in the paper)."""

    name: ClassVar[str] = "mode"
    s: float = 1.29

    def __post_init__(self):
        if not -1 <= self.s <= 2 / (math.pi - 2):
            raise TLDError(f"mode density needs -1 <= s <= {2 / (math.pi - 2):.4f}, got s={self.s}")

    def __call__(self, n, generator=None, device="cpu"):
        u = _uniform(n, generator)
        t = 1 - u - self.s * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)
        return _t_to_sigma(t, device)


@dataclass
class DiscreteDensity(Density):
    """A uniformly drawn discrete timestep of an eps/v model, returned as its sigma (DDPM training)."""

    name: ClassVar[str] = "discrete"
    sigmas: list[float] = field(default_factory=list)

    def __post_init__(self):
        if len(self.sigmas) < 1:
            raise TLDError(
                "discrete density needs the model's sigmas (e.g. param.default_density()), got none"
            )

    def __call__(self, n, generator=None, device="cpu"):
        idx = torch.randint(len(self.sigmas), (n,), generator=generator)
        return torch.tensor(self.sigmas, dtype=torch.float64)[idx].float().to(device)


DENSITIES: dict[str, type[Density]] = {
    cls.name: cls
    for cls in (TLDBeta, LogNormal, LogLogistic, UniformT, LogitNormal, ModeDensity, DiscreteDensity)
}


def get_density(name: str, **kwargs: Any) -> Density:
    """Build a training density by name; ``get_density(**density.to_dict())`` round-trips.

    ``discrete`` also accepts ``param=`` (an eps/v parameterization) instead of ``sigmas=``.
    """
    cls = DENSITIES[check_choice(name, DENSITIES, "density")]
    if name == "discrete" and "param" in kwargs:
        kwargs["sigmas"] = kwargs.pop("param").sigmas.tolist()
    valid = list(cls.__dataclass_fields__)
    check_options(kwargs, valid, f"density {name!r}")
    return cls(**kwargs)
