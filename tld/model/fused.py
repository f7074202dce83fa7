"""CPU kernels for the denoiser: oneDNN's linear with the bias fused and the depthwise conv with bias
and GELU fused (the ops torch.compile's CPU backend emits, called directly) for inference, and for
training a linear whose weight gradient takes the faster of two equal matmul orientations.

The plain path computes `y = x @ W.T`, then copies the bias into a fresh buffer, and runs a second
pass over the conv's 4x-wide output for GELU. The fused ops have no autograd formula, so they are
used only where no graph is recorded (inference mode / no_grad), on CPU tensors of float32 or
bfloat16, outside torch.compile (which makes its own fusions); everything else takes the plain
ops. The fused linear is taken only for weights of at most LINEAR_MAX_WEIGHT elements: measured
over whole forwards it was 8-10% faster at the small shape (128 x 512 weights) and 5-9% slower
at 101M's (768 x 3072) than aten's addmm (docs/performance.md). Every path computes the same
function (tests/test_convert.py compares them with the original network).
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
    """`layer(x)`; on the CPU without autograd, for a biased layer of at most LINEAR_MAX_WEIGHT
    weights, one oneDNN matmul with the bias in its epilogue; on the CPU with autograd, `_Linear`
    (the same forward, a faster weight gradient)."""
    w = layer.weight
    if _usable(x) and w.dtype == x.dtype and layer.bias is not None and w.numel() <= LINEAR_MAX_WEIGHT:
        return torch.ops.mkldnn._linear_pointwise(x, w, layer.bias, "none", [], "")
    if _trainable(x, layer.weight):
        return _Linear.apply(x, layer.weight, layer.bias)
    return layer(x)


def _trainable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype
        and not torch.is_autocast_enabled("cpu")
        and not _compiling()
    )


class _Linear(torch.autograd.Function):
    """F.linear whose weight gradient is computed as (x^T g)^T instead of g^T x for a narrow layer that
    widens (at most REORIENT_MAX_IN inputs, more outputs).

    Both are the same sums. Measured on the AVX-512 CPU of docs/performance.md (one thread, MKL),
    including the copy back to the weight's layout: 128 -> 512 over 4096 tokens 4.8 -> 3.3 ms,
    128 -> 384 3.4 -> 2.5 ms (the small model's fc1 and qkv); at 768 -> 3072 / 2304 over 2048
    tokens the copy makes it slower (49.5 -> 52.0 / 37.5 -> 42.6 ms), so wider layers keep g^T x.
    The gradient is returned contiguous: a transposed one would make every later accumulation into
    `.grad` (gradient accumulation) a strided add.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(g, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])
            out_features, in_features = weight.shape
            if out_features > in_features and in_features <= REORIENT_MAX_IN:
                grad_w = torch.mm(x2.t(), g).t().contiguous()
            else:
                grad_w = torch.mm(g.t(), x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


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
LINEAR_MAX_WEIGHT = 1 << 20
REORIENT_MAX_IN = 256
