"""`load_extractor`: a feature extractor by name (the one place that knows every kind, classifier included)."""

from __future__ import annotations

import os

import torch

from tld.errors import TLDError
from tld.eval.classifier import classifier_extractor
from tld.eval.features import (
    EXTRACTORS,
    EfficientNetLite0Extractor,
    FeatureExtractor,
    InceptionFIDExtractor,
)


def load_extractor(
    name: str,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    inception_weights: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
) -> FeatureExtractor:
    """A named extractor: "efficientnet-lite0" (offline), "inception" (FID weights file or download) or
    "classifier" (a folder written by `tld eval train-classifier`, passed as `classifier`)."""
    if name == "efficientnet-lite0":
        return EfficientNetLite0Extractor(device=device, batch_size=batch_size)
    if name == "inception":
        if inception_weights is not None and not os.path.isfile(inception_weights):
            raise TLDError(f"Inception weights file {inception_weights} does not exist")
        return InceptionFIDExtractor(inception_weights, device=device, batch_size=batch_size)
    if name == "classifier":
        if classifier is None:
            raise TLDError(
                "--extractor classifier needs --classifier PATH (from `tld eval train-classifier`)"
            )
        return classifier_extractor(classifier, device=device, batch_size=batch_size)
    raise TLDError(f"unknown feature extractor {name!r}; expected one of: {', '.join(EXTRACTORS)}")
