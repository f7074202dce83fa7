"""`tld eval train-classifier`: train the FID classifier (`tld.eval.classifier.SmallCNN`) on a
class-labelled shard folder and report its accuracy on a held-out (test) shard folder.

Every image is decoded once into memory (60k x 32 x 32 x 3 bytes = 184 MB for Fashion-MNIST).
Batches come from a per-epoch permutation of (seed, epoch); Adam with a cosine decay. No
augmentation: the classifier should see the data as it is, since FID measures distance to it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tld.common import resolve_device
from tld.errors import TLDError, check_int
from tld.eval.classifier import ClassifierConfig, SmallCNN, save_classifier


@dataclass
class ClassifierTrainConfig:
    train: str  # shard folder whose samples carry an integer `label`
    out: str  # classifier folder to write
    test: str | None = None  # shard folder for the reported accuracy
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    input_size: int = 32
    limit: int | None = None  # only the first N training images (quick runs and tests)
    device: str | None = None
    progress: bool = True

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "input_size"):
            value = getattr(self, name)
            check_int(value, name, 1)
        if not self.lr > 0:
            raise TLDError(f"lr must be > 0, got {self.lr}")


def load_labelled_images(
    data: str | os.PathLike, size: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """uint8 (N, size, size, 3) images, int64 (N,) labels and {label: caption} of a labelled shard folder."""
    from tld.encoders.images import center_crop_resize, load_image
    from tld.eval.reference import iter_real_samples

    images, labels, names = [], [], {}
    for source, caption, label in iter_real_samples(data):
        if limit is not None and len(images) == limit:
            break
        if label is None or label < 0:
            raise TLDError(
                f"{data}: image {len(images)} has no class label (an integer 'label' in its shard json); "
                "the classifier needs a class-labelled set such as `tld preprocess fashion-mnist`"
            )
        images.append(np.asarray(center_crop_resize(load_image(source), size)))
        labels.append(label)
        names.setdefault(label, caption)
    if len(set(labels)) < 2:
        raise TLDError(
            f"{data} holds {len(images)} image(s) of {len(set(labels))} class(es); need >= 2 classes"
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


def _as_input(images: np.ndarray, config: ClassifierConfig, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255)
    return (x - config.mean) / config.std


@torch.inference_mode()
def accuracy(model: SmallCNN, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Share of images whose predicted class is their label."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(_as_input(images[start : start + batch_size], model.config, device))
        correct += int((logits.argmax(1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return correct / max(1, len(images))


@dataclass
class _Run:
    """What the training epochs share."""

    model: SmallCNN
    opt: torch.optim.Optimizer
    sched: Any
    images: np.ndarray
    labels: np.ndarray
    cfg: ClassifierTrainConfig

    def epoch(self, epoch: int, bar: Any) -> float:
        """One pass over a (seed, epoch) permutation; returns the mean loss."""
        self.model.train()
        device = next(self.model.parameters()).device
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.images))
        losses = []
        for start in range(0, len(perm), self.cfg.batch_size):
            rows = np.sort(perm[start : start + self.cfg.batch_size])
            x = _as_input(self.images[rows], self.model.config, device)
            loss = F.cross_entropy(self.model(x), torch.from_numpy(self.labels[rows]).to(device))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        return float(np.mean(losses))


def train_classifier(cfg: ClassifierTrainConfig) -> dict[str, Any]:
    """Train, measure test accuracy, save the classifier folder; returns the training record."""
    cfg.validate()
    images, labels, names = load_labelled_images(cfg.train, cfg.input_size, cfg.limit)
    test = load_labelled_images(cfg.test, cfg.input_size) if cfg.test else None
    num_classes = int(labels.max()) + 1
    class_names = [names.get(k, str(k)) for k in range(num_classes)]
    torch.manual_seed(cfg.seed)
    model = SmallCNN(ClassifierConfig(num_classes, input_size=cfg.input_size, class_names=class_names))
    model.to(resolve_device(cfg.device))
    steps = cfg.epochs * math.ceil(len(images) / cfg.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    run = _Run(model, opt, sched, images, labels, cfg)
    start = time.perf_counter()
    with tqdm(total=steps, desc="train-classifier", disable=not cfg.progress) as bar:
        losses = [run.epoch(epoch, bar) for epoch in range(cfg.epochs)]
    record = {
        **{k: v for k, v in asdict(cfg).items() if k not in ("progress", "device")},
        "train": str(Path(cfg.train).resolve()),
        "test": str(Path(cfg.test).resolve()) if cfg.test else None,
        "train_images": len(images),
        "steps": steps,
        "epoch_losses": losses,
        "seconds": round(time.perf_counter() - start, 1),
        "train_accuracy": accuracy(model, images[:10000], labels[:10000]),
        "test_images": len(test[0]) if test else 0,
        "test_accuracy": accuracy(model, test[0], test[1]) if test else None,
    }
    save_classifier(model.cpu(), cfg.out, record)
    return record
