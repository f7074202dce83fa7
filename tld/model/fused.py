"""CPU kernels for the denoiser: oneDNN's linear with the bias fused and the depthwise conv with bias
and GELU fused (the ops torch.compile's CPU backend emits, called directly) for inference, and for
training a linear whose matmuls go to the faster library of the machine and whose weight gradient
takes the faster of two equal matmul orientations.

The plain path computes `y = x @ W.T`, then copies the bias into a fresh buffer, and runs a second
pass over the conv's 4x-wide output for GELU. The fused ops have no autograd formula, so they are
used only where no graph is recorded (inference mode / no_grad), on CPU tensors of float32 or
bfloat16 (bfloat16 only where oneDNN has kernels for it on this CPU), outside torch.compile (which
makes its own fusions); everything else takes the plain ops.

Which matmul library is faster depends on the CPU (docs/performance.md, one thread, fp32):
- On Intel CPUs torch's BLAS (MKL) is as fast as oneDNN or faster. There the fused linear is taken
  only for weights of at most LINEAR_MAX_WEIGHT elements (over whole forwards it was 8-10% faster
  at the small shape's 128 x 512 weights and 5-9% slower at 101M's 768 x 3072), and training keeps
  aten's matmuls.
- On other CPUs with AVX-512 (AMD EPYC Zen 4: MKL does not use AVX-512 there) oneDNN's matmul ran
  these shapes 1.1-1.4x faster, so every linear's forward and input gradient goes to oneDNN, in
  training too.
- On AVX2-only AMD CPUs (Zen 3) MKL's AVX2 kernels were as fast as oneDNN's at the small shape and
  faster at 101M (88-93 against 46-76 GFLOP/s; the 101M train step took 1.36x as long on oneDNN),
  so they get the Intel rule.
`matmul()` makes the choice ("onednn" or "blas") at the first linear and keeps it in `MATMUL`; the
TLD_CPU_MATMUL environment variable overrides it. Every path computes the same function up to
float rounding (tests/test_convert.py compares them with the original network,
tests/test_model_paths.py each path with F.linear).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tld.errors import TLDError

_MKLDNN = torch.backends.mkldnn.is_available()


def _bf16_kernels() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU. On an AVX2-only CPU (AMD Zen 3, for one) it has
    none: its linear and conv then fail with "could not create a primitive descriptor"."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(_MKLDNN and check is not None and check())


# The dtypes the oneDNN paths take; any other dtype goes to aten's ops.
_DTYPES = (torch.float32, torch.bfloat16) if _bf16_kernels() else (torch.float32,)


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
    """`layer(x)`; on the CPU without autograd, one oneDNN matmul with the bias in its epilogue (where
    MATMUL is "blas", only for a biased layer of at most LINEAR_MAX_WEIGHT weights); on the CPU
    with autograd, `_Linear` (the same function, faster matmuls)."""
    w = layer.weight
    biased_small = layer.bias is not None and w.numel() <= LINEAR_MAX_WEIGHT
    if _usable(x) and w.dtype == x.dtype and (matmul() == "onednn" or biased_small):
        return _onednn_linear(x, w, layer.bias)
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


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T + bias by oneDNN (any leading dims; `weight` may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _onednn_training(x: torch.Tensor) -> bool:
    return matmul() == "onednn" and _MKLDNN and x.dtype in _DTYPES


class _Linear(torch.autograd.Function):
    """F.linear for training on the CPU. Where MATMUL is "onednn", the forward and the input gradient
    (g @ W, as a linear with the transposed weight) run on oneDNN.

    The weight gradient stays on aten's mm (oneDNN was slower for it at the small shape: 54-60
    against 78 GFLOP/s), computed as (x^T g)^T instead of g^T x for a narrow layer that widens (at
    most REORIENT_MAX_IN inputs, more outputs).

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
        if _onednn_training(x):
            return _onednn_linear(x, weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if _onednn_training(g):
                grad_x = _onednn_linear(g.contiguous(), weight.t(), None).view(x.shape)
            else:
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


def _cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...), or "" where it cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _avx512() -> bool:
    """Whether torch's CPU kernels run at the AVX-512 level here (ATen's own CPU capability check)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def default_matmul(vendor: str | None = None, override: str | None = None, avx512: bool | None = None) -> str:
    """ "onednn" or "blas": the TLD_CPU_MATMUL override if set, else "onednn" on non-Intel CPUs with
    AVX-512 and "blas" elsewhere: Intel, AVX2-only, or an unknown vendor (see the module docstring)."""
    override = os.environ.get("TLD_CPU_MATMUL", "") if override is None else override
    if override:
        if override not in ("onednn", "blas"):
            raise TLDError(f"TLD_CPU_MATMUL must be 'onednn' or 'blas', got {override!r}")
        return override
    vendor = _cpu_vendor() if vendor is None else vendor
    avx512 = _avx512() if avx512 is None else avx512
    return "onednn" if _MKLDNN and avx512 and vendor not in ("", "GenuineIntel") else "blas"


CHUNK_TOKENS = 2048
LINEAR_MAX_WEIGHT = 1 << 20
REORIENT_MAX_IN = 256
MATMUL: str | None = None  # set by matmul() at the first linear


def matmul() -> str:
    """The matmul library of this process, chosen once by `default_matmul`. Not at import: a bad
    TLD_CPU_MATMUL then fails where the caller reports errors (one line from the CLI)."""
    global MATMUL
    if MATMUL is None:
        MATMUL = default_matmul()
    return MATMUL
