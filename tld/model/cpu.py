"""CPU kernels for the denoiser, as an explicit opt-in policy: `apply_cpu_kernels(net, "auto")`.

The network (`tld.model.blocks`, `tld.model.denoiser`) is plain PyTorch. This module swaps some of
its modules for subclasses that compute the same function (same parameters, same state dict, equal
up to float rounding) with faster CPU kernels, and sets the denoiser's inference chunking:

- every `nn.Linear` of the transformer blocks becomes a `CPULinear`: without autograd, oneDNN's
  linear with the bias in its epilogue; with autograd, `_LinearFn` (matmuls on the faster library,
  and a weight gradient in the faster of two equal orientations);
- the FFN's depthwise conv and GELU become one `DepthwiseGELU`: oneDNN's conv with GELU fused
  without autograd, GELU over the token-major view with it;
- `inference_chunk_tokens`: without autograd the blocks run on chunks of about 2048 tokens, so the
  FFN's 4x-wide activations stay in cache (1.2-1.3x on forwards; docs/performance.md).

The fused ops have no autograd formula, so they run only where no graph is recorded, on CPU
tensors of float32 or bfloat16 (bfloat16 only where oneDNN has kernels for it), outside
torch.compile (which makes its own fusions); everything else takes the plain ops.

Which matmul library is faster depends on the CPU (docs/performance.md, one thread, fp32):
- Intel: torch's BLAS (MKL) is as fast as oneDNN or faster. The fused linear is taken only for
  biased weights of at most `linear_max_weight` elements, and training keeps aten's matmuls.
- other CPUs with AVX-512 (AMD Zen 4: MKL does not use AVX-512 there): oneDNN ran these shapes
  1.1-1.4x faster, so every linear's forward and input gradient goes to oneDNN, in training too.
- AVX2-only AMD CPUs (Zen 3): MKL's AVX2 kernels were as fast or faster, so they get the Intel rule.

The policy is chosen once, by whoever builds the model (the pipeline's `cpu_kernels=`, the training
config's `cpu_kernels`, the CLI's `--cpu-kernels`): "auto" (the rule above), "onednn", "blas" or
"off" (the plain network). Nothing here reads the environment or keeps process state.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tld.errors import TLDError
from tld.model.blocks import LocalFFN

CPU_KERNEL_CHOICES = ("auto", "onednn", "blas", "off")


@dataclass(frozen=True)
class CPUKernels:
    """A resolved policy: which matmul library, whether oneDNN has bf16 kernels, and the thresholds
    measured in docs/performance.md."""

    matmul: str = "blas"  # "onednn" | "blas"
    bf16: bool = False
    chunk_tokens: int = 2048
    linear_max_weight: int = 1 << 20
    reorient_max_in: int = 256

    @property
    def dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16) if self.bf16 else (torch.float32,)


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...), or "" where it cannot be read."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def onednn_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (none on AVX2-only CPUs such as AMD Zen 3,
    where its linear and conv fail with "could not create a primitive descriptor")."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def resolve_cpu_kernels(
    choice: str, vendor: str | None = None, avx512: bool | None = None
) -> CPUKernels | None:
    """The policy for `choice` on this machine (or on the given vendor / AVX-512 flag); None for
    "off", or where torch has no oneDNN at all."""
    if choice not in CPU_KERNEL_CHOICES:
        raise TLDError(f"cpu_kernels must be one of {', '.join(CPU_KERNEL_CHOICES)}, got {choice!r}")
    if choice == "off" or not torch.backends.mkldnn.is_available():
        return None
    if choice == "auto":
        vendor = cpu_vendor() if vendor is None else vendor
        if avx512 is None:
            avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        choice = "onednn" if avx512 and vendor not in ("", "GenuineIntel") else "blas"
    return CPUKernels(matmul=choice, bf16=onednn_bf16())


def apply_cpu_kernels(net: nn.Module, choice: str | CPUKernels | None = "auto") -> nn.Module:
    """Swap `net`'s block linears and FFN convs for the policy's kernels (in place; returns `net`).

    Idempotent, and "off" / None restores the plain modules. Parameters are kept (not copied), so
    optimizers and EMA built before or after see the same tensors.
    """
    policy = resolve_cpu_kernels(choice) if isinstance(choice, str) else choice
    for module in list(net.blocks.modules()):
        if isinstance(module, nn.ModuleDict):
            continue  # adapters' per-name layers (peft's lora_A / lora_B): small, left plain
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, _retype(child, CPULinear if policy else nn.Linear, policy))
        if isinstance(module, LocalFFN):
            module.dwconv = _retype(module.dwconv, DepthwiseGELU if policy else nn.Conv2d, policy)
            module.act = nn.Identity() if policy else nn.GELU()  # GELU moves into DepthwiseGELU
    net.inference_chunk_tokens = policy.chunk_tokens if policy is not None else 0
    return net


def _retype(module: nn.Module, cls: type[nn.Module], policy: CPUKernels | None) -> nn.Module:
    """`module` as an instance of `cls` (a subclass of its plain type, or the plain type itself)
    sharing its parameters, buffers and hooks."""
    new = cls.__new__(cls)
    new.__dict__ = dict(module.__dict__)
    new.__dict__.pop("policy", None)
    if policy is not None:
        new.policy = policy
    return new


def _compiling() -> bool:
    # torch.compiler.is_compiling() imports torch._dynamo (seconds at the first call); a process
    # that never imported it cannot be compiling.
    return "torch._dynamo" in sys.modules and torch.compiler.is_compiling()


def _usable(x: torch.Tensor, policy: CPUKernels) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in policy.dtypes
        and not torch.is_grad_enabled()
        and not _compiling()
    )


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight^T + bias by oneDNN (any leading dims; `weight` may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class CPULinear(nn.Linear):
    """nn.Linear on the policy's kernels (module docstring); the same parameters and function."""

    policy: CPUKernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, policy = self.weight, self.policy
        biased_small = self.bias is not None and w.numel() <= policy.linear_max_weight
        if _usable(x, policy) and w.dtype == x.dtype and (policy.matmul == "onednn" or biased_small):
            return _onednn_linear(x, w, self.bias)
        trainable = x.device.type == "cpu" and x.dtype == w.dtype and not torch.is_autocast_enabled("cpu")
        if torch.is_grad_enabled() and trainable and not _compiling():
            return _LinearFn.apply(x, w, self.bias, policy)
        return F.linear(x, w, self.bias)


class _LinearFn(torch.autograd.Function):
    """F.linear for training on the CPU. Where the policy's matmul is "onednn", the forward and the
    input gradient (g @ W, as a linear with the transposed weight) run on oneDNN.

    The weight gradient stays on aten's mm (oneDNN was slower for it at the small shape: 54-60
    against 78 GFLOP/s), computed as (x^T g)^T instead of g^T x for a narrow layer that widens (at
    most `reorient_max_in` inputs, more outputs): 128 -> 512 over 4096 tokens 4.8 -> 3.3 ms, 128 ->
    384 3.4 -> 2.5 ms on one AVX-512 thread; at 768 -> 3072 the copy back makes it slower, so wider
    layers keep g^T x. The gradient is returned contiguous: a transposed one would make every later
    accumulation into `.grad` a strided add.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, policy: CPUKernels):
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.policy = bias is not None, policy
        if policy.matmul == "onednn" and x.dtype in policy.dtypes:
            return _onednn_linear(x, weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        policy = ctx.policy
        g = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if policy.matmul == "onednn" and g.dtype in policy.dtypes:
                grad_x = _onednn_linear(g.contiguous(), weight.t(), None).view(x.shape)
            else:
                grad_x = torch.mm(g, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1])
            out_features, in_features = weight.shape
            if out_features > in_features and in_features <= policy.reorient_max_in:
                grad_w = torch.mm(x2.t(), g).t().contiguous()
            else:
                grad_w = torch.mm(g.t(), x2)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None


class DepthwiseGELU(nn.Conv2d):
    """GELU(depthwise conv(x)) (the FFN's `act` becomes the identity): one oneDNN op without
    autograd; with it, GELU over the (B, H, W, C) view, contiguous for a channels-last conv output
    and faster there than over the 4-d channels-last tensor."""

    policy: CPUKernels

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if _usable(img, self.policy) and self.weight.dtype == img.dtype:
            return torch.ops.mkldnn._convolution_pointwise(
                img, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "gelu", [], "none",
            )  # fmt: skip
        return F.gelu(super().forward(img).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
