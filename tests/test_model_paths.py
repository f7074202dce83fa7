"""The network's faster paths compute the same function as the plain ones: the cross-attention with
its query projection folded into the keys, and the CPU kernel policy's modules (tld.model.cpu)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig
from tld.model.blocks import CrossAttention, folds_query
from tld.model.cpu import (
    CPUKernels,
    CPULinear,
    DepthwiseGELU,
    apply_cpu_kernels,
    cpu_vendor,
    onednn_bf16,
    resolve_cpu_kernels,
)

ONEDNN = torch.backends.mkldnn.is_available()


def _linear(layer: torch.nn.Linear, policy: CPUKernels) -> torch.nn.Linear:
    """`layer` as the policy's CPULinear (the same parameters)."""
    holder = torch.nn.Module()
    holder.blocks = torch.nn.ModuleList([torch.nn.Sequential(layer)])
    apply_cpu_kernels(holder, policy)
    return holder.blocks[0][0]


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
def test_training_linear_equals_f_linear(shape, bias, matmul):
    torch.manual_seed(0)
    layer = _linear(torch.nn.Linear(*shape, bias=bias), CPUKernels(matmul=matmul, bf16=onednn_bf16()))
    assert isinstance(layer, CPULinear)
    x = torch.randn(2, 7, shape[0], requires_grad=True)
    with _Calls() as ops:
        layer(x).sum().backward()
    layer.zero_grad(set_to_none=True)
    got, expected = layer(x), F.linear(x, layer.weight, layer.bias)
    assert got.grad_fn.name() == "_LinearFnBackward"  # the custom function, not addmm's backward
    # oneDNN runs the forward and the input gradient where chosen, aten the rest.
    assert ops.names.count("mkldnn._linear_pointwise") == (2 if matmul == "onednn" else 0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(expected)
    tensors = [x, *layer.parameters()]
    reference = _grads(expected, upstream, tensors)
    for a, b in zip(_grads(got, upstream, tensors), reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for _ in range(2):  # accumulated as gradient accumulation does
        layer(x).backward(upstream)
    assert layer.weight.grad.is_contiguous()  # the optimizer sees the parameter's own layout
    torch.testing.assert_close(layer.weight.grad, 2 * reference[1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("matmul", ["blas", "onednn"])
def test_inference_linear_takes_onednn_by_the_machine_rule(matmul):
    policy = CPUKernels(matmul=matmul, linear_max_weight=24 * 96)
    torch.manual_seed(0)
    cases = [((24, 96), True, True), ((48, 96), True, False), ((24, 96), False, False)]
    for shape, bias, small_biased in cases:
        layer = _linear(torch.nn.Linear(*shape, bias=bias), policy)
        x = torch.randn(2, 7, shape[0])
        with torch.no_grad(), _Calls() as ops:
            got = layer(x)
        assert ("mkldnn._linear_pointwise" in ops.names) == (small_biased or matmul == "onednn")
        torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)


def test_auto_policy_follows_the_cpu_vendor():
    if not ONEDNN:
        assert resolve_cpu_kernels("auto") is None
        return
    assert resolve_cpu_kernels("auto", "GenuineIntel", avx512=True).matmul == "blas"
    assert resolve_cpu_kernels("auto", "", avx512=True).matmul == "blas"  # unknown: torch's own choice
    assert resolve_cpu_kernels("auto", "AuthenticAMD", avx512=True).matmul == "onednn"  # Zen 4
    assert resolve_cpu_kernels("auto", "AuthenticAMD", avx512=False).matmul == "blas"  # Zen 3
    assert resolve_cpu_kernels("onednn", "GenuineIntel", avx512=False).matmul == "onednn"
    assert resolve_cpu_kernels("blas", "AuthenticAMD", avx512=True).matmul == "blas"
    assert resolve_cpu_kernels("off") is None
    with pytest.raises(TLDError, match="cpu_kernels must be one of auto, onednn, blas, off, got 'mkl'"):
        resolve_cpu_kernels("mkl")
    # Without arguments: this machine's vendor and torch's CPU capability.
    capability = torch.backends.cpu.get_cpu_capability()
    expected = resolve_cpu_kernels("auto", cpu_vendor(), avx512=capability.startswith("AVX512"))
    assert resolve_cpu_kernels("auto") == expected


def test_cpu_vendor_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu_vendor(info) == "AuthenticAMD"
    assert cpu_vendor(tmp_path / "missing") == ""


def test_policy_swaps_modules_in_place_and_off_restores_the_plain_network():
    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig.preset("tiny")).eval()
    plain_state = {k: v.clone() for k, v in net.state_dict().items()}
    x, t, text = torch.randn(3, 4, 8, 8), torch.rand(3), torch.randn(3, 16)
    with torch.no_grad():
        expected = net(x, t, text_emb=text)
    params = [id(p) for p in net.parameters()]
    apply_cpu_kernels(net, CPUKernels(matmul="onednn" if ONEDNN else "blas", chunk_tokens=16))
    assert [id(p) for p in net.parameters()] == params  # the same tensors: optimizers and EMA keep them
    assert net.inference_chunk_tokens == 16
    ffn = net.blocks[0].ffn
    assert isinstance(ffn.fc1, CPULinear) and isinstance(ffn.dwconv, DepthwiseGELU)
    assert isinstance(ffn.act, torch.nn.Identity) and isinstance(net.blocks[0].attn.qkv, CPULinear)
    assert net.state_dict().keys() == plain_state.keys()
    with torch.no_grad():  # 16 tokens a chunk: one row at a time
        torch.testing.assert_close(net(x, t, text_emb=text), expected, rtol=1e-5, atol=1e-5)
    apply_cpu_kernels(net, "off")
    assert type(net.blocks[0].ffn.fc1) is torch.nn.Linear and type(net.blocks[0].ffn.dwconv) is torch.nn.Conv2d
    assert isinstance(net.blocks[0].ffn.act, torch.nn.GELU) and net.inference_chunk_tokens == 0
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text_emb=text), expected, rtol=0, atol=0)


@pytest.mark.parametrize("matmul", ["blas", "onednn"])
def test_bfloat16_runs_on_every_cpu(matmul):
    # oneDNN has no bfloat16 kernels on AVX2-only CPUs (AMD Zen 3): there the fused paths must step
    # aside for aten's ops rather than fail. On every CPU the result is the plain ops' to bf16 rounding.
    policy = CPUKernels(matmul=matmul, bf16=onednn_bf16())
    torch.manual_seed(0)
    layer = _linear(torch.nn.Linear(32, 64).to(torch.bfloat16), policy)
    plain_conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64).to(torch.bfloat16)
    ffn_holder = torch.nn.Module()
    from tld.model.blocks import LocalFFN

    ffn = LocalFFN(16, 4, 0.0).to(torch.bfloat16)
    ffn.dwconv = plain_conv
    ffn_holder.blocks = torch.nn.ModuleList([ffn])
    apply_cpu_kernels(ffn_holder, policy)
    x = torch.randn(2, 16, 32, dtype=torch.bfloat16)
    img = torch.randn(2, 64, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), _Calls() as ops:
        got, got_conv = layer(x), ffn.dwconv(img)
    fused_ops = {"mkldnn._linear_pointwise", "mkldnn._convolution_pointwise"} & set(ops.names)
    assert bool(fused_ops) == (torch.bfloat16 in policy.dtypes)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=2e-2, atol=2e-2)
    expected_conv = F.gelu(F.conv2d(img, ffn.dwconv.weight, ffn.dwconv.bias, padding=1, groups=64))
    torch.testing.assert_close(got_conv, expected_conv, rtol=2e-2, atol=2e-2)
    x.requires_grad_(True)
    layer(x).float().sum().backward()  # the training linear, in bf16
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    expected = layer.weight.float().sum(0).expand(2, 16, 32)
    torch.testing.assert_close(x.grad.float(), expected, rtol=2e-2, atol=2e-2)


def test_chunked_inference_with_a_per_token_text_mask_equals_whole_batches():
    # The bundled model's path above 16 guided images: per-token text with padding, rows in chunks.
    torch.manual_seed(0)
    net = Denoiser(DenoiserConfig.preset("tiny")).eval()
    b, tokens = 5, 6
    x, t, text = torch.randn(b, 4, 8, 8), torch.rand(b), torch.randn(b, tokens, 16)
    mask = torch.arange(tokens)[None] < torch.tensor([6, 1, 3, 6, 2])[:, None]
    drop = torch.tensor([False, True, False, False, True])
    with torch.no_grad():
        expected = net(x, t, text_emb=text, text_mask=mask, drop_cond=drop)
    apply_cpu_kernels(net, CPUKernels(chunk_tokens=32))  # 16 tokens per latent: 2 rows a chunk
    with torch.no_grad():
        assert net._chunk_rows(torch.zeros(b, 16, 32)) == 2
        got = net(x, t, text_emb=text, text_mask=mask, drop_cond=drop)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
