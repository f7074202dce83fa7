"""DenoiserConfig: every number that fixes the denoiser's shape, round-tripping through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tld.errors import TLDError, from_dict
from tld.model.files import CONFIG_NAME, read_json

NORM_POSITIONS = ("pre", "post")
# "split": head k owns channels [k*d, (k+1)*d). "interleaved": head k owns channels k, k+h, k+2h, ...
# (the original TLD rearranges "(d h)"), kept so converted checkpoints compute the same function.
HEAD_LAYOUTS = ("split", "interleaved")


@dataclass
class DenoiserConfig:
    """Shape of the transformer denoiser. The defaults are the original TLD 101M model (pre-norm).

    `latent_size` is the (height, width) the positional embedding is trained at; other sizes that
    are multiples of `patch_size` work by interpolating it.
    """

    in_channels: int = 4
    out_channels: int = 4
    latent_size: tuple[int, int] = (32, 32)
    patch_size: int = 2
    embed_dim: int = 768
    depth: int = 12
    num_heads: int | None = None  # None: embed_dim // 64, as the original
    cross_heads: int | None = None  # None: num_heads (the original used 4)
    mlp_ratio: int = 4
    dropout: float = 0.0
    noise_embed_dim: int = 256
    text_dim: int = 768  # 0: no text conditioning (class-conditional models)
    num_classes: int = 0  # > 0 adds a label table with a null class at index num_classes
    extra_cond_dim: int = 0  # > 0 adds an extra conditioning vector (augmentation levels)
    learned_null: bool = False  # learn the null text vector instead of using zeros
    norm_position: str = "pre"  # "post" reproduces the original blocks
    final_norm: bool = True  # pre-norm only: a LayerNorm before the output (upstream TLD main has none)
    head_layout: str = "split"
    # Width of the flattened patch before projection; None: in_channels * patch_size**2. Inpainting
    # models grown from a base keep the base's width so the grown model starts equal to it.
    patch_dim: int | None = None
    # Trunk options of the quality issue (docs/model.md): all off reproduces the TLD network.
    adaln: bool = False  # DiT's adaLN-Zero modulation by the noise level + pooled condition (pre-norm)
    skips: bool = False  # U-ViT long skips: block i's output feeds block depth-1-i (first half -> last)
    qk_norm: bool = False  # RMS-normalised queries and keys in self- and cross-attention

    def __post_init__(self) -> None:
        if isinstance(self.latent_size, int):
            self.latent_size = (self.latent_size, self.latent_size)
        self.latent_size = tuple(int(s) for s in self.latent_size)
        if len(self.latent_size) != 2:
            raise TLDError(f"latent_size must be an int or [height, width], got {list(self.latent_size)}")
        for name in ("in_channels", "out_channels", "patch_size", "embed_dim", "depth", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise TLDError(f"DenoiserConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.patch_dim is not None and self.patch_dim < 1:
            raise TLDError(f"DenoiserConfig.patch_dim must be >= 1 or None, got {self.patch_dim}")
        if self.noise_embed_dim < 2 or self.noise_embed_dim % 2:
            raise TLDError(f"noise_embed_dim must be an even number >= 2, got {self.noise_embed_dim}")
        for name in ("text_dim", "num_classes", "extra_cond_dim"):
            if getattr(self, name) < 0:
                raise TLDError(f"DenoiserConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.norm_position not in NORM_POSITIONS:
            raise TLDError(f"norm_position must be one of {NORM_POSITIONS}, got {self.norm_position!r}")
        if self.head_layout not in HEAD_LAYOUTS:
            raise TLDError(f"head_layout must be one of {HEAD_LAYOUTS}, got {self.head_layout!r}")
        if self.adaln and self.norm_position != "pre":
            raise TLDError("adaln=True needs norm_position='pre' (adaLN modulates the pre-norm inputs)")
        if not 0.0 <= self.dropout < 1.0:
            raise TLDError(f"dropout must be in [0, 1), got {self.dropout}")
        for heads, name in ((self.heads, "num_heads"), (self.cross_attn_heads, "cross_heads")):
            if heads < 1 or self.embed_dim % heads:
                raise TLDError(
                    f"{name}={heads} must be >= 1 and divide embed_dim={self.embed_dim} "
                    f"(None means embed_dim // 64)"
                )
        for side, size in zip(("height", "width"), self.latent_size):
            if size % self.patch_size:
                raise TLDError(f"latent {side} {size} is not divisible by patch_size {self.patch_size}")

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_heads is not None else max(1, self.embed_dim // 64)

    @property
    def cross_attn_heads(self) -> int:
        return self.cross_heads if self.cross_heads is not None else self.heads

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (rows, cols) at the trained latent size."""
        return self.latent_size[0] // self.patch_size, self.latent_size[1] // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latent_size"] = list(self.latent_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenoiserConfig:
        return from_dict(cls, d, "DenoiserConfig keys")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DenoiserConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> DenoiserConfig:
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> DenoiserConfig:
        """`tiny` (tests), `small` (quick experiments) or `101m` (the original model's shape)."""
        key = name.lower()
        if key not in PRESETS:
            raise TLDError(f"unknown denoiser preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**PRESETS[key])

    @classmethod
    def load(cls, path: str | Path) -> DenoiserConfig:
        """Read a config from a preset name, a JSON file, or a model folder's config.json."""
        if str(path).lower() in PRESETS:
            return cls.preset(str(path))
        p = Path(path)
        if p.is_dir():
            p = p / CONFIG_NAME
        if not p.is_file():
            raise TLDError(
                f"expected a preset ({', '.join(sorted(PRESETS))}), a config JSON file or a model "
                f"folder, got {str(path)!r} (no such file)"
            )
        data = read_json(p)
        # A model folder's config.json nests the denoiser config under "denoiser".
        if isinstance(data, dict) and isinstance(data.get("denoiser"), dict):
            data = data["denoiser"]
        return cls.from_dict(data)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        latent_size=(8, 8), patch_size=2, embed_dim=32, depth=2, num_heads=2, noise_embed_dim=16, text_dim=16
    ),
    "small": dict(embed_dim=384, depth=8, num_heads=6),
    "101m": {},
}
