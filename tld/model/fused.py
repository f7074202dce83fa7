"""Inference kernels for the CPU: oneDNN's linear with the bias fused, and the depthwise conv with
bias and GELU fused, the ops torch.compile's CPU backend emits, called directly.

The plain path computes `y = x @ W.T`, then copies the bias into a fresh buffer and runs a second
pass for GELU; on the CPU those extra passes over the FFN's 4x-wide activations cost about a
third of the FFN (docs/performance.md). The fused ops have no autograd formula, so they are used
only where no graph is recorded (inference mode / no_grad), on CPU tensors of float32 or
bfloat16, outside torch.compile (which makes its own fusions); everything else takes the plain
ops. Both paths compute the same function (tests/test_convert.py compares them with the original
network).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = (torch.float32, torch.bfloat16)
_MKLDNN = torch.backends.mkldnn.is_available()


def _compiling() -> bool:
    # torch.compiler.is_compiling() imports torch._dynamo (seconds at the first call); a process
    # that never imported it cannot be compiling.
    return "torch._dynamo" in sys.modules and torch.compiler.is_compiling()


def _usable(x: torch.Tensor) -> bool:
    return (
        _MKLDNN
        and x.device.type == "cpu"
        and x.dtype in _DTYPES
        and not torch.is_grad_enabled()
        and not _compiling()
    )


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`; on the CPU without autograd, one oneDNN matmul with the bias in its epilogue."""
    if _usable(x) and layer.weight.dtype == x.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def depthwise_gelu(conv: nn.Conv2d, img: torch.Tensor) -> torch.Tensor:
    """GELU(conv(img)) for a stride-1 conv; on the CPU without autograd, one oneDNN op."""
    if _usable(img) and conv.weight.dtype == img.dtype:
        return torch.ops.mkldnn._convolution_pointwise(
            img,
            conv.weight,
            conv.bias,
            conv.padding,
            conv.stride,
            conv.dilation,
            conv.groups,
            "gelu",
            [],
            "none",
        )
    # GELU over the (B, H, W, C) view: contiguous for a channels-last conv output, and faster
    # there than over the 4-d channels-last tensor.
    return F.gelu(conv(img).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def rows_per_chunk(tokens: torch.Tensor) -> int:
    """How many batch rows the transformer blocks take at a time.

    On the CPU without autograd the blocks run on chunks of about CHUNK_TOKENS tokens, so the
    FFN's 4x-wide activations stay in cache between its passes (measured: 1.2-1.3x on a forward
    of the small shape at batch 64 and of the 101M shape at batch 16; docs/performance.md).
    Training keeps whole batches: its activations are kept for the backward pass anyway.
    """
    b, n = tokens.shape[:2]
    if not _usable(tokens):
        return b
    return max(1, CHUNK_TOKENS // max(n, 1))


CHUNK_TOKENS = 2048
