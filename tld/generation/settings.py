"""The sampling settings a model folder recommends and every call may override, and the pixel size a
model draws by default."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tld.diffusion import get_sampler
from tld.diffusion.guidance import parse_cfg_schedule
from tld.errors import check_int, check_number, from_dict


@dataclass
class SamplingDefaults:
    """Sampling settings; a model folder stores its recommended ones, every call may override them.

    `schedule=None` means "tld" for the tld parameterization and "karras" otherwise.
    `sharp_f`/`bright_f` are the original TLD's latent nudges, added to channels 3 and 0 of the final
    latent. `original_init` starts from unit noise at the network input, as the original sampler
    does, instead of k-diffusion's `sigma_max * noise`. `threshold` clamps the guided x0: a number is
    a static clamp, {"percentile": 0.995, "floor": 1.0} Imagen's dynamic thresholding (None = off);
    `cfg_rescale` is the guidance rescale.
    `cfg_schedule` makes guidance depend on the noise level: [[sigma, scale], ...] pieces (highest
    sigma first win), `cfg` below them (tld.diffusion.guidance.CFGDenoiser). A call that sets `cfg`
    without a `cfg_schedule` gets that constant scale (the model's schedule is dropped).
    """

    cfg: float = 7.0
    steps: int = 15
    sampler: str = "dpmpp_2m"
    schedule: str | None = None
    schedule_opts: dict[str, Any] = field(default_factory=dict)
    sharp_f: float = 0.0
    bright_f: float = 0.0
    original_init: bool = False
    threshold: float | dict[str, float] | None = None
    cfg_rescale: float = 0.0
    cfg_schedule: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingDefaults:
        return from_dict(cls, d, "sampling settings")

    def updated(self, **changes: Any) -> SamplingDefaults:
        """A copy with the given (non-None) settings replaced; unknown names are an error."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "cfg" in changes and "cfg_schedule" not in changes:
            changes["cfg_schedule"] = None  # an explicit cfg alone is a constant scale
        return SamplingDefaults.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        check_number(self.cfg, "cfg", minimum=0)
        check_int(self.steps, "steps", 1)
        get_sampler(self.sampler)  # names the valid samplers when this one is unknown
        schedule = parse_cfg_schedule(self.cfg_schedule)
        self.cfg_schedule = None if schedule is None else [list(piece) for piece in schedule]

    def guided(self) -> bool:
        """Whether any step guides (needs the unconditional branch)."""
        return self.cfg != 1 or any(scale != 1 for _, scale in self.cfg_schedule or [])


def default_schedule(parameterization: str) -> str:
    """The schedule a call without one gets: the original's own for `tld`, Karras's otherwise."""
    return "tld" if parameterization == "tld" else "karras"


def default_size(latent_hw: Sequence[int], downsample_factor: int) -> tuple[int, int]:
    """(height, width) in pixels of a model trained on `latent_hw` latents of a VAE with this factor.

    For a pipeline: `default_size(pipe.denoiser.config.latent_size, pipe.vae.downsample_factor)`,
    also `pipe.default_size`.
    """
    h, w = latent_hw
    return int(h) * downsample_factor, int(w) * downsample_factor
