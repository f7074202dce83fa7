"""Training configuration: nested dataclasses that round-trip through JSON and YAML.

`--set a.b=value` overrides address fields by dotted path; values are parsed as YAML scalars so
`--set steps=200`, `--set optim.lr=3e-4` and `--set data.flip=true` all get the right type.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from tld.common import first_line
from tld.data.balance import BalanceConfig
from tld.errors import TLDError, check_int, check_keys, check_number


@dataclass
class DataConfig:
    path: str = ""
    condition: str = "text"  # "text" | "class" | "none"
    text: str = "auto"  # "auto" | "pooled" | "tokens": which text embedding the model sees
    flip: bool = False  # random horizontal flips of the latents
    num_workers: int = 0
    check_finite: bool = True  # check each batch for NaN/Inf as it is read (parts were checked at encode)
    # repeat rows whose caption starts with a rare word (e.g. colour words), see tld/data/balance.py
    balance: BalanceConfig = field(default_factory=BalanceConfig)


@dataclass
class DiffusionConfig:
    parameterization: dict[str, Any] = field(default_factory=lambda: {"name": "tld"})
    density: dict[str, Any] = field(default_factory=lambda: {"name": "tld_beta"})
    cfg_dropout: float = 0.15  # probability a row's condition is replaced by the null condition
    # Min-SNR loss weighting (Hang et al. 2023): weight on the x0 error min(1/sigma^2, gamma); None = off
    min_snr_gamma: float | None = None


@dataclass
class MaskConfig:
    """Masked training (MaskDiT, Zheng et al. 2023; MicroDiT, Sehwag et al. 2024): the blocks see only
    a random share of the patch tokens, the loss counts the kept patches, and the run ends unmasked."""

    ratio: float = 0.0  # share of patch tokens dropped per image; 0 disables masking
    until: float = 0.9  # masked for the first `until` of the steps, unmasked after

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise TLDError(f"mask.ratio must be in [0, 1), got {self.ratio}")
        if not 0.0 <= self.until <= 1.0:
            raise TLDError(f"mask.until must be in [0, 1], got {self.until}")


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
class LoraConfig:
    """LoRA fine-tuning (docs/adapters.md): rank 0 trains every weight; rank > 0 trains only low-rank
    adapters on the block linears of the frozen `init_from` model and writes output_dir/adapter."""

    rank: int = 0
    alpha: float | None = None  # the update is scaled by alpha / rank; None = rank (scale 1)
    targets: list[str] = field(default_factory=lambda: ["attn.qkv", "cross.kv", "ffn.fc1", "ffn.fc2"])
    dropout: float = 0.0


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
    # More EMA lengths tracked beside `decay` (same warmup, same steps), one float32 copy of the weights
    # each; checkpoints hold them as ema_<decay>.safetensors and `tld export --ema-decay D` picks one.
    extra_decays: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for decay in self.extra_decays:
            if not 0.0 <= decay < 1.0:
                raise TLDError(f"ema.extra_decays: each decay must be in [0, 1), got {decay}")
            if decay == self.decay:
                raise TLDError(f"ema.extra_decays: {decay} is ema.decay already; list only other decays")
        if len(set(self.extra_decays)) != len(self.extra_decays):
            raise TLDError(f"ema.extra_decays holds a decay twice: {self.extra_decays}")

    def ramp_warning(self, steps: int) -> str | None:
        """A one-line warning when the warmup ramp caps some decays for the whole run of `steps` steps.

        min(d, (1 + n) / (10 + n)) is below d until n = (10d - 1) / (1 - d): such a decay never takes
        effect, and two or more such decays give bit-identical averages (EMA lengths compared that way
        compare nothing).
        """
        if not self.warmup:
            return None
        n = max(steps - self.start_step, 0)
        ramp = (1.0 + n) / (10.0 + n)
        capped = sorted(d for d in (self.decay, *self.extra_decays) if d > ramp)
        if not capped:
            return None
        same = "; they will be bit-identical" if len(capped) > 1 else ""
        return (
            f"[ema] warning: the warmup ramp (1 + n) / (10 + n) reaches only {ramp:.5f} by step {steps}, so "
            f"EMA decay(s) {capped} never take effect{same} (set ema.warmup: false to compare EMA lengths)"
        )


@dataclass
class SampleConfig:
    every: int = 1000  # 0 disables sample grids
    steps: int = 10
    sampler: str = "dpmpp_2m"
    schedule: str | None = None  # None: the parameterization's own (tld for tld, karras otherwise)
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
    mask: MaskConfig = field(default_factory=MaskConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
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
    cpu_kernels: str = "auto"  # while training on the CPU: auto|onednn|blas|off (tld.model.cpu)
    log_every: int = 50
    tracker: str = "tensorboard"  # "tensorboard" | "wandb" | "none"
    checkpoint_every: int = 1000  # 0: only the final checkpoint
    keep_last: int = 3
    progress: bool = True
    resume: str | None = None  # "latest" (newest complete checkpoint), "auto" (latest if any) or a folder
    resume_with_changes: bool = False  # resume although settings differ from the checkpoint's (inexact)

    def __post_init__(self) -> None:
        # Values that would crash deep inside training (or train nothing and exit 0) stop here.
        for key, minimum in _INT_MINIMUMS.items():
            check_int(_get(self, key), key, minimum)
        for key, (low, high) in _NUMBER_RANGES.items():
            value = _get(self, key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TLDError(f"{key} must be a finite number, got {value}")
            check_number(value, key, low, high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d, "")

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if path.suffix in (".yaml", ".yml") else None
        path.write_text(text if text is not None else json.dumps(self.to_dict(), indent=2) + "\n")


_INT_MINIMUMS = {
    "steps": 1,
    "batch_size": 1,
    "seed": 0,
    "log_every": 1,
    "checkpoint_every": 0,
    "keep_last": 0,
    "data.num_workers": 0,
    "optim.grad_accum": 1,
    "optim.warmup_steps": 0,
    "sample.every": 0,
    "fid.every": 0,
    "lora.rank": 0,
}
_NUMBER_RANGES = {
    "optim.lr": (0.0, None),
    "optim.weight_decay": (0.0, None),
    "optim.min_lr_ratio": (0.0, 1.0),
    "optim.grad_clip": (0.0, None),
    "diffusion.cfg_dropout": (0.0, 1.0),
    "ema.decay": (0.0, 1.0),
}


def _get(config: Any, key: str) -> Any:
    for part in key.split("."):
        config = getattr(config, part)
    return config


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise TLDError(f"config section {prefix or '<root>'!r} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    where = f" in {prefix!r}" if prefix else ""
    check_keys(d, known, "unknown config keys {unknown}" + where + "; known keys are {known}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        default = getattr(cls(), name) if name in known else None
        if is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the field's declared type, or a one-line TLDError naming the setting."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0], key) if len(rest) == 1 else value
    if hint in (int, float):
        return _number(value, hint, key)
    if hint is bool and not isinstance(value, bool):
        raise TLDError(f"config key {key!r} must be true or false, got {value!r}")
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TLDError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    if origin is list:
        if not isinstance(value, list):
            raise TLDError(f"config key {key!r} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict and not isinstance(value, dict):
        raise TLDError(f"config key {key!r} must be a mapping, got {value!r}")
    return value


def _number(value: Any, kind: type, key: str) -> int | float:
    """An int or a finite float; YAML 1.1 reads "3e-4" as a string, so numeric strings are parsed."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        what = "an integer" if kind is int else "a finite number"
        raise TLDError(f"config key {key!r} must be {what}, got {value!r}")
    if kind is float:
        return float(number)
    if number != int(number):
        raise TLDError(f"config key {key!r} must be an integer, got {value!r}")
    return int(number)


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
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TLDError(f"cannot parse {p}: {first_line(exc)}") from None
        if not isinstance(data, dict):
            raise TLDError(f"config file {p} must hold a mapping of settings, got a {type(data).__name__}")
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
