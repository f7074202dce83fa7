"""Error vs steps of every deterministic sampler on Gaussian data, where the exact answer is known.

Data x0 ~ N(mu, s^2) has the exact denoiser D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the
probability-flow ODE carries x_T at sigma_T to mu + (x_T - mu) s / sqrt(s^2 + sigma_T^2). The table shows
the max error, network evaluations (NFE), the observed order log2(err_n / err_2n), and milliseconds per
call on a (4, 4, 32, 32) batch (sampler overhead only: the denoiser is a few elementwise ops).

    .venv/bin/python bench/samplers.py [--steps 8 16 32 64]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from tld.diffusion import get_sampler, get_sigmas_karras

MU, S, SIGMA_MIN, SIGMA_MAX = 0.3, 0.8, 0.002, 80.0
CASES = [
    ("euler", {}),
    ("heun", {}),
    ("dpm_2", {}),
    ("lms", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m_sde", {"eta": 0.0}),
    ("ddim", {}),
]


class GaussianDenoiser:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        sigma = sigma.view(-1, *([1] * (x.ndim - 1)))
        return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def run(name: str, opts: dict, steps: int, x_t: torch.Tensor) -> tuple[float, int, float]:
    denoiser = GaussianDenoiser()
    sigmas = get_sigmas_karras(steps, SIGMA_MIN, SIGMA_MAX).to(x_t.dtype)
    start = time.perf_counter()
    out = get_sampler(name)(denoiser, x_t, sigmas, disable=True, **opts)
    ms = (time.perf_counter() - start) * 1000
    exact = MU + (x_t - MU) * S / math.sqrt(S**2 + SIGMA_MAX**2)
    return (out - exact).abs().max().item(), denoiser.calls, ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    torch.manual_seed(0)
    x_t = MU + torch.randn(4, 4, 32, 32, dtype=torch.float64) * math.sqrt(S**2 + SIGMA_MAX**2)
    print(
        f"Gaussian data N({MU}, {S}^2), Karras schedule {SIGMA_MIN}..{SIGMA_MAX}, float64, batch (4, 4, 32, 32)"
    )
    print(f"{'sampler':<22}{'steps':>6}{'NFE':>6}{'max error':>12}{'order':>7}{'ms':>9}")
    for name, opts in CASES:
        label = name + ("(eta=0)" if opts else "")
        previous = None
        for steps in args.steps:
            err, nfe, ms = run(name, opts, steps, x_t)
            order = f"{math.log2(previous / err):.2f}" if previous else ""
            print(f"{label:<22}{steps:>6}{nfe:>6}{err:>12.3e}{order:>7}{ms:>9.1f}")
            previous = err


if __name__ == "__main__":
    main()
