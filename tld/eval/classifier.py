"""A small CNN classifier trained here on a class-labelled shard folder, the FID feature network for
class-conditional benchmarks such as Fashion-MNIST.

Inception and EfficientNet features come from ImageNet photos; a classifier trained on the data
itself is the literature's choice for small grey sets (MNIST-like FIDs). Its penultimate layer
(`embed`, 128-d) feeds `ClassifierExtractor`; its logits give the class accuracy of generated images.

A saved classifier is a folder: `classifier.json` (config + training record) and
`classifier.safetensors` (no pickle). `tld eval train-classifier` trains one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tld.common import first_line
from tld.errors import TLDError, from_dict
from tld.eval.features import ClassifierExtractor, to_float_nchw

CONFIG_FILE = "classifier.json"
WEIGHTS_FILE = "classifier.safetensors"
FEATURE_LAYER = "embed"


@dataclass
class ClassifierConfig:
    num_classes: int = 10
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # one conv + pool per width
    embed_dim: int = 128  # the penultimate (feature) layer
    input_size: int = 32
    mean: float = 0.5  # inputs are (x - mean) / std, x in [0, 1]
    std: float = 0.5
    class_names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.num_classes < 2 or not self.widths or min(self.widths) < 1 or self.embed_dim < 1:
            raise TLDError(f"classifier needs >= 2 classes and positive widths, got {asdict(self)}")
        if self.input_size % 2 ** len(self.widths):
            raise TLDError(
                f"input_size {self.input_size} must be a multiple of {2 ** len(self.widths)} "
                f"({len(self.widths)} poolings)"
            )


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU-maxpool per width, then flatten -> `embed` (Linear + ReLU) -> `head` logits."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        config.validate()
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for width in config.widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.convs = nn.Sequential(*layers)
        side = config.input_size // 2 ** len(config.widths)
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * side * side, config.embed_dim), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(config.embed_dim, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(self.convs(x)))


def save_classifier(model: SmallCNN, folder: str | os.PathLike, record: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    from tld.common import write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    write_json_atomic(folder / CONFIG_FILE, {"config": asdict(model.config), "training": record or {}})
    return folder


def load_classifier(folder: str | os.PathLike) -> tuple[SmallCNN, dict[str, Any]]:
    """(the classifier in eval mode, its training record) from a folder `save_classifier` wrote."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise TLDError(
            f"{folder} is not a classifier folder (missing {', '.join(missing)}); "
            "train one with `tld eval train-classifier`"
        )
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text())
        model = SmallCNN(from_dict(ClassifierConfig, saved.get("config"), "classifier config keys"))
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (ValueError, RuntimeError, OSError, SafetensorError) as exc:
        raise TLDError(f"cannot load the classifier in {folder}: {first_line(exc)}") from None
    return model.eval(), saved.get("training", {})


def classifier_extractor(
    folder: str | os.PathLike, device: str | torch.device | None = None, batch_size: int = 64
) -> ClassifierExtractor:
    """The `embed` features of a saved classifier, normalised as it was trained."""
    model, _ = load_classifier(folder)
    c = model.config
    return ClassifierExtractor(
        model, c.input_size, layer=FEATURE_LAYER, mean=c.mean, std=c.std, device=device, batch_size=batch_size
    )


@torch.inference_mode()
def predict(extractor: ClassifierExtractor, images: Any) -> np.ndarray:
    """Predicted classes (N,) of images (any input `to_float_nchw` takes) with the extractor's network."""
    x = to_float_nchw(images)
    out = []
    for start in range(0, len(x), extractor.batch_size):
        batch = extractor.prepare(x[start : start + extractor.batch_size].to(extractor.device))
        out.append(extractor.network(batch).argmax(dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)
