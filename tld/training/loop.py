"""`train(config)`: the accelerate training loop (EMA, checkpoints, exact resume, samples, logging)."""

from __future__ import annotations

import itertools
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tld.data import LatentDataset, StepBatches, derive_seed, step_loader
from tld.data.balance import balanced_repeats
from tld.diffusion.densities import Density
from tld.diffusion.parameterizations import Parameterization
from tld.encoders.vae import VAE
from tld.errors import TLDError
from tld.model.cpu import apply_cpu_kernels
from tld.training import checkpoint as ckpt
from tld.training.accelerator import build_accelerator
from tld.training.config import TrainConfig
from tld.training.ema import EMA
from tld.training.fid_eval import start_fid
from tld.training.lora import attach_training_lora, write_run_adapter
from tld.training.objective import build_model, build_optimizer, micro_batch_loss
from tld.training.resume import check_changes, load_resume, record_config, restore_extra_emas
from tld.training.resume import report as report_resume
from tld.training.samples import grid_vae, sample_grid, save_grid

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # mean loss of every optimizer step this call ran
    output_dir: Path
    last_checkpoint: Path | None


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warmup over `warmup` steps, then cosine decay to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_lambda(config: TrainConfig):
    o = config.optim

    def factor(step: int) -> float:
        if o.schedule == "constant" and step >= o.warmup_steps:
            return 1.0
        return warmup_cosine(step, o.warmup_steps, config.steps, o.min_lr_ratio)

    if o.schedule not in ("cosine", "constant"):
        raise TLDError(f"optim.schedule must be 'cosine' or 'constant', got {o.schedule!r}")
    return factor


def compat_key(config: TrainConfig, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint; steps, lr, logging may change."""
    return {
        "model": model_cfg,
        "parameterization": config.diffusion.parameterization,
        "condition": config.data.condition,
        "text": config.data.text,
        "inpaint": config.inpaint.enabled,
    }


def check_resume_compatible(state: dict[str, Any], key: dict[str, Any], folder: Path) -> None:
    saved = state.get("compat", {})
    diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
    if "model" in diff:
        m_old, m_new = saved.get("model") or {}, key["model"]
        diff = [f"model.{k}" for k in sorted(set(m_old) | set(m_new)) if m_old.get(k) != m_new.get(k)] + [
            d for d in diff if d != "model"
        ]
    if diff:
        raise TLDError(
            f"cannot resume from {folder}: it was trained with a different config ({', '.join(diff)})"
        )


def find_resume(config: TrainConfig) -> Path | None:
    if not config.resume:
        return None
    root = ckpt.run_checkpoints(config.output_dir)
    if config.resume in ("latest", "auto", True):
        found = ckpt.latest_checkpoint(root)
        if found is None and config.resume != "auto":
            raise TLDError(f"--resume: no complete checkpoint under {root}")
        return found
    path = Path(str(config.resume))
    ckpt.read_state(path)  # fails with a clear message when incomplete
    return path


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@dataclass
class _Run:
    """Everything one training run holds: built once by `_start`, stepped by `train`."""

    acc: Accelerator
    config: TrainConfig
    data: LatentDataset
    net: nn.Module
    train_net: nn.Module
    param: Parameterization
    density: Density
    ema: EMA
    extra_emas: dict[float, EMA]  # ema.extra_decays: more EMA lengths, chosen among at export
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    compat: dict[str, Any]
    step: int
    trackers: list[str]


def _start(config: TrainConfig) -> tuple[_Run, dict[str, Any] | None]:
    """Build the accelerator, data, model, EMA and optimizer; load the resume checkpoint if any."""
    from tld.diffusion.parameterizations import get_parameterization

    trackers = [] if config.tracker == "none" else [config.tracker]
    acc = build_accelerator(config, trackers)
    data = LatentDataset(config.data.path, config.data.condition, config.data.text, config.data.check_finite)
    _seed_everything(config.seed)
    net = attach_training_lora(config, build_model(config, data))
    net.grad_checkpointing = config.grad_checkpointing
    apply_cpu_kernels(net, config.cpu_kernels if acc.device.type == "cpu" else "off")
    compat = compat_key(config, net.config.to_dict())
    ema = EMA(net, config.ema.decay, config.ema.warmup, config.ema.start_step)
    extra_emas = {d: EMA(net, d, config.ema.warmup, config.ema.start_step) for d in config.ema.extra_decays}
    if config.ema.extra_decays and (warning := config.ema.ramp_warning(config.steps)):
        acc.print(warning)
    trained = [p for p in net.parameters() if p.requires_grad] if config.lora.rank else net.parameters()
    opt = build_optimizer(trained, config.optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config))
    step, saved = 0, load_resume(config)
    if saved is not None:
        check_resume_compatible(saved["state"], compat, saved["folder"])
        saved["changes"] = check_changes(saved, config)
        net.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        restore_extra_emas(extra_emas, saved, acc.print)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if acc.scaler is not None and saved["scaler"] is not None:
            acc.scaler.load_state_dict(saved["scaler"])  # fp16: the loss scale it had reached
        step = int(saved["state"]["step"])
    else:
        _seed_everything(derive_seed(config.seed, acc.process_index))
    net, opt = acc.prepare(net, opt)
    for average in (ema, *extra_emas.values()):
        average.to(acc.device)
    train_net = torch.compile(net) if config.compile else net
    param = get_parameterization(**config.diffusion.parameterization)
    density = _density(config.diffusion.density, param)
    run = _Run(
        acc=acc, config=config, data=data, net=net, train_net=train_net, param=param, density=density,
        ema=ema, extra_emas=extra_emas, opt=opt, sched=sched, compat=compat, step=step, trackers=trackers,
    )  # fmt: skip
    return run, saved


def _density(spec: dict[str, Any], param: Parameterization) -> Density:
    """The training sigma density; `discrete` without sigmas takes the eps/v model's own."""
    from tld.diffusion.densities import get_density

    if spec.get("name") == "discrete" and "sigmas" not in spec:
        return get_density(**spec, param=param)
    return get_density(**spec)


def _batches(run: _Run) -> DataLoader:
    config, acc = run.config, run.acc
    accum = config.optim.grad_accum
    repeats = balanced_repeats(config.data.path, len(run.data), config.data.balance, acc.is_main_process)
    batches = StepBatches(
        run.data,
        config.batch_size,
        config.seed,
        acc.process_index,
        acc.num_processes,
        config.data.flip,
        repeats,
    )
    return step_loader(batches, run.step * accum, config.steps * accum, config.data.num_workers)


def _optimizer_step(run: _Run, it, first: bool) -> float:
    """One optimizer step over grad_accum micro-batches; the mean loss over all processes."""
    config, acc = run.config, run.acc
    accum = config.optim.grad_accum
    total = torch.zeros((), device=acc.device)
    for micro in range(accum):
        batch = next(it).to(acc.device)
        gen = torch.Generator().manual_seed(
            derive_seed(config.seed, 0x5EED, run.step, micro, acc.process_index)
        )
        sync = acc.no_sync(run.net) if micro < accum - 1 else nullcontext()
        with sync, acc.autocast():
            check = first and micro == 0  # inputs are checked where they enter: the first batch
            loss = micro_batch_loss(
                run.train_net, run.param, run.density, batch, gen, config, check=check, step=run.step
            )
        acc.backward(loss / accum)
        total += loss.detach() / accum
    if config.optim.grad_clip > 0:
        acc.clip_grad_norm_(run.net.parameters(), config.optim.grad_clip)
    run.opt.step()
    run.sched.step()
    run.opt.zero_grad(set_to_none=True)
    run.step += 1
    for average in (run.ema, *run.extra_emas.values()):
        average.update(acc.unwrap_model(run.net), run.step)
    return float(acc.gather(total).mean())


def train(config: TrainConfig | dict | str) -> TrainResult:
    """Train from a TrainConfig (or its dict, or a JSON/YAML path); works under accelerate launch."""
    config = _as_config(config)
    out_dir = Path(config.output_dir)
    run, saved = _start(config)
    acc = run.acc
    fid = start_fid(config, run.data, acc.device, acc.is_main_process)  # None: off, or not the main process
    vae = grid_vae(config, run.data, acc.device) if acc.is_main_process else None
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        record_config(out_dir, config, saved, saved["changes"] if saved else [])
        _print_summary(acc, config, acc.unwrap_model(run.net), run.data)
        if saved is not None:
            report_resume(saved, saved["changes"], acc.print)
    if run.trackers:
        acc.init_trackers("tld", config={"steps": config.steps, "batch_size": config.batch_size})
    images_per_step = config.batch_size * config.optim.grad_accum * acc.num_processes
    losses: list[float] = []
    last_ckpt = ckpt.latest_checkpoint(ckpt.run_checkpoints(out_dir))
    it = iter(_batches(run))  # draws a base seed from the global RNG, so it comes before the restore
    if saved is not None:
        ckpt.restore_rng(saved["rng"])
    if run.step < config.steps:  # the first batch is read (and its values checked) before the bar shows
        it = itertools.chain([next(it)], it)
    bar = tqdm(
        total=config.steps,
        initial=run.step,
        disable=not (config.progress and acc.is_main_process),
        desc="train",
    )
    log = _LogWindow(run.step)
    first_step = run.step
    while run.step < config.steps:
        value = _optimizer_step(run, it, run.step == first_step)
        if not math.isfinite(value):
            bar.close()
            kept = (
                f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            )
            raise TLDError(f"loss became {value} at step {run.step}; training stopped, {kept}")
        losses.append(value)
        log.progress(bar, run.step, value, images_per_step)
        if run.trackers and (run.step % config.log_every == 0 or run.step == config.steps):
            acc.log(log.window(losses, run.step, run.sched.get_last_lr()[0], images_per_step), step=run.step)
        if config.sample.every and run.step % config.sample.every == 0:
            _log_samples(run, vae)
        if fid is not None and run.step % config.fid.every == 0:
            fid.log(
                run.step, acc.unwrap_model(run.net), run.ema, run.param, acc.log if run.trackers else None
            )
        if (config.checkpoint_every and run.step % config.checkpoint_every == 0) or run.step == config.steps:
            last_ckpt = _save(run)
    bar.close()
    if config.lora.rank and acc.is_main_process:
        write_run_adapter(config, acc.unwrap_model(run.net), run.ema.state_dict(), run.step)
    acc.end_training()
    return TrainResult(run.step, losses, out_dir, last_ckpt)


class _LogWindow:
    """Rates for the progress bar, and loss means over the interval since the last log."""

    def __init__(self, step: int):
        self.t0 = self.log_time = time.perf_counter()
        self.step0 = self.log_step = step

    def progress(self, bar, step: int, value: float, images_per_step: int) -> None:
        rate = (step - self.step0) / max(time.perf_counter() - self.t0, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", its=f"{rate:.2f}", img_s=f"{rate * images_per_step:.1f}")

    def window(self, losses: list[float], step: int, lr: float, images_per_step: int) -> dict[str, float]:
        # Means over the interval since the last log: far less noisy than the last step alone.
        window = losses[-(step - self.log_step) :]
        now = time.perf_counter()
        logs = {"loss": sum(window) / len(window), "lr": lr}
        logs["images_per_s"] = len(window) * images_per_step / max(now - self.log_time, 1e-9)
        self.log_step, self.log_time = step, now
        return logs


def _save(run: _Run) -> Path:
    acc, config, data, step = run.acc, run.config, run.data, run.step
    acc.wait_for_everyone()
    if not acc.is_main_process:
        acc.wait_for_everyone()  # the main process writes; afterwards the folder exists for all
        return ckpt.run_checkpoints(config.output_dir) / f"step_{step}"
    meta = data.arrays.meta
    state = {
        "config": config.to_dict(),
        "compat": run.compat,
        "dataset": {
            "vae": meta.vae,
            "text_encoder": meta.text_encoder,
            "latent_scale": meta.latent_scale,
            "text_tokens": data.tokens,
            "path": str(data.arrays.folder),
            "buckets": [b["image_size"] for b in meta.buckets] if meta.buckets else None,
        },
    }
    path = ckpt.save_checkpoint(
        ckpt.run_checkpoints(config.output_dir),
        step,
        model_state=acc.unwrap_model(run.net).state_dict(),
        ema_state=run.ema.state_dict(),
        optimizer_state=run.opt.state_dict(),
        scheduler_state=run.sched.state_dict(),
        rng=ckpt.capture_rng(),
        state=state,
        keep_last=config.keep_last,
        scaler_state=acc.scaler.state_dict() if acc.scaler is not None else None,
        extra_ema_states={d: average.state_dict() for d, average in run.extra_emas.items()},
    )
    acc.wait_for_everyone()
    return path


def _log_samples(run: _Run, vae: VAE | None) -> None:
    acc, config, step, trackers = run.acc, run.config, run.step, run.trackers
    if not acc.is_main_process:
        return
    grid = sample_grid(acc.unwrap_model(run.net), run.ema, run.param, run.data, config, vae)
    if grid is None:
        return
    path = save_grid(grid, Path(config.output_dir) / "samples" / f"step_{step:07d}.png")
    if "tensorboard" in trackers:
        acc.get_tracker("tensorboard").log_images({"samples": grid[None]}, step=step, dataformats="NHWC")
    if "wandb" in trackers:
        acc.get_tracker("wandb").log_images({"samples": [grid]}, step=step)
    if config.progress:
        tqdm.write(f"step {step}: samples -> {path}")


def _print_summary(acc, config: TrainConfig, net, data: LatentDataset) -> None:
    from tld.model.flops import train_step_flops

    c, h, w = data.latent_shape
    tokens = data.arrays.text_emb.shape[1] if data.tokens else 1
    flops = train_step_flops(
        net.config, config.batch_size * config.optim.grad_accum, height=h, width=w, text_tokens=tokens
    )
    params = net.num_parameters()
    acc.print(
        f"tld train: {params / 1e6:.2f}M parameters, {flops / 1e9:.2f} GFLOPs/step per device "
        f"(fwd+bwd), {len(data)} latents {c}x{h}x{w}, {acc.num_processes} process(es) on {acc.device}"
    )


def _as_config(config: TrainConfig | dict | str) -> TrainConfig:
    from tld.training.config import load_config

    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return load_config(config)
