"""What the HTTP API accepts and its limits: request bodies (pydantic) and the server's settings.

The fields say what type a value has (strictly: `"steps": "10"` and `"n": true` are refused) and refuse
what no request may carry (NaN, infinities, lone surrogates). Whether a value makes sense (steps >= 1, a
known sampler, a size the model can make) is the pipeline's own check, so the API and Python callers get
the same answers. The server adds its limits (`ApiConfig`), which bound the memory and time one request
can ask for; `check_limits` applies them before any work is queued.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tld.errors import TLDError

TOKEN_ENV = "TLD_API_TOKEN"
# Host headers (and browser Origins) the API answers by default: this machine's own names.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MiB = 1024 * 1024


@dataclass
class ApiConfig:
    """Server settings. `token` None = no auth; the limits bound the work a single request can ask for.

    `allowed_hosts`: Host header values (without the port) answered; "*" = any. `allowed_origins`:
    browser Origins (scheme://host[:port]) allowed besides the server's own; "*" = any.
    """

    model_name: str = "bundled"
    token: str | None = None
    max_images: int = 4
    max_steps: int = 100
    max_size: int = 512
    max_pending: int = 64
    max_prompt_chars: int = 1000
    max_schedule_pieces: int = 32
    max_cfg: float = 50.0
    max_feather: float = 16.0
    max_json_bytes: int = 64 * 1024
    max_upload_bytes: int = 8 * MiB
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name, value in self.limits().items():
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if not is_number or not (math.isfinite(value) and value > 0):
                raise TLDError(f"{name} must be a finite number > 0, got {value!r}")
            if not name.endswith(("_cfg", "_feather")) and not isinstance(value, int):
                raise TLDError(f"{name} must be an integer >= 1, got {value!r}")
        if self.token is not None and not self.token.strip():
            raise TLDError("the API token must not be empty (leave it unset to turn auth off)")
        self.allowed_hosts = tuple(h.strip().lower().strip("[]") for h in self.allowed_hosts if h.strip())
        self.allowed_origins = tuple(o.strip().lower().rstrip("/") for o in self.allowed_origins if o.strip())
        if not self.allowed_hosts:
            raise TLDError("allowed_hosts must name at least one host (or '*' for any)")

    def limits(self) -> dict[str, int | float]:
        return {k: v for k, v in asdict(self).items() if k.startswith("max_")}


def token_from_env(token: str | None) -> str | None:
    """An explicit token wins; else $TLD_API_TOKEN; else None (auth off)."""
    return token if token is not None else os.environ.get(TOKEN_ENV) or None


def _encodable(text: str | None) -> str | None:
    """Refuse text that is not valid Unicode (a lone surrogate fails in the tokenizer and the PNG)."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return text


class Settings(BaseModel):
    """Sampling settings shared by every endpoint; None takes the model's defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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

    _text = field_validator("prompt", "negative_prompt")(_encodable)

    def call_args(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline's calls."""
        names = ("cfg", "cfg_schedule", "steps", "sampler", "schedule", "seed", "negative_prompt")
        return {**{k: getattr(self, k) for k in names}, "num_images": self.n, "progress": False}


class GenerateRequest(Settings):
    """POST /generate: text to image."""

    width: int | None = Field(None, description="pixels; None = the size the model was trained at")
    height: int | None = Field(None, description="pixels; None = the size the model was trained at")


class InpaintForm(Settings):
    """POST /inpaint form fields (besides the `image` and `mask` files): white mask pixels are repainted.

    Form values arrive as text, so they are converted (lax), but unknown fields are refused.
    """

    feather: float = Field(0.0, description="soften the mask border (latent cells)")
    composite: bool = Field(False, description="paste the input's pixels over the kept region")


def check_limits(req: Settings, config: ApiConfig, width: int | None, height: int | None) -> None:
    """The server's own bounds on one request (the pipeline checks everything else), before any work."""
    for name in ("prompt", "negative_prompt"):
        text = getattr(req, name)
        if text is not None and len(text) > config.max_prompt_chars:
            raise TLDError(f"{name} must be at most {config.max_prompt_chars} characters, got {len(text)}")
    if req.n > config.max_images:
        raise TLDError(f"n must be at most {config.max_images} on this server, got {req.n}")
    if req.steps is not None and req.steps > config.max_steps:
        raise TLDError(f"steps must be at most {config.max_steps} on this server, got {req.steps}")
    for name, value in (("width", width), ("height", height)):
        if value is not None and value > config.max_size:
            raise TLDError(f"{name} must be at most {config.max_size} pixels on this server, got {value}")
    if req.cfg is not None and abs(req.cfg) > config.max_cfg:
        raise TLDError(f"cfg must be at most {config.max_cfg:g} on this server, got {req.cfg:g}")
    _check_schedule(req.cfg_schedule, config)
    feather = getattr(req, "feather", 0.0)
    if not 0 <= feather <= config.max_feather:
        raise TLDError(f"feather must be in [0, {config.max_feather:g}] latent cells, got {feather:g}")


def _check_schedule(schedule: str | list[list[float]] | None, config: ApiConfig) -> None:
    if isinstance(schedule, str):
        # Bounded before it is split: a piece is at least 3 characters ("2:4") plus a comma.
        if len(schedule) > 32 * config.max_schedule_pieces:
            raise TLDError(
                f"cfg_schedule must be at most {32 * config.max_schedule_pieces} characters, got {len(schedule)}"
            )
        pieces = [p.split(":") for p in schedule.split(",")] if schedule.strip() else []
    else:
        pieces = schedule or []
    if len(pieces) > config.max_schedule_pieces:
        raise TLDError(
            f"cfg_schedule must have at most {config.max_schedule_pieces} pieces, got {len(pieces)}"
        )
    for piece in pieces:
        values = []
        for v in piece:
            try:
                values.append(float(v))
            except (TypeError, ValueError):
                return  # the pipeline's own parser names the malformed piece
        if not all(math.isfinite(v) for v in values):
            raise TLDError("cfg_schedule values must be finite numbers")
        if len(values) == 2 and abs(values[1]) > config.max_cfg:
            raise TLDError(f"cfg_schedule scales must be at most {config.max_cfg:g} on this server")
