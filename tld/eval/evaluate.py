"""One evaluation: generate N images with one sampler setting and score them against a reference set.

Image k is generated from prompt k (the reference set's captions, cycled) with seed `seed + k`, so
a setting's images do not depend on the batch size and every setting sees the same prompts and seeds.
A class-conditional model (num_classes > 0) is conditioned on real image k's class label instead;
its caption (the class name) still serves the caption-rank alignment. With a classifier extractor
the share of images classified as their conditioning class is reported too (`class_accuracy`).
NFE is counted, not computed: a forward hook counts the denoiser's calls per batch. A guided step
runs the conditional and unconditional rows in one batched call, so it counts once (multiply by 2
for the literature's "NFE with CFG" when cfg != 1).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tld.diffusion import SCHEDULES
from tld.errors import TLDError, check_int
from tld.eval.alignment import caption_rank_alignment
from tld.eval.features import ClassifierExtractor, FeatureExtractor, to_uint8_nhwc
from tld.eval.hue import hue_check, hue_check_dominants
from tld.eval.metrics import fid_from_features, kid_from_features, precision_recall
from tld.eval.reference import ReferenceSet
from tld.generation import SamplingDefaults, generate_and_score
from tld.generation.scoring import SampleFn

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline

# Pipeline call options a setting may change besides sampler, steps, schedule and cfg.
PIPELINE_OPTIONS = (
    "sampler_opts", "schedule_opts", "threshold", "cfg_rescale", "cfg_schedule", "sharp_f", "bright_f",
    "original_init",
)  # fmt: skip


@dataclass(frozen=True)
class SampleSettings:
    """The sampler setting under test; None takes the model's default."""

    sampler: str
    steps: int
    schedule: str | None = None
    cfg: float | None = None
    # Other pipeline options as a JSON object, e.g. '{"sampler_opts": {"eta": 0.5}}' (DDIM eta),
    # '{"sampler_opts": {"s_churn": 40}}', '{"threshold": {"percentile": 0.995}}'. A string keeps the
    # setting hashable and is stored as written.
    options: str | None = None

    def pipeline_options(self) -> dict[str, Any]:
        if self.options is None:
            return {}
        try:
            value = json.loads(self.options)
        except ValueError as e:
            raise TLDError(f"options must be a JSON object, got {self.options!r}: {e}") from None
        if not isinstance(value, dict):
            raise TLDError(f"options must be a JSON object, got {self.options!r}")
        unknown = sorted(set(value) - set(PIPELINE_OPTIONS))
        if unknown:
            raise TLDError(f"unknown option(s) {unknown}; expected some of: {', '.join(PIPELINE_OPTIONS)}")
        return value

    def validate(self) -> None:
        """The generation layer's checks of the settings (the model's defaults fill the Nones)."""
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise TLDError(f"unknown schedule {self.schedule!r}; expected one of: {', '.join(SCHEDULES)}")
        options = {k: v for k, v in self.pipeline_options().items() if k != "sampler_opts"}
        fields = {"sampler": self.sampler, "steps": self.steps, "cfg": self.cfg, **options}
        SamplingDefaults().updated(**fields).validate()

    @property
    def label(self) -> str:
        cfg = "default" if self.cfg is None else f"{self.cfg:g}"
        label = f"{self.sampler}-{self.steps}-{self.schedule or 'default'}-cfg{cfg}"
        if self.options:  # '{"sampler_opts": {"eta": 0.5}}' -> '-sampler_opts-eta-0.5'
            label += "-" + "-".join(re.findall(r"[A-Za-z0-9_.]+", self.options))
        return label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalConfig:
    """How many images and how they are scored."""

    n: int = 5000
    seed: int = 0
    batch_size: int = 16
    pr_k: int = 3  # k of the precision/recall manifolds
    align_k: int = 10  # real neighbours searched for the prompt's caption
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    progress: bool = True

    def validate(self) -> None:
        for name in ("n", "batch_size", "pr_k", "align_k", "kid_subsets"):
            check_int(getattr(self, name), name, 2 if name == "n" else 1)


def generation_identity(pipe: TLDPipeline) -> dict[str, str]:
    """What changes a pipeline's images besides its files and the sampler settings: the dtype it
    runs in and the kind of device (a cached result is reused only when these match)."""
    return {"dtype": str(pipe.dtype).removeprefix("torch."), "device": pipe.device.type}


def pipeline_sampler(
    pipe: TLDPipeline,
    prompts: list[str],
    settings: SampleSettings,
    labels: list[int] | None,
    resolved: dict[str, Any],
) -> SampleFn:
    """The sampling callable of `generate_and_score` for a pipeline: image k from prompt k (and class
    labels[k]); `resolved` receives the settings the pipeline filled in from its defaults."""

    def sample(rows: range, seeds: list[int]) -> np.ndarray:
        extra = {} if labels is None else {"class_labels": labels[rows.start : rows.stop]}
        out = pipe(
            prompts[rows.start : rows.stop],
            cfg=settings.cfg,
            steps=settings.steps,
            sampler=settings.sampler,
            schedule=settings.schedule,
            seed=seeds,
            output_type="np",
            progress=False,
            **extra,
            **settings.pipeline_options(),
        )
        resolved.update({k: out.settings.get(k) for k in ("sampler", "steps", "schedule", "cfg")})
        return to_uint8_nhwc(np.asarray(out.images).transpose(0, 3, 1, 2))

    return sample


def score(
    gen_images: np.ndarray,
    prompts: list[str],
    ref: ReferenceSet,
    extractor: FeatureExtractor,
    config: EvalConfig,
    labels: list[int] | None = None,
) -> dict[str, Any]:
    """FID, KID, precision/recall, caption-rank alignment and the hue check of generated images
    (+ class accuracy for images generated from class `labels`, scored by a classifier extractor)."""
    feats = extractor(gen_images, progress=config.progress)
    if feats.shape[1] != ref.features.shape[1] or extractor.name != ref.extractor:
        raise TLDError(
            f"reference features come from {ref.extractor} ({ref.features.shape[1]}-d), generated ones from "
            f"{extractor.name} ({feats.shape[1]}-d)"
        )
    kid_mean, kid_std = kid_from_features(
        ref.features, feats, subsets=config.kid_subsets, subset_size=config.kid_subset_size, seed=config.seed
    )
    precision, recall = precision_recall(ref.features, feats, k=config.pr_k)
    align = caption_rank_alignment(feats, prompts, ref.features, ref.captions, k=config.align_k)
    real_hue = hue_check_dominants(ref.dominants, ref.captions)
    return {
        "fid": fid_from_features(ref.features, feats),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        **align.to_dict(),
        **hue_check(gen_images, prompts).to_dict(),
        "real_hue_accuracy": real_hue.accuracy,
        **_class_accuracy(extractor, gen_images, labels),
    }


def _class_accuracy(extractor: FeatureExtractor, images: np.ndarray, labels: list[int] | None) -> dict:
    """{"class_accuracy": share classified as their class} when both a classifier and labels exist."""
    if labels is None or not isinstance(extractor, ClassifierExtractor):
        return {}
    from tld.eval.classifier import predict

    return {"class_accuracy": float((predict(extractor, images) == np.asarray(labels)).mean())}


def prompts_and_labels(pipe: TLDPipeline, ref: ReferenceSet, n: int) -> tuple[list[str], list[int] | None]:
    """Prompt k = caption k of the real set (cycled); for class-conditional models also its class label."""
    if not ref.captions:
        raise TLDError("the reference set has no captions to prompt with")
    prompts = [ref.captions[k % len(ref.captions)] for k in range(n)]
    num_classes = pipe.denoiser.config.num_classes
    if not num_classes:
        return prompts, None
    if ref.labels is None:
        raise TLDError(
            f"the model is class-conditional ({num_classes} classes) but the real images of {ref.source} "
            "carry no class labels (an integer 'label' in each shard sample's json)"
        )
    labels = [ref.labels[k % len(ref.labels)] for k in range(n)]
    if max(labels) >= num_classes or min(labels) < 0:
        raise TLDError(
            f"the real images have class labels {min(labels)}..{max(labels)}; the model knows 0..{num_classes - 1}"
        )
    return prompts, labels


def evaluate_setting(
    pipe: TLDPipeline,
    ref: ReferenceSet,
    extractor: FeatureExtractor,
    settings: SampleSettings,
    config: EvalConfig,
) -> dict[str, Any]:
    """Generate config.n images with `settings` and score them; a flat dict of numbers and settings."""
    settings.validate()
    config.validate()
    prompts, labels = prompts_and_labels(pipe, ref, config.n)
    resolved: dict[str, Any] = {}
    run = generate_and_score(
        pipeline_sampler(pipe, prompts, settings, labels, resolved),
        config.n,
        config.seed,
        config.batch_size,
        score=lambda images: score(images, prompts, ref, extractor, config, labels),
        counted=pipe.denoiser,
        progress=config.progress,
        desc=f"sampling {settings.label}",
    )
    return {
        **settings.to_dict(),
        **{f"used_{k}": v for k, v in resolved.items()},
        "nfe": run.nfe,
        "n": run.n,
        "n_real": len(ref.features),
        "extractor": ref.extractor,
        "conditioning": "class"
        if labels is not None
        else "text"
        if pipe.denoiser.config.text_dim
        else "none",
        **run.scores,
        "seconds_per_image": run.sample_seconds / run.n,
    }
