"""Loading original TLD checkpoints: outputs must equal the original network's for the same weights.

`OriginalTLD` below re-implements the original network (github apapiu/transformer_latent_diffusion,
tld/denoiser.py + tld/transformer_blocks.py) with its module names, so its state_dict has the
original keys and shapes, in both of upstream's variants:
- "released" (branch legacy_dh_order, the published weights): post-norm blocks, self-attention with
  embed_dim // 64 heads, cross-attention with 4, heads taking channels interleaved ("(d h)");
- "main": pre-norm blocks (x + f(norm(x))), "(h d)" heads, embed_dim // 64 heads in both attentions.
Both: 1x1 convs in the MLP, no attention out-projection, no final norm.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig
from tld.model.convert import infer_config, load_original_tld


class _Fourier(nn.Module):
    def __init__(self, dims: int):
        super().__init__()
        speeds = 2.0 * math.pi * torch.exp(torch.linspace(math.log(1.0), math.log(1000.0), dims // 2))
        self.register_buffer("angular_speeds", speeds)

    def forward(self, x):
        return torch.cat([torch.sin(self.angular_speeds * x), torch.cos(self.angular_speeds * x)], dim=-1)


def _heads_attention(q, k, v, heads, variant):
    def split(t):
        b, n, e = t.shape
        if variant == "main":  # "bs n (h d) -> bs h n d"
            return t.reshape(b, n, heads, e // heads).permute(0, 2, 1, 3)
        # "bs n (d h) -> bs h n d": head index varies fastest along the channels.
        return t.reshape(b, n, e // heads, heads).permute(0, 3, 1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    b, h, n, d = out.shape
    if variant == "main":
        return out.permute(0, 2, 1, 3).reshape(b, n, h * d)
    return out.permute(0, 2, 3, 1).reshape(b, n, d * h)


class _SelfAttention(nn.Module):
    def __init__(self, e, variant):
        super().__init__()
        self.qkv_linear = nn.Linear(e, 3 * e, bias=False)
        self.heads, self.variant = e // 64, variant

    def forward(self, x):
        q, k, v = self.qkv_linear(x).chunk(3, dim=2)
        return _heads_attention(q, k, v, self.heads, self.variant)


class _CrossAttention(nn.Module):
    def __init__(self, e, variant):
        super().__init__()
        self.kv_linear = nn.Linear(e, 2 * e, bias=False)
        self.q_linear = nn.Linear(e, e, bias=False)
        self.heads = e // 64 if variant == "main" else 4
        self.variant = variant

    def forward(self, x, y):
        k, v = self.kv_linear(y).chunk(2, dim=2)
        return _heads_attention(self.q_linear(x), k, v, self.heads, self.variant)


class _SepConvMLP(nn.Module):
    def __init__(self, e, mult):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(e, mult * e, 1),
            nn.Conv2d(mult * e, mult * e, 3, padding="same", groups=mult * e),
            nn.GELU(),
            nn.Conv2d(mult * e, e, 1),
            nn.Dropout(0.0),
        )

    def forward(self, x):
        b, n, e = x.shape
        side = int(math.sqrt(n))
        img = x.transpose(1, 2).reshape(b, e, side, side)
        return self.mlp(img).reshape(b, e, n).transpose(1, 2)


class _DecoderBlock(nn.Module):
    def __init__(self, e, mult, variant):
        super().__init__()
        self.self_attention = _SelfAttention(e, variant)
        self.cross_attention = _CrossAttention(e, variant)
        self.mlp = _SepConvMLP(e, mult)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(e), nn.LayerNorm(e), nn.LayerNorm(e)
        self.variant = variant

    def forward(self, x, y):
        if self.variant == "main":
            x = self.self_attention(self.norm1(x)) + x
            x = self.cross_attention(self.norm2(x), y) + x
            return self.mlp(self.norm3(x)) + x
        x = self.norm1(self.self_attention(x) + x)
        x = self.norm2(self.cross_attention(x, y) + x)
        return self.norm3(self.mlp(x) + x)


class _Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class _TransBlock(nn.Module):
    def __init__(self, patch, image, e, layers, mult, channels, variant):
        super().__init__()
        patch_dim = channels * patch * patch
        seq = (image // patch) ** 2
        self.patch, self.side, self.channels = patch, image // patch, channels
        self.patchify_and_embed = nn.Sequential(
            nn.Conv2d(channels, patch_dim, patch, stride=patch),
            _Flatten(),
            nn.LayerNorm(patch_dim),
            nn.Linear(patch_dim, e),
            nn.LayerNorm(e),
        )
        self.pos_embed = nn.Embedding(seq, e)
        self.register_buffer("precomputed_pos_enc", torch.arange(seq).long())
        self.decoder_blocks = nn.ModuleList(_DecoderBlock(e, mult, variant) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.Linear(e, patch_dim))

    def forward(self, x, cond):
        x = self.patchify_and_embed(x)
        x = x + self.pos_embed(self.precomputed_pos_enc[: x.size(1)].expand(x.size(0), -1))
        for block in self.decoder_blocks:
            x = block(x, cond)
        x = self.out_proj(x)
        b, s, p, c = x.shape[0], self.side, self.patch, self.channels
        # "b (h w) (c p1 p2) -> b c (h p1) (w p2)"
        return x.reshape(b, s, s, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s * p, s * p)


class OriginalTLD(nn.Module):
    def __init__(
        self, image_size, noise_embed_dims, patch_size, embed_dim, n_layers, text_emb_size, variant="released"
    ):
        super().__init__()
        self.fourier_feats = nn.Sequential(
            _Fourier(noise_embed_dims),
            nn.Linear(noise_embed_dims, embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, embed_dim),
        )
        self.denoiser_trans_block = _TransBlock(patch_size, image_size, embed_dim, n_layers, 4, 4, variant)
        self.norm = nn.LayerNorm(embed_dim)
        self.label_proj = nn.Linear(text_emb_size, embed_dim)

    def forward(self, x, noise_level, label):
        cond = torch.cat(
            [self.fourier_feats(noise_level).unsqueeze(1), self.label_proj(label).unsqueeze(1)], 1
        )
        return self.denoiser_trans_block(x, self.norm(cond))


def _original(seed=0, embed=128, layers=2, image=8, patch=2, noise_dims=32, text=24, variant="released"):
    torch.manual_seed(seed)
    net = OriginalTLD(image, noise_dims, patch, embed, layers, text, variant).eval()
    # Non-trivial norms and biases, so a mis-mapped LayerNorm or bias cannot go unnoticed.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
    return net


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
