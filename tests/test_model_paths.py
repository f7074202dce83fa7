"""The network's faster paths compute the same function as the plain ones: the cross-attention with
its query projection folded into the keys, and the CPU training linear (tld.model.fused._Linear)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig, fused
from tld.model.blocks import CrossAttention, folds_query
from tld.model.fused import default_matmul, linear


def _grads(out: torch.Tensor, upstream: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, tensors, upstream))


@pytest.mark.parametrize("layout", ["split", "interleaved"])
@pytest.mark.parametrize("masked", [False, True])
def test_folded_cross_attention_equals_the_projected_one(layout, masked):
    torch.manual_seed(0)
    attn = CrossAttention(64, 4, layout)
    x = torch.randn(3, 10, 64, requires_grad=True)
    cond = (3 * torch.randn(3, 40, 64)).requires_grad_()  # peaked attention: outputs far from zero
    mask = torch.rand(3, 40) > 0.5 if masked else None
    if mask is not None:
        mask[:, 0] = True
    assert not folds_query(10, 40, 64, 4)  # forward projects the queries at these shapes
    expected, got = attn(x, cond, mask), attn.folded(x, cond, mask)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(expected)
    tensors = [x, cond, attn.q.weight, attn.kv.weight]
    for a, b in zip(_grads(got, upstream, tensors), _grads(expected, upstream, tensors)):
        # Sums over tokens of peaked softmaxes: float rounding relative to the gradient's scale.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    if mask is not None:  # masked keys do not matter
        changed = cond.detach().clone()
        changed[~mask] = 50.0
        torch.testing.assert_close(attn.folded(x, changed, mask), got, rtol=1e-5, atol=1e-6)


def test_folding_is_chosen_when_it_saves_multiply_adds():
    assert folds_query(64, 2, 128, 2)  # the small shape: 8x8 tokens, noise + pooled text
    assert folds_query(256, 2, 768, 12)  # 101M
    assert not folds_query(256, 78, 768, 12)  # 77 CLIP tokens: projecting the queries is cheaper


class _Calls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("text_tokens", [None, 6])
def test_denoiser_folds_cross_attention_for_few_conditioning_tokens(text_tokens):
    cfg = DenoiserConfig.preset("tiny")
    net = Denoiser(cfg)
    text = torch.randn(2, cfg.text_dim) if text_tokens is None else torch.randn(2, text_tokens, cfg.text_dim)
    with _Calls() as calls:
        net(torch.randn(2, cfg.in_channels, 8, 8), torch.rand(2), text_emb=text)
    attention_calls = sum("scaled_dot_product" in name for name in calls.names)
    n, m = 16, 1 + (1 if text_tokens is None else text_tokens)
    folded = folds_query(n, m, cfg.embed_dim, cfg.cross_attn_heads)
    assert folded == (text_tokens is None)
    assert attention_calls == cfg.depth * (1 if folded else 2)


# Narrow widening (the reoriented weight gradient), narrowing, and wide widening layers.
@pytest.mark.parametrize("shape", [(24, 96), (96, 24), (300, 600)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("matmul", ["blas", "onednn"])
def test_training_linear_equals_f_linear(shape, bias, matmul, monkeypatch):
    monkeypatch.setattr(fused, "MATMUL", matmul)
    torch.manual_seed(0)
    layer = torch.nn.Linear(*shape, bias=bias)
    x = torch.randn(2, 7, shape[0], requires_grad=True)
    with _Calls() as ops:
        linear(layer, x).sum().backward()
    layer.zero_grad(set_to_none=True)
    got, expected = linear(layer, x), F.linear(x, layer.weight, layer.bias)
    assert got.grad_fn.name() == "_LinearBackward"  # the custom function, not addmm's backward
    # oneDNN runs the forward and the input gradient where chosen, aten the rest.
    assert ops.names.count("mkldnn._linear_pointwise") == (2 if matmul == "onednn" else 0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(expected)
    tensors = [x, *layer.parameters()]
    reference = _grads(expected, upstream, tensors)
    for a, b in zip(_grads(got, upstream, tensors), reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for _ in range(2):  # accumulated as gradient accumulation does
        linear(layer, x).backward(upstream)
    assert layer.weight.grad.is_contiguous()  # the optimizer sees the parameter's own layout
    torch.testing.assert_close(layer.weight.grad, 2 * reference[1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear(layer, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("matmul", ["blas", "onednn"])
def test_inference_linear_takes_onednn_by_the_machine_rule(matmul, monkeypatch):
    monkeypatch.setattr(fused, "MATMUL", matmul)
    monkeypatch.setattr(fused, "LINEAR_MAX_WEIGHT", 24 * 96)
    torch.manual_seed(0)
    cases = [((24, 96), True, True), ((48, 96), True, False), ((24, 96), False, False)]
    for shape, bias, small_biased in cases:
        layer = torch.nn.Linear(*shape, bias=bias)
        x = torch.randn(2, 7, shape[0])
        with torch.no_grad(), _Calls() as ops:
            got = linear(layer, x)
        assert ("mkldnn._linear_pointwise" in ops.names) == (small_biased or matmul == "onednn")
        torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)


def test_default_matmul_follows_the_cpu_vendor_and_the_override():
    onednn = "onednn" if torch.backends.mkldnn.is_available() else "blas"
    assert default_matmul("GenuineIntel", "", avx512=True) == "blas"
    assert default_matmul("", "", avx512=True) == "blas"  # unknown: torch's own choice
    assert default_matmul("AuthenticAMD", "", avx512=True) == onednn  # Zen 4: MKL skips AVX-512
    assert default_matmul("AuthenticAMD", "", avx512=False) == "blas"  # Zen 3: MKL's AVX2 is faster
    assert default_matmul("GenuineIntel", "onednn", avx512=False) == "onednn"
    assert default_matmul("AuthenticAMD", "blas", avx512=True) == "blas"
    with pytest.raises(TLDError, match="TLD_CPU_MATMUL must be 'onednn' or 'blas', got 'mkl'"):
        default_matmul("AuthenticAMD", "mkl")
    # Without arguments: this machine's vendor and torch's CPU capability.
    here = default_matmul(override="")
    capability = torch.backends.cpu.get_cpu_capability()
    assert here == default_matmul(fused._cpu_vendor(), "", avx512=capability.startswith("AVX512"))


def test_a_bad_override_fails_at_the_first_linear_not_at_import(monkeypatch):
    monkeypatch.setattr(fused, "MATMUL", None)
    monkeypatch.setenv("TLD_CPU_MATMUL", "mkl")
    layer = torch.nn.Linear(4, 8)
    with torch.no_grad(), pytest.raises(TLDError, match="TLD_CPU_MATMUL must be 'onednn' or 'blas'"):
        linear(layer, torch.randn(2, 4))
    monkeypatch.setenv("TLD_CPU_MATMUL", "blas")
    linear(layer, torch.randn(2, 4))
    assert fused.MATMUL == "blas"


def test_cpu_vendor_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert fused._cpu_vendor(info) == "AuthenticAMD"
    assert fused._cpu_vendor(tmp_path / "missing") == ""


@pytest.mark.parametrize("matmul", ["blas", "onednn"])
def test_bfloat16_runs_on_every_cpu(matmul, monkeypatch):
    # oneDNN has no bfloat16 kernels on AVX2-only CPUs (AMD Zen 3): there the fused paths must step
    # aside for aten's ops rather than fail. On every CPU the result is the plain ops' to bf16 rounding.
    monkeypatch.setattr(fused, "MATMUL", matmul)
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 64).to(torch.bfloat16)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64).to(torch.bfloat16)
    x = torch.randn(2, 16, 32, dtype=torch.bfloat16)
    img = torch.randn(2, 64, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), _Calls() as ops:
        got, got_conv = linear(layer, x), fused.depthwise_gelu(conv, img)
    fused_ops = {"mkldnn._linear_pointwise", "mkldnn._convolution_pointwise"} & set(ops.names)
    assert bool(fused_ops) == (torch.bfloat16 in fused._DTYPES)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got_conv, F.gelu(conv(img)), rtol=2e-2, atol=2e-2)
    x.requires_grad_(True)
    linear(layer, x).float().sum().backward()  # the training linear, in bf16
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    expected = layer.weight.float().sum(0).expand(2, 16, 32)
    torch.testing.assert_close(x.grad.float(), expected, rtol=2e-2, atol=2e-2)
