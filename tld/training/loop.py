"""`train(config)`: the accelerate training loop (EMA, checkpoints, exact resume, samples, logging)."""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tld.data import LatentDataset, StepBatches, collate_identity, derive_seed
from tld.errors import TLDError
from tld.training import checkpoint as ckpt
from tld.training.config import TrainConfig
from tld.training.ema import EMA
from tld.training.objective import build_model, micro_batch_loss


@dataclass
class TrainResult:
    step: int
    losses: list[float]  # mean loss of every optimizer step this call ran
    output_dir: Path
    last_checkpoint: Path | None


def lr_lambda(config: TrainConfig):
    o = config.optim

    def factor(step: int) -> float:
        if o.warmup_steps > 0 and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, config.steps - o.warmup_steps))
        return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

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
    root = Path(config.output_dir) / "checkpoints"
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


def train(config: TrainConfig | dict | str) -> TrainResult:
    """Train from a TrainConfig (or its dict, or a JSON/YAML path); works under accelerate launch."""
    from accelerate import Accelerator

    from tld.diffusion.densities import get_density
    from tld.diffusion.parameterizations import get_parameterization

    config = _as_config(config)
    out_dir = Path(config.output_dir)
    trackers = [] if config.tracker == "none" else [config.tracker]
    acc = Accelerator(
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=str(out_dir),
        # Without cpu=True accelerate ignores torchrun's WORLD_SIZE on machines without a GPU.
        cpu=not torch.cuda.is_available(),
    )
    data = LatentDataset(config.data.path, config.data.condition, config.data.text, config.data.check_finite)
    _seed_everything(config.seed)
    net = build_model(config, data)
    model_cfg = net.config.to_dict()
    param = get_parameterization(**config.diffusion.parameterization)
    density = get_density(**config.diffusion.density)
    ema = EMA(net, config.ema.decay, config.ema.warmup, config.ema.start_step)
    opt = torch.optim.AdamW(
        net.parameters(),
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        weight_decay=config.optim.weight_decay,
        eps=config.optim.eps,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config))
    compat = compat_key(config, model_cfg)

    step = 0
    resume_from = find_resume(config)
    if resume_from is not None:
        saved = ckpt.load_checkpoint(resume_from)
        check_resume_compatible(saved["state"], compat, resume_from)
        net.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        step = int(saved["state"]["step"])
    else:
        _seed_everything(derive_seed(config.seed, acc.process_index))
    net, opt = acc.prepare(net, opt)
    ema.to(acc.device)
    train_net = torch.compile(net) if config.compile else net

    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.yaml")
        _print_summary(acc, config, acc.unwrap_model(net), data)
    if trackers:
        acc.init_trackers("tld", config={"steps": config.steps, "batch_size": config.batch_size})

    accum = config.optim.grad_accum
    batches = StepBatches(
        data, config.batch_size, config.seed, acc.process_index, acc.num_processes, config.data.flip
    )
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=range(step * accum, config.steps * accum),
        num_workers=config.data.num_workers,
        collate_fn=collate_identity,
    )
    images_per_step = config.batch_size * accum * acc.num_processes
    losses: list[float] = []
    last_ckpt = ckpt.latest_checkpoint(out_dir / "checkpoints")
    bar = tqdm(
        total=config.steps, initial=step, disable=not (config.progress and acc.is_main_process), desc="train"
    )
    t0, step0 = time.perf_counter(), step
    log_time, log_step = t0, step
    it = iter(loader)  # draws a base seed from the global RNG, so it comes before the restore
    if resume_from is not None:
        ckpt.restore_rng(saved["rng"])
    while step < config.steps:
        total = torch.zeros((), device=acc.device)
        for micro in range(accum):
            batch = next(it).to(acc.device)
            gen = torch.Generator().manual_seed(
                derive_seed(config.seed, 0x5EED, step, micro, acc.process_index)
            )
            sync = acc.no_sync(net) if micro < accum - 1 else nullcontext()
            with sync, acc.autocast():
                loss = micro_batch_loss(train_net, param, density, batch, gen, config)
            acc.backward(loss / accum)
            total += loss.detach() / accum
        if config.optim.grad_clip > 0:
            acc.clip_grad_norm_(net.parameters(), config.optim.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        ema.update(acc.unwrap_model(net), step)
        value = float(acc.gather(total).mean())
        if not math.isfinite(value):
            bar.close()
            kept = (
                f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            )
            raise TLDError(f"loss became {value} at step {step}; training stopped, {kept}")
        losses.append(value)
        rate = (step - step0) / max(time.perf_counter() - t0, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", its=f"{rate:.2f}", img_s=f"{rate * images_per_step:.1f}")
        if trackers and (step % config.log_every == 0 or step == config.steps):
            # Means over the interval since the last log: far less noisy than the last step alone.
            window = losses[-(step - log_step) :]
            now = time.perf_counter()
            logs = {"loss": sum(window) / len(window), "lr": sched.get_last_lr()[0]}
            logs["images_per_s"] = len(window) * images_per_step / max(now - log_time, 1e-9)
            acc.log(logs, step=step)
            log_step, log_time = step, now
        if config.sample.every and step % config.sample.every == 0:
            _log_samples(acc, config, ema, acc.unwrap_model(net), param, data, step, trackers)
        if step % config.checkpoint_every == 0 or step == config.steps:
            last_ckpt = _save(acc, config, net, ema, opt, sched, step, compat, data)
    bar.close()
    acc.end_training()
    return TrainResult(step, losses, out_dir, last_ckpt)


def _save(acc, config, net, ema, opt, sched, step, compat, data) -> Path:
    acc.wait_for_everyone()
    if not acc.is_main_process:
        acc.wait_for_everyone()  # the main process writes; afterwards the folder exists for all
        return Path(config.output_dir) / "checkpoints" / f"step_{step}"
    meta = data.arrays.meta
    state = {
        "config": config.to_dict(),
        "compat": compat,
        "dataset": {
            "vae": meta.vae,
            "text_encoder": meta.text_encoder,
            "latent_scale": meta.latent_scale,
            "text_tokens": data.tokens,
            "path": str(data.arrays.folder),
        },
    }
    path = ckpt.save_checkpoint(
        Path(config.output_dir) / "checkpoints",
        step,
        model_state=acc.unwrap_model(net).state_dict(),
        ema_state=ema.state_dict(),
        optimizer_state=opt.state_dict(),
        scheduler_state=sched.state_dict(),
        rng=ckpt.capture_rng(),
        state=state,
        keep_last=config.keep_last,
    )
    acc.wait_for_everyone()
    return path


def _log_samples(acc, config, ema, net, param, data, step, trackers) -> None:
    if not acc.is_main_process:
        return
    from tld.training.samples import sample_grid, save_grid

    grid = sample_grid(net, ema, param, data, config)
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
