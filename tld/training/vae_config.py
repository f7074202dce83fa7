"""Configuration of the VAE trainer (`tld train-vae`): dataclasses that round-trip through JSON/YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tld.errors import TLDError


@dataclass
class VAEModelConfig:
    """A diffusers AutoencoderKL built from scratch; len(block_out_channels) - 1 halvings of the side."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    mid_attention: bool = False  # the mid-block self-attention; costly on a CPU, little gain at 64 px

    def diffusers_kwargs(self, image_size: int) -> dict[str, Any]:
        n = len(self.block_out_channels)
        return {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": image_size,
            "mid_block_add_attention": self.mid_attention,
        }


@dataclass
class VAELossConfig:
    l1: float = 1.0  # weight of the mean absolute error in [-1, 1] pixel units
    mse: float = 0.0  # weight of the mean squared error
    kl: float = 1e-6  # weight of the KL to N(0, I), summed over latent elements, averaged over images


@dataclass
class VAETrainConfig:
    shards: list[str] = field(default_factory=list)  # webdataset shard folders (any source)
    image_size: int = 64
    val_holdout: int = 256  # images kept out of training for the reconstruction PSNR
    flip: bool = True  # random horizontal flips (reconstruction does not care about orientation)
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    lr: float = 1e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05  # cosine decay to lr * min_lr_ratio at the last step
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    steps: int = 5000
    batch_size: int = 32
    seed: int = 0
    device: str | None = None  # default: cuda when available
    mixed_precision: str = "no"  # "no" | "bf16" (autocast; weights stay float32)
    log_every: int = 50
    eval_every: int = 500  # held-out PSNR + reconstruction grid; 0: only at the end
    checkpoint_every: int = 500
    keep_last: int = 2
    output_dir: str = "runs/vae"
    tracker: str = "tensorboard"  # "tensorboard" | "none"
    progress: bool = True
    resume: str | None = None  # "latest", "auto" (latest if any) or a step_<N> folder

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAETrainConfig:
        from tld.training.config import _build

        return _build(cls, d, "")

    def validate(self) -> None:
        """Every bad setting as one line, before any data is read."""
        if isinstance(self.shards, str):
            self.shards = [self.shards]
        if not self.shards:
            raise TLDError("train-vae needs at least one shard folder (shards: [...] or --set shards=DIR)")
        factor = 2 ** (len(self.model.block_out_channels) - 1)
        if self.image_size < 8 or self.image_size % factor:
            raise TLDError(
                f"image_size must be >= 8 and a multiple of {factor} (the VAE's downsampling), "
                f"got {self.image_size}"
            )
        if any(c % self.model.norm_num_groups for c in self.model.block_out_channels):
            raise TLDError(
                f"every block_out_channels entry must be a multiple of norm_num_groups="
                f"{self.model.norm_num_groups}, got {self.model.block_out_channels}"
            )
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise TLDError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_holdout < 1:
            raise TLDError(f"val_holdout must be >= 1 (PSNR needs held-out images), got {self.val_holdout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise TLDError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mixed_precision not in ("no", "bf16"):
            raise TLDError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if min(self.loss.l1, self.loss.mse, self.loss.kl) < 0 or self.loss.l1 + self.loss.mse <= 0:
            raise TLDError("loss weights must be >= 0 with l1 + mse > 0")
