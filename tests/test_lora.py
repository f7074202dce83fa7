"""LoRA adapters (tld.adapters, TLDPipeline.load_lora): files, base check, scales, fuse, CPU kernels."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_fixtures import tiny_denoiser, tiny_pipeline
from safetensors.torch import load_file

from tld.adapters import LoraSettings, attach_lora, base_state, network_fingerprint, save_adapter
from tld.adapters.lora import adapter_state
from tld.errors import TLDError
from tld.model.cpu import CPULinear, apply_cpu_kernels

FAST = dict(steps=3, progress=False)


def _trained_adapter(seed: int = 0, rank: int = 2, name: str = "default"):
    """A tiny base network with adapter `name` whose B matrices are random (a 'trained' adapter)."""
    net = tiny_denoiser(seed)
    attach_lora(net, LoraSettings(rank=rank, alpha=rank), name)
    g = torch.Generator().manual_seed(123 + len(name))
    with torch.no_grad():
        for key, param in net.named_parameters():
            if ".lora_B." in key:
                param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return net


def _write(net, folder, name: str = "default"):
    return save_adapter(
        folder,
        adapter_state(net.state_dict(), name),
        LoraSettings(rank=2, alpha=2),
        "tiny",
        network_fingerprint(net),
    )


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    return x, torch.rand(2, generator=g), torch.randn(2, 24, generator=g)


@pytest.fixture
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


def test_save_load_round_trip_equals_in_memory_model(pipe, tmp_path):
    net = _trained_adapter()
    folder = _write(net, tmp_path / "ad")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["format"] == "tld-lora" and config["lora"]["rank"] == 2 and config["base"]["path"] == "tiny"
    assert all(".lora_" in k and ".default." not in k for k in load_file(folder / "adapter.safetensors"))
    assert pipe.load_lora(folder) == "ad" and pipe.lora_adapters == {"ad": 1.0}
    x, t, text = _inputs()
    with torch.no_grad():
        want = net.eval()(x, t, text_emb=text)
        got = pipe.denoiser(x, t, text_emb=text)
        base = tiny_denoiser(0)(x, t, text_emb=text)
    assert (want - base).abs().max() > 1e-3  # the adapter changes the function
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_adapter_for_another_base_is_refused(pipe, tmp_path):
    folder = _write(_trained_adapter(seed=1), tmp_path / "other")
    with pytest.raises(TLDError, match="trained on base model tiny") as err:
        pipe.load_lora(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(TLDError, match="not an adapter folder"):
        pipe.load_lora(tmp_path)


def test_scale_zero_is_the_base_model_exactly(pipe, tmp_path):
    before = pipe("a cute owl", seed=3, **FAST).latents
    pipe.load_lora(_write(_trained_adapter(), tmp_path / "ad"), scale=0.0)
    assert torch.equal(pipe("a cute owl", seed=3, **FAST).latents, before)
    pipe.set_lora_scale(1.0)
    assert not torch.equal(pipe("a cute owl", seed=3, **FAST).latents, before)


def test_fuse_then_unfuse_restores_the_weights(pipe, tmp_path):
    original = {k: v.clone() for k, v in pipe.denoiser.state_dict().items()}
    pipe.load_lora(_write(_trained_adapter(), tmp_path / "ad"), scale=0.7)
    x, t, text = _inputs(1)
    with torch.no_grad():
        unfused = pipe.denoiser(x, t, text_emb=text)
        pipe.fuse_lora()
        fused = pipe.denoiser(x, t, text_emb=text)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-4)
    assert not torch.equal(
        base_state(pipe.denoiser)["blocks.0.attn.qkv.weight"], original["blocks.0.attn.qkv.weight"]
    )
    with pytest.raises(TLDError, match="unfuse"):
        pipe.set_lora_scale(0.5)
    pipe.unfuse_lora()
    base = base_state(pipe.denoiser)
    assert set(base) == set(original)
    for key, value in original.items():
        torch.testing.assert_close(base[key], value, rtol=1e-5, atol=1e-6)


def test_several_adapters_run_together(pipe, tmp_path):
    a, b = _trained_adapter(name="a"), _trained_adapter(name="bb")
    x, t, text = _inputs(2)
    with torch.no_grad():
        base = pipe.denoiser(x, t, text_emb=text)
    pipe.load_lora(_write(a, tmp_path / "a", "a"))
    pipe.load_lora(_write(b, tmp_path / "b", "bb"), scale=0.5)
    assert pipe.lora_adapters == {"a": 1.0, "b": 0.5}
    outs = {}
    with torch.no_grad():
        for scales in ({"a": 1.0, "b": 0.5}, {"a": 1.0}, {"b": 0.5}, {}):
            pipe.set_lora_scale(scales)
            outs[tuple(scales)] = pipe.denoiser(x, t, text_emb=text)
    assert len({tuple(v.flatten()[:8].tolist()) for v in outs.values()}) == 4
    assert torch.equal(outs[()], base)  # none active: the base network exactly
    with pytest.raises(TLDError, match="no adapter named 'c'"):
        pipe.set_lora_scale({"c": 1.0})


def test_cpu_kernels_wrap_the_base_layers_and_keep_the_adapters(tmp_path):
    net = _trained_adapter().eval()
    x, t, text = _inputs(3)
    with torch.no_grad():
        plain = net(x, t, text_emb=text)
        apply_cpu_kernels(net, "blas")
        qkv = net.blocks[0].attn.qkv
        assert type(qkv.base_layer) is CPULinear and type(qkv.lora_A["default"]) is torch.nn.Linear
        torch.testing.assert_close(net(x, t, text_emb=text), plain, rtol=1e-5, atol=1e-5)
        apply_cpu_kernels(net, "off")
        assert type(qkv.base_layer) is torch.nn.Linear
        torch.testing.assert_close(net(x, t, text_emb=text), plain, rtol=1e-5, atol=1e-5)


def test_save_pretrained_writes_the_base_weights(pipe, tmp_path):
    pipe.load_lora(_write(_trained_adapter(), tmp_path / "ad"))
    saved = load_file(pipe.save_pretrained(tmp_path / "model") / "denoiser.safetensors")
    want = tiny_denoiser(0).state_dict()
    assert set(saved) == set(want)
    assert all(torch.equal(saved[k], want[k]) for k in want)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(TLDError, match="lora.targets"):
        LoraSettings(targets=["cross.q"])
    with pytest.raises(TLDError, match="lora.rank"):
        LoraSettings(rank=0)
    net = _trained_adapter()
    with pytest.raises(TLDError, match="already attached"):
        attach_lora(net, LoraSettings(), "default")
