"""FID during training: every `fid.every` steps, EMA samples scored against cached real features.

Everything that can fail (the VAE, the extractor, the reference folder, the sampler settings) is
loaded and checked when training starts, so a bad config stops a run at step 0, not at step K.
Image k of every evaluation uses the same noise seed (`fid.seed + k`) and the same condition (row k
of a fixed seeded draw of training rows: its text embedding or class label), so the FID curve moves
only with the weights. Only the main process evaluates; the values go to the tracker as `fid` and to
`<output_dir>/log.jsonl` as {"step", "fid", "kid", "n", "n_real", "seconds"}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tld.data import LatentDataset
from tld.errors import TLDError
from tld.eval.features import FeatureExtractor, to_uint8_nhwc
from tld.eval.metrics import fid_from_features, kid_from_features
from tld.training.config import FIDConfig, TrainConfig
from tld.training.ema import EMA
from tld.training.samples import ema_copy, latents_to_images, sample_seeded

LOG_NAME = "log.jsonl"


def check_fid_config(f: FIDConfig) -> bool:
    """True when FID is on; a TLDError naming the field when the block is set up wrongly."""
    for name in ("every", "num", "reference_num", "batch_size", "steps"):
        value = getattr(f, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TLDError(f"fid.{name} must be an integer, got {value!r}")
    if f.every < 0 or (f.reference and f.every == 0):
        raise TLDError(f"fid.every must be >= 1 (steps between FID evaluations), got {f.every}")
    if not f.every:
        return False
    if not f.reference:
        raise TLDError("fid.every is set but fid.reference (a shard or image folder of real images) is not")
    if not Path(f.reference).is_dir():
        raise TLDError(f"fid.reference {f.reference} is not a folder")
    for name, low in (("num", 2), ("reference_num", 2), ("batch_size", 1)):
        if getattr(f, name) < low:
            raise TLDError(f"fid.{name} must be >= {low}, got {getattr(f, name)}")
    _settings(f).validate()
    from tld.diffusion import SCHEDULES

    if f.schedule not in SCHEDULES:
        raise TLDError(f"fid.schedule {f.schedule!r} is unknown; expected one of: {', '.join(SCHEDULES)}")
    return True


def _settings(f: FIDConfig) -> Any:
    from tld.pipeline.sampling import SamplingDefaults

    return SamplingDefaults(cfg=f.cfg, steps=f.steps, sampler=f.sampler, schedule=f.schedule)


def _load_vae(f: FIDConfig, data: LatentDataset, device: torch.device) -> Any:
    from tld.encoders.vae import VAE

    meta = data.arrays.meta
    spec = f.vae or meta.vae
    path = spec if isinstance(spec, str) else (spec or {}).get("path")
    if not path:
        raise TLDError(
            f"FID needs a VAE to decode samples: {data.arrays.folder}/meta.json records none; set fid.vae"
        )
    try:
        return VAE.from_pretrained(path, latent_scale=float(meta.latent_scale), device=device)
    except TLDError as e:
        raise TLDError(f"fid: {e} (set fid.vae to the VAE the latents were encoded with)") from None


def _condition_rows(data: LatentDataset, num: int, seed: int) -> dict[str, torch.Tensor]:
    """The network's condition for `num` training rows drawn once with `seed`."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(data), size=num, replace=num > len(data))
    batch = data.get(rows)
    cond = {"text_emb": batch.text_emb, "text_mask": batch.text_mask, "class_labels": batch.labels}
    return {k: v for k, v in cond.items() if v is not None}


@dataclass
class FIDMonitor:
    """What an evaluation needs, loaded once at the start of training."""

    config: FIDConfig
    settings: Any  # tld.pipeline.sampling.SamplingDefaults
    vae: Any  # tld.encoders.vae.VAE
    extractor: FeatureExtractor
    real: np.ndarray  # (N_real, D) reference features
    cond: dict[str, torch.Tensor]  # row k is image k's condition
    shape: tuple[int, int, int]
    log_path: Path
    progress: bool

    def images(self, model: nn.Module, param: Any, device: torch.device) -> np.ndarray:
        """uint8 (num, H, W, 3): decoded EMA samples, image k from seed + k and condition row k."""
        f, out = self.config, []
        starts = range(0, f.num, f.batch_size)
        for start in tqdm(starts, desc="fid samples", disable=not self.progress, leave=False):
            stop = min(start + f.batch_size, f.num)
            cond = {k: v[start:stop] for k, v in self.cond.items()}
            seeds = [f.seed + k for k in range(start, stop)]
            latents = sample_seeded(model, param, cond, seeds, self.shape, self.settings, device)
            out.append(to_uint8_nhwc(latents_to_images(latents, self.vae)))
        return np.concatenate(out)

    def evaluate(self, net: nn.Module, ema: EMA, param: Any) -> dict[str, float]:
        """FID (and KID) of `num` EMA samples against the reference features."""
        start = time.perf_counter()
        device = next(net.parameters()).device
        images = self.images(ema_copy(net, ema), param, device)
        feats = self.extractor(images, progress=False)
        kid, _ = kid_from_features(self.real, feats, seed=self.config.seed)
        fid = fid_from_features(self.real, feats)
        n_real = len(self.real)
        return {
            "fid": fid,
            "kid": kid,
            "n": len(feats),
            "n_real": n_real,
            "seconds": time.perf_counter() - start,
        }

    def log(self, step: int, net: nn.Module, ema: EMA, param: Any, tracker: Callable | None) -> dict:
        """Evaluate, append to log.jsonl and send fid/kid to `tracker` (Accelerator.log) when given."""
        values = self.evaluate(net, ema, param)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"step": step, **values}) + "\n")
        if tracker is not None:
            tracker({"fid": values["fid"], "kid": values["kid"]}, step=step)
        if self.progress:
            tqdm.write(f"step {step}: FID {values['fid']:.2f} (N={values['n']}, {values['seconds']:.0f} s)")
        return values


def start_fid(
    config: TrainConfig, data: LatentDataset, device: torch.device, main: bool
) -> FIDMonitor | None:
    """Check the fid block (every process) and, on the main process, load what evaluations need."""
    f = config.fid
    if not check_fid_config(f) or not main:
        return None
    from tld.eval.extractors import load_extractor
    from tld.eval.reference import reference_set

    vae = _load_vae(f, data, device)
    extractor = load_extractor(f.extractor, device=device, batch_size=f.batch_size, classifier=f.classifier)
    c, h, w = data.latent_shape
    size = (h * vae.downsample_factor, w * vae.downsample_factor)
    ref = reference_set(f.reference, extractor, size, f.reference_num, f.cache_dir, progress=config.progress)
    log_path = Path(config.output_dir) / LOG_NAME
    cond = _condition_rows(data, f.num, f.seed)
    return FIDMonitor(
        f, _settings(f), vae, extractor, ref.features, cond, (c, h, w), log_path, config.progress
    )
