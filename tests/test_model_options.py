"""The trunk options of the quality issue (adaLN-Zero, U-ViT skips, QK-norm) and masked training's
`keep` argument: each does what its paper says, and all off is the TLD network."""

from __future__ import annotations

import pytest
import torch

from tld.errors import TLDError
from tld.model import Conditioning, Denoiser, DenoiserConfig
from tld.model.cpu import apply_cpu_kernels

TINY = DenoiserConfig.preset("tiny")


def _inputs(b: int = 3, tokens: int | None = 5):
    torch.manual_seed(1)
    x, t = torch.randn(b, 4, 8, 8), torch.rand(b)
    text = torch.randn(b, TINY.text_dim) if tokens is None else torch.randn(b, tokens, TINY.text_dim)
    mask = None if tokens is None else torch.arange(tokens)[None] < torch.tensor([5, 2, 3])[:b, None]
    return x, t, dict(text_emb=text, text_mask=mask)


def test_all_options_off_keeps_the_tld_state_dict():
    keys = set(Denoiser(TINY).state_dict())
    assert not any(k.startswith(("skip_proj", "final_ada")) or ".ada." in k or "q_norm" in k for k in keys)
    on = set(Denoiser(TINY.replace(adaln=True, skips=True, qk_norm=True)).state_dict())
    assert keys < on
    assert {k.split(".")[0] for k in on - keys} == {"blocks", "skip_proj", "final_ada"}


def test_adaln_zero_starts_as_zero_output_and_learns():
    torch.manual_seed(0)
    net = Denoiser(TINY.replace(adaln=True))
    x, t, cond = _inputs()
    out = net(x, t, **cond)
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero: zero gates and a zero output layer
    out.sub(x).pow(2).mean().backward()
    assert net.out_proj.weight.grad.abs().sum() > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    out = net(x, t, **cond)
    out.pow(2).mean().backward()
    assert out.abs().sum() > 0
    # After the output layer moved, the gates get gradients too: every block can learn.
    assert all(b.ada[1].weight.grad.abs().sum() > 0 for b in net.blocks)


def test_adaln_vector_depends_on_the_text_and_the_noise_level():
    torch.manual_seed(0)
    net = Denoiser(TINY.replace(adaln=True))
    x, t, cond = _inputs()
    _, _, vec = net.conditioning(3, t, Conditioning(**cond))
    _, _, vec_t = net.conditioning(3, t + 0.3, Conditioning(**cond))
    padded = dict(cond, text_emb=cond["text_emb"].clone())
    padded["text_emb"][1, 3:] = 100.0  # masked-out tokens of row 1 must not matter
    _, _, vec_pad = net.conditioning(3, t, Conditioning(**padded))
    assert vec.shape == (3, TINY.embed_dim)
    assert not torch.allclose(vec, vec_t)
    torch.testing.assert_close(vec_pad, vec)


def test_adaln_needs_pre_norm():
    with pytest.raises(TLDError, match="adaln=True needs norm_position='pre'"):
        TINY.replace(adaln=True, norm_position="post")


def test_skips_connect_the_first_half_to_the_last():
    cfg = TINY.replace(depth=4, skips=True)
    net = Denoiser(cfg)
    assert len(net.skip_proj) == 2
    x, t, cond = _inputs()
    net(x, t, **cond).pow(2).mean().backward()
    # Block 0's output reaches the output through skip 0 (block 3) besides the trunk.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.skip_proj.parameters())
    seen = []
    hooks = [b.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[-1])) for b in net.blocks]
    net(x, t, **cond)
    assert seen == [cfg.embed_dim] * 4
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_norm_makes_attention_blind_to_the_query_key_scale(qk_norm):
    torch.manual_seed(0)
    net = Denoiser(TINY.replace(qk_norm=qk_norm)).eval()
    x, t, cond = _inputs()
    with torch.no_grad():
        before = net(x, t, **cond)
        e = TINY.embed_dim
        for block in net.blocks:
            block.attn.qkv.weight[: 2 * e] *= 7.0  # queries and keys of self-attention
            block.cross.q.weight *= 7.0
            block.cross.kv.weight[:e] *= 7.0
        after = net(x, t, **cond)
    assert torch.allclose(after, before, atol=1e-5) == qk_norm


@pytest.mark.parametrize("options", [{}, {"adaln": True, "skips": True, "qk_norm": True}])
def test_masked_forward_sees_only_the_kept_tokens(options):
    torch.manual_seed(0)
    net = Denoiser(TINY.replace(**options))
    if options:  # leave adaLN-Zero's zero start so the outputs mean something
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.1) if p.ndim > 1 else None
    x, t, cond = _inputs()
    everything = torch.arange(16).expand(3, -1)
    torch.testing.assert_close(net(x, t, keep=everything, **cond), net(x, t, **cond))
    keep = torch.tensor([[0, 3, 5, 6, 9, 15], [1, 2, 4, 8, 10, 11], [0, 1, 2, 3, 4, 5]])
    out = net(x, t, keep=keep, **cond)
    cells = torch.zeros(3, 16).scatter_(1, keep, 1.0).view(3, 1, 4, 4)
    pixels = cells.repeat_interleave(2, -2).repeat_interleave(2, -1)  # patch 2: 8x8 latents
    assert torch.equal(out * (1 - pixels), torch.zeros_like(out))  # dropped patches are zeros
    changed = x + 5.0 * (1 - pixels)  # change only what the dropped patches hold
    torch.testing.assert_close(net(changed, t, keep=keep, **cond) * pixels, out * pixels)


def test_options_run_under_the_cpu_kernel_policy():
    net = Denoiser(TINY.replace(adaln=True, skips=True, qk_norm=True)).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1) if p.ndim > 1 else None
    x, t, cond = _inputs()
    with torch.no_grad():
        expected = net(x, t, **cond)
        apply_cpu_kernels(net, "auto")
        torch.testing.assert_close(net(x, t, **cond), expected, rtol=1e-5, atol=1e-5)
