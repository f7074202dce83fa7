"""`train_vae(config)`: train a diffusers AutoencoderKL from scratch on shards.

L1 (+ optional MSE) reconstruction + a small KL, AdamW with warmup + cosine, EMA, held-out PSNR and
reconstruction grids, atomic `step_<N>/` checkpoints with exact resume (batches depend only on the
seed and the step; RNG, optimizer and schedule state are restored). The result is exported with
`save_pretrained` plus `tld_vae.json` (latent scale = std of the held-out latents), so every `--vae`
option of the package loads it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tld.common import resolve_device, write_folder_atomic
from tld.errors import TLDError
from tld.training import checkpoint as ckpt
from tld.training.ema import EMA
from tld.training.loop import find_resume, warmup_cosine
from tld.training.vae_config import VAETrainConfig
from tld.training.vae_data import ImageSet, batch_at, load_shard_images, split_images


@dataclass
class VAETrainResult:
    step: int
    losses: list[float]
    val_psnr: float  # mean per-image PSNR (dB) of the EMA weights on the held-out images
    val_psnr_pooled: float  # PSNR of the pooled MSE over all held-out pixels
    output_dir: Path
    vae_dir: Path


def build_vae(config: VAETrainConfig) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config.model.diffusers_kwargs(config.image_size))


def vae_loss(model: Any, x: torch.Tensor, config: VAETrainConfig, generator: torch.Generator) -> torch.Tensor:
    posterior = model.encode(x).latent_dist
    z = posterior.mean + posterior.std * torch.randn(
        posterior.mean.shape, generator=generator, device="cpu"
    ).to(posterior.mean.device)
    diff = model.decode(z).sample.float() - x
    w = config.loss
    loss = w.l1 * diff.abs().mean() + w.kl * posterior.kl().mean()
    return loss + w.mse * diff.square().mean() if w.mse else loss


@torch.inference_mode()
def reconstruct(model: Any, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 images -> uint8 reconstructions through the posterior mean (what encode stores)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float().div(127.5).sub(1.0)
        y = model.decode(model.encode(x).latent_dist.mode()).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean per-image PSNR, PSNR of the pooled MSE) in dB for uint8 image batches."""
    mse = (a.float() - b.float()).div(255).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * mse.log10()).mean()), float(-10 * math.log10(float(mse.mean())))


class _Run:
    """The state of one training run: model, EMA, optimizer, schedule, logs."""

    def __init__(self, config: VAETrainConfig, data: ImageSet):
        self.config, self.data = config, data
        self.out = Path(config.output_dir)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.model = build_vae(config).to(self.device).train()
        self.ema = EMA(self.model, config.ema_decay).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, config.warmup_steps, config.steps, config.min_lr_ratio)
        )
        self.step, self.elapsed, self.history = 0, 0.0, []
        self.writer = _tensorboard(self.out) if config.tracker == "tensorboard" else None

    def resume(self, folder: Path) -> None:
        saved = ckpt.load_checkpoint(folder)
        if saved["state"].get("model") != asdict(self.config.model):
            raise TLDError(f"cannot resume from {folder}: it was trained with a different model config")
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        ckpt.restore_rng(saved["rng"])
        self.step = int(saved["state"]["step"])
        self.elapsed = float(saved["state"].get("elapsed_s", 0.0))
        self.history = list(saved["state"].get("history", []))

    def save(self) -> Path:
        state = {"model": asdict(self.config.model), "elapsed_s": self.elapsed, "history": self.history}
        return ckpt.save_checkpoint(
            self.out / "checkpoints",
            self.step,
            model_state=self.model.state_dict(),
            ema_state=self.ema.state_dict(),
            optimizer_state=self.opt.state_dict(),
            scheduler_state=self.sched.state_dict(),
            rng=ckpt.capture_rng(),
            state=state,
            keep_last=self.config.keep_last,
        )

    def train_step(self) -> float:
        c = self.config
        x = batch_at(self.data.train, self.step, c.batch_size, c.seed, c.flip).to(self.device)
        gen = torch.Generator().manual_seed(c.seed * 1_000_003 + self.step)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if c.mixed_precision == "bf16"
            else nullcontext()
        )
        with autocast:
            loss = vae_loss(self.model, x, c, gen)
        if not torch.isfinite(loss):
            raise TLDError(f"VAE loss is {loss.item()} at step {self.step}: lower lr or check the images")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        return loss.item()

    def ema_model(self) -> Any:
        model = build_vae(self.config).to(self.device).eval()
        self.ema.copy_to(model)
        return model

    def evaluate(self) -> tuple[float, float]:
        model = self.ema_model()
        recon = reconstruct(model, self.data.val)
        mean_db, pooled_db = psnr(recon, self.data.val)
        self.history.append({"step": self.step, "psnr": mean_db, "psnr_pooled": pooled_db})
        _save_grid(self.data.val[:16], recon[:16], self.out / "recon" / f"step_{self.step:06d}.png")
        if self.writer is not None:
            self.writer.add_scalar("val/psnr", mean_db, self.step)
            self.writer.add_scalar("val/psnr_pooled", pooled_db, self.step)
            grid = torch.cat([self.data.val[:8], recon[:8]], dim=0)
            self.writer.add_images("val/originals_then_reconstructions", grid, self.step)
        return mean_db, pooled_db


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tracker is optional; the log.jsonl has the same numbers
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _save_grid(originals: torch.Tensor, recon: torch.Tensor, path: Path) -> None:
    """Originals on the top row, reconstructions below."""
    from PIL import Image

    n, _, h, w = originals.shape
    grid = torch.cat([torch.cat(list(originals), dim=2), torch.cat(list(recon), dim=2)], dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def train_vae(config: VAETrainConfig | dict) -> VAETrainResult:
    """Train (or resume) a VAE; writes checkpoints, log.jsonl, recon grids and the exported `vae/`."""
    config = config if isinstance(config, VAETrainConfig) else VAETrainConfig.from_dict(config)
    config.validate()
    images, failed = load_shard_images(config.shards, config.image_size, config.progress)
    train_set, val_set = split_images(images, config.val_holdout, config.seed)
    data = ImageSet(train_set, val_set, failed)
    print(f"train-vae: {data.summary()}", flush=True)
    run = _Run(config, data)
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    found = find_resume(config)  # the denoiser trainer's rules: "latest", "auto" or a step folder
    if found is not None:
        run.resume(found)
    losses = _loop(run)
    mean_db, pooled_db = run.evaluate()
    run.save()
    training = {"steps": run.step, "batch_size": run.config.batch_size, "elapsed_s": round(run.elapsed, 1)}
    vae_dir = export_vae(run.ema_model(), run.data.val, run.out / "vae", run.history, training)
    return VAETrainResult(run.step, losses, mean_db, pooled_db, run.out, vae_dir)


def _loop(run: _Run) -> list[float]:
    c, losses = run.config, []
    log = open(run.out / "log.jsonl", "a")
    bar = tqdm(total=c.steps, initial=run.step, desc="train-vae", unit="step", disable=not c.progress)
    try:
        while run.step < c.steps:
            t0 = time.perf_counter()
            losses.append(run.train_step())
            run.elapsed += time.perf_counter() - t0
            bar.update(1)
            if run.step % c.log_every == 0 or run.step == c.steps:
                row = {
                    "step": run.step,
                    "loss": losses[-1],
                    "lr": run.sched.get_last_lr()[0],
                    "elapsed_s": run.elapsed,
                }
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if run.writer is not None:
                    run.writer.add_scalar("train/loss", losses[-1], run.step)
            if c.eval_every and run.step % c.eval_every == 0 and run.step < c.steps:
                mean_db, _ = run.evaluate()
                bar.write(f"step {run.step}: held-out PSNR {mean_db:.2f} dB")
            if c.checkpoint_every and run.step % c.checkpoint_every == 0:
                run.save()
    finally:
        bar.close()
        log.close()
    return losses


@torch.inference_mode()
def latent_std(model: Any, images: torch.Tensor, batch_size: int = 64) -> float:
    device = next(model.parameters()).device
    z = [
        model.encode(images[i : i + batch_size].to(device).float().div(127.5).sub(1.0))
        .latent_dist.mode()
        .cpu()
        for i in range(0, len(images), batch_size)
    ]
    return float(torch.cat(z).std())


def export_vae(
    model: Any, val_images: torch.Tensor, folder: Path, history: list[dict], training: dict | None = None
) -> Path:
    """Save the EMA VAE as a diffusers folder + tld_vae.json with the latent scale and held-out PSNR."""
    from tld.encoders.vae import VAE

    scale = latent_std(model, val_images)
    vae = VAE(model.float(), latent_scale=round(scale, 4), source="tld train-vae")
    # held-out scores and the training record (steps, batch, seconds): what a later --vae reuse reports
    vae.record = {"val": history[-1] if history else {}, "training": training or {}}
    return write_folder_atomic(folder, vae.save_pretrained)
