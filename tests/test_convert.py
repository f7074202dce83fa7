"""Loading original TLD checkpoints: outputs must equal the original network's for the same weights.

The reference network (`OriginalTLD`, both upstream variants) lives in tests/reference_tld.py,
shared with bench/vs_original.py.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from reference_tld import make_original as _original
from torch.utils._python_dispatch import TorchDispatchMode

from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig
from tld.model.convert import infer_config, load_original_tld, rename_original
from tld.model.cpu import apply_cpu_kernels


def _inputs(batch=3, image=8, text=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, image, image, generator=g),
        torch.rand(batch, 1, generator=g),
        torch.randn(batch, text, generator=g),
    )


@pytest.mark.parametrize("variant", ["released", "main"])
def test_converted_outputs_equal_original(variant):
    # embed 256: 4 heads, so "main" (256 // 64 = 4 cross heads, "(h d)") and "released" ("(d h)")
    # differ in every attention; each must match only its own reference.
    orig = _original(embed=256, variant=variant)
    net = load_original_tld(orig.state_dict(), variant=variant)
    x, t, label = _inputs()
    with torch.no_grad():
        expected, got = orig(x, t, label), net(x, t, text_emb=label)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Noise level as (B,) gives the same result as the original's (B, 1).
    torch.testing.assert_close(net(x, t[:, 0], text_emb=label), expected, rtol=1e-5, atol=1e-5)


def test_inferred_config_reads_shapes():
    cfg = infer_config(_original(embed=128, layers=3, image=16, patch=4, noise_dims=32, text=24).state_dict())
    assert (cfg.embed_dim, cfg.depth, cfg.latent_size, cfg.patch_size) == (128, 3, (16, 16), 4)
    assert (cfg.noise_embed_dim, cfg.text_dim, cfg.num_heads, cfg.cross_heads) == (32, 24, 2, 4)
    assert (cfg.norm_position, cfg.head_layout, cfg.in_channels, cfg.out_channels) == (
        "post",
        "interleaved",
        4,
        4,
    )


def test_checkpoint_file_with_ema_and_compile_prefix(tmp_path):
    orig = _original(seed=3, image=16, patch=4)
    ema = {"_orig_mod." + k: v for k, v in orig.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"model_ema": ema, "step": torch.tensor(7)}, path)
    cfg = DenoiserConfig(
        latent_size=16, patch_size=4, embed_dim=128, depth=2, noise_embed_dim=32, text_dim=24
    )
    net = load_original_tld(path, config=cfg)
    x, t, label = _inputs(image=16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text_emb=label), orig(x, t, label), rtol=1e-5, atol=1e-5)


def test_converted_model_round_trips_through_save_pretrained(tmp_path):
    orig = _original(seed=5)
    load_original_tld(orig.state_dict()).save_pretrained(tmp_path / "m")
    net = Denoiser.from_pretrained(tmp_path / "m").eval()
    x, t, label = _inputs(seed=9)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text_emb=label), orig(x, t, label), rtol=1e-5, atol=1e-5)


def test_missing_and_unexpected_keys_are_named():
    state = _original().state_dict()
    state.pop("label_proj.bias")
    state["denoiser_trans_block.first_proj.0.weight"] = torch.zeros(3)
    with pytest.raises(TLDError, match=r"missing keys \[text_proj.bias\].*unexpected keys.*first_proj"):
        load_original_tld(state)


def test_shape_mismatch_with_given_config_is_named():
    state = _original(embed=128, text=24).state_dict()
    cfg = DenoiserConfig(latent_size=8, embed_dim=128, depth=2, noise_embed_dim=32, text_dim=32)
    with pytest.raises(TLDError, match=r"text_proj.weight: expected \(128, 32\), found \(128, 24\)"):
        load_original_tld(state, config=cfg)


def test_depth_mismatch_with_given_config_lists_missing_blocks():
    state = _original(layers=2).state_dict()
    cfg = DenoiserConfig(latent_size=8, embed_dim=128, depth=3, noise_embed_dim=32, text_dim=24)
    with pytest.raises(TLDError, match=r"missing keys \[blocks\.2\."):
        load_original_tld(state, config=cfg)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(TLDError, match="no such file"):
        load_original_tld(tmp_path / "absent.pth")
    path = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(TLDError, match="label_proj.weight"):
        load_original_tld(path)


def test_variants_are_different_networks_for_the_same_weights():
    orig = _original(embed=256, variant="main")
    x, t, label = _inputs()
    with torch.no_grad():
        wrong = load_original_tld(orig.state_dict(), variant="released")(x, t, text_emb=label)
        assert (wrong - orig(x, t, label)).abs().max() > 1e-2
    main_cfg = load_original_tld(orig.state_dict(), variant="main").config
    assert (main_cfg.norm_position, main_cfg.head_layout, main_cfg.cross_attn_heads) == ("pre", "split", 4)
    assert not main_cfg.final_norm
    with pytest.raises(TLDError, match=r"variant must be one of \('released', 'main'\), got 'dev'"):
        load_original_tld(orig.state_dict(), variant="dev")


def test_convert_command_takes_the_variant(tmp_path):
    from tld.cli import main

    orig = _original(embed=256, variant="main")
    torch.save(orig.state_dict(), tmp_path / "main.pth")
    assert main(["convert", str(tmp_path / "main.pth"), "-o", str(tmp_path / "m"), "--variant", "main"]) == 0
    net = Denoiser.from_pretrained(tmp_path / "m").eval()
    x, t, label = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, text_emb=label), orig(x, t, label), rtol=1e-5, atol=1e-5)


class _OpNames(TorchDispatchMode):
    """Records the name of every op the dispatcher runs."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["released", "main"])
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference_mode"])
@pytest.mark.parametrize("kernels", ["off", "blas", "onednn"])
def test_every_execution_path_equals_the_original(variant, mode, kernels):
    # float32 on the CPU: the plain network ("off"), and the CPU kernel policy (tld.model.cpu), whose
    # autograd path is the custom training linear and whose no_grad / inference_mode path the fused
    # oneDNN kernels; each must compute the original function.
    orig = _original(embed=128, layers=2, variant=variant)
    net = apply_cpu_kernels(load_original_tld(orig.state_dict(), variant=variant), kernels)
    x, t, label = _inputs(batch=4)
    with torch.no_grad():
        expected = orig(x, t, label)
    context = {
        "grad": contextlib.nullcontext,
        "no_grad": torch.no_grad,
        "inference_mode": torch.inference_mode,
    }
    with context[mode]():
        with _OpNames() as ops:
            got = net(x, t[:, 0], text_emb=label)
    assert got.requires_grad == (mode == "grad")
    assert ("mkldnn._convolution_pointwise" in ops.names) == (
        mode != "grad" and kernels != "off" and torch.backends.mkldnn.is_available()
    )
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)


def test_gradients_equal_the_originals():
    orig = _original(embed=128, layers=2, variant="main").train()
    net = load_original_tld(orig.state_dict(), variant="main").train()
    x, t, label = _inputs(batch=4)
    target = torch.randn_like(x)
    torch.nn.functional.mse_loss(orig(x, t, label), target).backward()
    torch.nn.functional.mse_loss(net(x, t[:, 0], text_emb=label), target).backward()
    grads = rename_original({k: p.grad for k, p in orig.named_parameters()})
    ours = dict(net.named_parameters())
    assert set(grads) == set(ours)
    for name, grad in grads.items():
        torch.testing.assert_close(ours[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_inference_equals_the_original():
    # Enough rows that CPU inference runs the blocks on more than one chunk of rows.
    orig = _original(embed=64, layers=1, variant="main")
    net = apply_cpu_kernels(load_original_tld(orig.state_dict(), variant="main"), "auto")
    chunk = net.inference_chunk_tokens or 2048
    x, t, label = _inputs(batch=chunk // 16 + 3)  # 16 tokens per 8x8 latent
    with torch.inference_mode():
        assert net._chunk_rows(torch.zeros(len(x), 16, 64)) < len(x) or not net.inference_chunk_tokens
        torch.testing.assert_close(net(x, t[:, 0], text_emb=label), orig(x, t, label), rtol=1e-5, atol=1e-5)
