"""Training configuration: nested dataclasses that round-trip through JSON and YAML.

`--set a.b=value` overrides address fields by dotted path; values are parsed as YAML scalars so
`--set steps=200`, `--set optim.lr=3e-4` and `--set data.flip=true` all get the right type.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from tld.common import first_line
from tld.data.balance import BalanceConfig
from tld.errors import TLDError, check_keys


@dataclass
class DataConfig:
    path: str = ""
    condition: str = "text"  # "text" | "class" | "none"
    text: str = "auto"  # "auto" | "pooled" | "tokens": which text embedding the model sees
    flip: bool = False  # random horizontal flips of the latents
    num_workers: int = 0
    check_finite: bool = True  # scan latents/embeddings for NaN/Inf at start (chunked, memmap-friendly)
    # repeat rows whose caption starts with a rare word (e.g. colour words), see tld/data/balance.py
    balance: BalanceConfig = field(default_factory=BalanceConfig)


@dataclass
class DiffusionConfig:
    parameterization: dict[str, Any] = field(default_factory=lambda: {"name": "tld"})
    density: dict[str, Any] = field(default_factory=lambda: {"name": "tld_beta"})
    cfg_dropout: float = 0.15  # probability a row's condition is replaced by the null condition


@dataclass
class AugmentConfig:
    """Non-leaky augmentation: the applied transform is fed to the model via `extra_cond`."""

    prob: float = 0.0  # 0 disables augmentation conditioning altogether
    flip: bool = True
    rotate: bool = True
    max_shift: int = 2  # integer latent-pixel shift (circular)


@dataclass
class InpaintConfig:
    """Train a model that also sees (masked latent, mask) as `concat` channels."""

    enabled: bool = False
    box: float = 0.5  # probabilities of the mask kinds; renormalised
    border: float = 0.25
    full: float = 0.15
    none: float = 0.1


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" | "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    grad_accum: int = 1


@dataclass
class EMAConfig:
    decay: float = 0.999
    warmup: bool = True  # decay ramps up as min(decay, (1 + step) / (10 + step))
    start_step: int = 0


@dataclass
class SampleConfig:
    every: int = 1000  # 0 disables sample grids
    steps: int = 10
    sampler: str = "dpmpp_2m"
    schedule: str = "tld"
    cfg: float = 4.0
    seed: int = 0
    num: int = 8  # at most this many validation prompts
    vae: str | None = None  # VAE folder/hub id to decode samples; default: the dataset's meta.json


@dataclass
class FIDConfig:
    """FID of EMA samples during training (tld.training.fid_eval); off while `every` is 0."""

    every: int = 0  # steps between evaluations; > 0 needs `reference`
    num: int = 250  # generated images per evaluation
    reference: str = ""  # shard or image folder of real images
    reference_num: int = 1000  # its first N images (fewer if it holds fewer); features cached
    extractor: str = "efficientnet-lite0"  # "efficientnet-lite0" | "inception" | "classifier"
    classifier: str | None = None  # folder from `tld eval train-classifier` (extractor "classifier")
    sampler: str = "dpmpp_2m"
    schedule: str = "karras"
    steps: int = 15
    cfg: float = 2.0
    seed: int = 0  # image k: noise seed + k, condition of a fixed seeded draw of training rows
    batch_size: int = 50
    vae: str | None = None  # VAE folder/hub id to decode samples; default: the dataset's meta.json
    cache_dir: str | None = None  # reference features; default $TLD_EVAL_CACHE or ~/.cache/tld/eval


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model_preset: str = "small"
    model: dict[str, Any] = field(default_factory=dict)  # DenoiserConfig overrides on top of the preset
    init_from: str | None = None  # model folder or original TLD checkpoint to fine-tune
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    fid: FIDConfig = field(default_factory=FIDConfig)
    output_dir: str = "runs/tld"
    steps: int = 10000
    batch_size: int = 64  # per device and micro-step; effective = batch_size * devices * grad_accum
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    compile: bool = False
    grad_checkpointing: bool = False  # recompute blocks in the backward pass: less memory, more compute
    log_every: int = 50
    tracker: str = "tensorboard"  # "tensorboard" | "wandb" | "none"
    checkpoint_every: int = 1000  # 0: only the final checkpoint
    keep_last: int = 3
    progress: bool = True
    resume: str | None = None  # "latest" (newest complete checkpoint), "auto" (latest if any) or a folder

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d, "")

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yaml", ".yml") else None
        path.write_text(text if text is not None else json.dumps(self.to_dict(), indent=2) + "\n")


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise TLDError(f"config section {prefix or '<root>'!r} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    where = f" in {prefix!r}" if prefix else ""
    check_keys(d, known, "unknown config keys {unknown}" + where + "; known keys are {known}")
    kwargs = {}
    for name, value in d.items():
        default = getattr(cls(), name) if name in known else None
        if is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, key: str) -> Any:
    # YAML 1.1 reads "3e-4" as a string; numbers are what numeric fields need.
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            return (
                type(default)(float(value)) if isinstance(default, int) and "." not in value else float(value)
            )
        except ValueError:
            raise TLDError(f"config key {key!r} must be a number, got {value!r}") from None
    return value


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, cls: type = None
) -> Any:
    """Read a JSON/YAML config (or start from defaults) and apply `key.path=value` overrides.

    `cls` is the config dataclass to build (TrainConfig by default; the VAE trainer passes its own)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise TLDError(f"config file {p} not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise TLDError(f"cannot parse {p}: {first_line(exc)}") from None
    for item in overrides or []:
        apply_override(data, item)
    return _build(cls or TrainConfig, data, "")


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` inside a nested dict, creating sections as needed."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise TLDError(f"override must look like key.path=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TLDError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
