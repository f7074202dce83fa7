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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tld.data import LatentDataset
from tld.diffusion import SCHEDULES
from tld.diffusion.parameterizations import Parameterization
from tld.encoders.vae import VAE
from tld.errors import TLDError, check_int
from tld.eval.extractors import load_extractor
from tld.eval.features import FeatureExtractor, to_uint8_nhwc
from tld.eval.metrics import fid_from_features, kid_from_features
from tld.eval.reference import reference_set
from tld.generation import SamplingDefaults, default_size, generate_and_score, sample_seeded
from tld.generation.decode import dataset_vae, latents_to_images
from tld.generation.scoring import Scored, ScoreFn
from tld.training.config import FIDConfig, TrainConfig
from tld.training.ema import EMA
from tld.training.samples import ema_copy

LOG_NAME = "log.jsonl"


def check_fid_config(f: FIDConfig) -> bool:
    """True when FID is on; a TLDError naming the field when the block is set up wrongly."""
    for name in ("every", "num", "reference_num", "batch_size", "steps"):
        check_int(getattr(f, name), f"fid.{name}")
    if f.every < 0 or (f.reference and f.every == 0):
        raise TLDError(f"fid.every must be >= 1 (steps between FID evaluations), got {f.every}")
    if not f.every:
        return False
    if not f.reference:
        raise TLDError("fid.every is set but fid.reference (a shard or image folder of real images) is not")
    if not Path(f.reference).is_dir():
        raise TLDError(f"fid.reference {f.reference} is not a folder")
    for name, low in (("num", 2), ("reference_num", 2), ("batch_size", 1)):
        check_int(getattr(f, name), f"fid.{name}", low)
    _settings(f).validate()
    if f.schedule not in SCHEDULES:
        raise TLDError(f"fid.schedule {f.schedule!r} is unknown; expected one of: {', '.join(SCHEDULES)}")
    return True


def _settings(f: FIDConfig) -> SamplingDefaults:
    return SamplingDefaults(cfg=f.cfg, steps=f.steps, sampler=f.sampler, schedule=f.schedule)


def _load_vae(f: FIDConfig, data: LatentDataset, device: torch.device) -> VAE:
    vae = dataset_vae(data.arrays.meta, device, f.vae, "fid.vae")
    if vae is None:
        raise TLDError(
            f"FID needs a VAE to decode samples: {data.arrays.folder}/meta.json records none; set fid.vae"
        )
    return vae


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
    settings: SamplingDefaults
    vae: VAE
    extractor: FeatureExtractor
    real: np.ndarray  # (N_real, D) reference features
    cond: dict[str, torch.Tensor]  # row k is image k's condition
    shape: tuple[int, int, int]
    log_path: Path
    progress: bool

    def run(
        self, model: nn.Module, param: Parameterization, device: torch.device, score: ScoreFn | None = None
    ) -> Scored:
        """Decoded samples of `model`, image k from seed + k and condition row k, scored by `score`."""

        def sample(rows: range, seeds: list[int]) -> np.ndarray:
            cond = {k: v[rows.start : rows.stop] for k, v in self.cond.items()}
            latents = sample_seeded(model, param, cond, seeds, self.shape, self.settings, device)
            return to_uint8_nhwc(latents_to_images(latents, self.vae))

        f = self.config
        return generate_and_score(
            sample, f.num, f.seed, f.batch_size, score=score, progress=self.progress, desc="fid samples"
        )

    def images(self, model: nn.Module, param: Parameterization, device: torch.device) -> np.ndarray:
        """uint8 (num, H, W, 3): decoded EMA samples, image k from seed + k and condition row k."""
        return self.run(model, param, device).images

    def _score(self, images: np.ndarray) -> dict[str, float]:
        feats = self.extractor(images, progress=False)
        kid, _ = kid_from_features(self.real, feats, seed=self.config.seed)
        return {"fid": fid_from_features(self.real, feats), "kid": kid}

    def evaluate(self, net: nn.Module, ema: EMA, param: Parameterization) -> dict[str, float]:
        """FID (and KID) of `num` EMA samples against the reference features."""
        run = self.run(ema_copy(net, ema), param, next(net.parameters()).device, self._score)
        return {**run.scores, "n": run.n, "n_real": len(self.real), "seconds": run.seconds}

    def log(
        self, step: int, net: nn.Module, ema: EMA, param: Parameterization, tracker: Callable | None
    ) -> dict[str, float]:
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
    vae = _load_vae(f, data, device)
    extractor = load_extractor(f.extractor, device=device, batch_size=f.batch_size, classifier=f.classifier)
    size = default_size(data.latent_shape[1:], vae.downsample_factor)
    ref = reference_set(f.reference, extractor, size, f.reference_num, f.cache_dir, progress=config.progress)
    return FIDMonitor(
        config=f,
        settings=_settings(f),
        vae=vae,
        extractor=extractor,
        real=ref.features,
        cond=_condition_rows(data, f.num, f.seed),
        shape=data.latent_shape,
        log_path=Path(config.output_dir) / LOG_NAME,
        progress=config.progress,
    )
