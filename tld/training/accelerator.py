"""The training run's `Accelerator`: devices, processes, mixed precision and trackers (accelerate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tld.training.config import TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator


def forget_other_precision(mixed_precision: str) -> None:
    """Let a second run in this process use another `mixed_precision`.

    accelerate keeps one AcceleratorState per process and refuses an Accelerator with a different
    precision ("restart your runtime"): `tld recipe emoji` trains its fp32 phases, then its bf16 polish
    phase, in one process, and a notebook may do the same. The finished run's state is forgotten; the
    PartialState (devices, process group) is kept.
    """
    from accelerate.state import AcceleratorState

    previous = AcceleratorState._shared_state.get("_mixed_precision")
    if previous is not None and str(previous) != mixed_precision:
        AcceleratorState._reset_state()


def build_accelerator(config: TrainConfig, trackers: list[str]) -> Accelerator:
    """The run's Accelerator with `config.mixed_precision`, logging to `trackers` (tensorboard, wandb;
    none when empty) with `output_dir` as their project folder."""
    from accelerate import Accelerator

    forget_other_precision(config.mixed_precision)
    return Accelerator(
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(config.output_dir),
        # Without cpu=True accelerate ignores torchrun's WORLD_SIZE on machines without a GPU.
        cpu=not torch.cuda.is_available(),
    )
