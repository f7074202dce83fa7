"""What the HTTP API accepts and its limits: request bodies (pydantic) and the server's settings.

The fields only say what type a value has; whether a value makes sense (steps >= 1, a known sampler,
a size the model can make) is the pipeline's own check, so the API and Python callers get the same
answers. The server adds only its limits (`ApiConfig`), which keep one request from taking it down.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tld.errors import TLDError

TOKEN_ENV = "TLD_API_TOKEN"


@dataclass
class ApiConfig:
    """Server settings. `token` None = no auth; the limits bound the work a single request can ask for."""

    model_name: str = "bundled"
    token: str | None = None
    max_images: int = 4
    max_steps: int = 100
    max_size: int = 512
    max_pending: int = 64

    def __post_init__(self) -> None:
        for name in ("max_images", "max_steps", "max_size", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TLDError(f"{name} must be an integer >= 1, got {value!r}")
        if self.token is not None and not self.token.strip():
            raise TLDError("the API token must not be empty (leave it unset to turn auth off)")

    def limits(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k.startswith("max_")}


def token_from_env(token: str | None) -> str | None:
    """An explicit token wins; else $TLD_API_TOKEN; else None (auth off)."""
    return token if token is not None else os.environ.get(TOKEN_ENV) or None


class Settings(BaseModel):
    """Sampling settings shared by every endpoint; None takes the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what to draw")
    negative_prompt: str | None = Field(None, description="guide away from this instead of the empty prompt")
    cfg: float | None = Field(None, description="guidance scale (1 = none)")
    cfg_schedule: str | list[list[float]] | None = Field(
        None,
        description="guidance by noise level, [[sigma, scale], ...] or '2:4' (scale 4 while sigma >= 2, "
        "cfg below); [] or '' = a constant cfg; None = the model's (none when cfg is given)",
    )
    steps: int | None = Field(None, description="sampler steps")
    sampler: str | None = Field(None, description="e.g. dpmpp_2m, euler_ancestral, heun, ddim")
    schedule: str | None = Field(None, description="sigma schedule, e.g. tld, karras")
    seed: int | None = Field(
        None, description="seed of the first image, image k gets seed + k; None = random"
    )
    n: int = Field(1, description="number of images")
    response: Literal["png", "json"] = Field(
        "png", description="png: the image (a grid when n > 1); json: base64 PNGs with their settings"
    )

    def call_args(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline's calls."""
        names = ("cfg", "cfg_schedule", "steps", "sampler", "schedule", "seed", "negative_prompt")
        return {**{k: getattr(self, k) for k in names}, "num_images": self.n, "progress": False}


class GenerateRequest(Settings):
    """POST /generate: text to image."""

    width: int | None = Field(None, description="pixels; None = the size the model was trained at")
    height: int | None = Field(None, description="pixels; None = the size the model was trained at")


class InpaintForm(Settings):
    """POST /inpaint form fields (besides the `image` and `mask` files): white mask pixels are repainted."""

    # The form also carries the two files, which FastAPI hands over as separate parameters.
    model_config = ConfigDict(extra="ignore")

    feather: float = Field(0.0, description="soften the mask border (latent cells)")
    composite: bool = Field(False, description="paste the input's pixels over the kept region")
