"""Inception-v3 as the FID papers run it: torchvision's network with the TF-graph differences.

The FID reference implementation uses the TensorFlow Inception graph of 2015-12-05. Its weights,
converted to PyTorch, load into torchvision's Inception3 (1008 classes, no auxiliary head) once
four kinds of blocks pool like the TF graph does:
- Mixed_5b/5c/5d (A), Mixed_6b..6e (C) and Mixed_7b (E): the pooling branch averages without
  counting the zero padding;
- Mixed_7c (E): the pooling branch takes a 3x3 max instead of an average.
The pool3 features (2048-d, after the global average pool) are the FID features.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv

from tld.common import first_line
from tld.errors import TLDError

FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_SIZE = 299
FID_DIM = 2048


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv.InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_no_pad(x))]


class FIDInceptionC(tv.InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3):
            d = conv(d)
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return [self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_no_pad(x))]


class FIDInceptionE(tv.InceptionE):
    """Mixed_7b pools by a padding-free average (max_pool=False), Mixed_7c by a 3x3 max."""

    def __init__(self, in_channels: int, max_pool: bool = False, conv_block=None) -> None:
        super().__init__(in_channels, conv_block=conv_block)
        self.max_pool = max_pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad(x)
        return [self.branch1x1(x), b3, d, self.branch_pool(pooled)]


def fid_inception_v3() -> nn.Module:
    """The FID Inception network (random weights; load the FID state dict into it)."""
    blocks = [
        tv.BasicConv2d,
        FIDInceptionA,
        tv.InceptionB,
        FIDInceptionC,
        tv.InceptionD,
        FIDInceptionE,
        tv.InceptionAux,
    ]
    net = tv.Inception3(
        num_classes=1008, aux_logits=False, transform_input=False, inception_blocks=blocks, init_weights=False
    )
    net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    return net


def load_fid_weights(net: nn.Module, weights: str | os.PathLike | None) -> None:
    """Load the FID weights from a file, or download them (torch hub cache) when `weights` is None."""
    try:
        if weights is None:
            state = torch.hub.load_state_dict_from_url(
                FID_WEIGHTS_URL, file_name=FID_WEIGHTS_NAME, progress=True, weights_only=True
            )
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # no network, missing file, corrupt download: one line for the user
        where = f"download them from {FID_WEIGHTS_URL}" if weights is None else f"read them from {weights}"
        raise TLDError(
            f"no Inception FID weights: cannot {where} ({type(exc).__name__}: {first_line(exc)[:200]}); "
            f"pass the file {FID_WEIGHTS_NAME} with --inception-weights, or use --extractor efficientnet-lite0"
        ) from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise TLDError(
            f"{weights or FID_WEIGHTS_NAME} is not the FID Inception state dict: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
