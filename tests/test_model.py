"""The denoiser network: shapes, conditioning semantics, save/load, FLOP count, bad input, `tld info`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tld.cli import main as cli_main
from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig, check_inputs, forward_flops

TINY = DenoiserConfig.preset("tiny")


def _net(seed: int = 0, **changes) -> Denoiser:
    torch.manual_seed(seed)
    net = Denoiser(TINY.replace(**changes)).eval()
    # Zero-initialised parts (extra conditioning) get random values so they can be seen to act.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _batch(b: int = 3, h: int = 8, w: int = 8, c: int = 4, d: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.rand(b, generator=g), torch.randn(b, d, generator=g)


def test_presets_have_the_intended_sizes():
    with torch.device("meta"):
        counts = {
            name: Denoiser(DenoiserConfig.preset(name)).num_parameters() for name in ("tiny", "small", "101m")
        }
    assert counts["tiny"] < 100_000
    assert 10e6 < counts["small"] < 30e6
    assert 100e6 < counts["101m"] < 102e6
    assert DenoiserConfig() == DenoiserConfig.preset("101m")


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = TINY.replace(latent_size=(8, 12), num_classes=10, extra_cond_dim=3, learned_null=True)
    back = DenoiserConfig.from_json(cfg.to_json())
    assert back == cfg and back.latent_size == (8, 12)
    (tmp_path / "config.json").write_text(json.dumps({"format": "tld-pipeline", "denoiser": cfg.to_dict()}))
    assert DenoiserConfig.load(tmp_path) == cfg
    with pytest.raises(TLDError, match=r"unknown DenoiserConfig keys \['embed'\]"):
        DenoiserConfig.from_dict({"embed": 3})
    with pytest.raises(TLDError, match="num_heads=5 must be >= 1 and divide embed_dim=32"):
        TINY.replace(num_heads=5)
    with pytest.raises(TLDError, match="latent width 9 is not divisible by patch_size 2"):
        TINY.replace(latent_size=(8, 9))
    with pytest.raises(TLDError, match="unknown denoiser preset 'huge'"):
        DenoiserConfig.preset("huge")


def test_forward_shapes_for_inpainting_channels_and_other_sizes():
    net = _net(in_channels=9, out_channels=4)
    x, t, text = _batch(c=9)
    assert net(x, t, text_emb=text).shape == (3, 4, 8, 8)
    x, t, text = _batch(h=12, w=6, c=9)
    assert net(x, t[:, None], text_emb=text).shape == (3, 4, 12, 6)
    # A scalar noise level applies to every row.
    assert torch.equal(net(x, 0.5, text_emb=text), net(x, torch.full((3,), 0.5), text_emb=text))


def test_rows_are_independent():
    net = _net()
    x, t, text = _batch()
    full = net(x, t, text_emb=text)
    torch.testing.assert_close(net(x[1:2], t[1:2], text_emb=text[1:2]), full[1:2], rtol=1e-5, atol=1e-6)


def test_ffn_uses_the_true_non_square_grid():
    net = _net(latent_size=(8, 12))
    ffn, grid = net.blocks[0].ffn, (4, 6)
    tokens = torch.randn(2, 24, 32)
    hidden = ffn.fc1(tokens).transpose(1, 2).reshape(2, -1, *grid)
    conv = F.conv2d(hidden, ffn.dwconv.weight, ffn.dwconv.bias, padding=1, groups=hidden.shape[1])
    expected = ffn.fc2(F.gelu(conv.flatten(2).transpose(1, 2)))
    torch.testing.assert_close(ffn(tokens, grid), expected, rtol=1e-5, atol=1e-6)


def test_positional_embedding_interpolates_smoothly():
    net = _net(latent_size=(8, 8))
    gh, gw = net.config.grid
    rows = torch.linspace(0, 1, gh)[:, None, None]
    cols = torch.linspace(0, 1, gw)[None, :, None]
    freq = torch.arange(1, 33)[None, None, :] * 0.02
    smooth = torch.sin(freq * (rows + 2 * cols)).reshape(gh * gw, 32)
    with torch.no_grad():
        net.pos_embed.copy_(smooth)
    assert net.positional((gh, gw)) is net.pos_embed
    up = net.positional((2 * gh, 3 * gw)).T.reshape(1, 32, 2 * gh, 3 * gw)
    down = F.avg_pool2d(up, (2, 3)).reshape(32, -1).T
    torch.testing.assert_close(down, smooth, rtol=0, atol=0.05)


def test_drop_cond_equals_null_condition_for_pooled_and_token_text():
    net = _net()
    x, t, text = _batch()
    drop = torch.tensor([True, False, True])
    out = net(x, t, text_emb=text, drop_cond=drop)
    null = net(x, t, text_emb=None)
    torch.testing.assert_close(out[drop], null[drop], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[~drop], net(x, t, text_emb=text)[~drop], rtol=1e-5, atol=1e-6)
    tokens = torch.randn(3, 5, 16)
    out = net(x, t, text_emb=tokens, drop_cond=drop)
    torch.testing.assert_close(out[drop], null[drop], rtol=1e-5, atol=1e-6)
    assert (out[~drop] - null[~drop]).abs().max() > 1e-3


def test_masked_text_tokens_are_ignored():
    net = _net()
    x, t, _ = _batch()
    tokens = torch.randn(3, 6, 16)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] + [False] * 5])
    changed = tokens.clone()
    changed[~mask] = 100.0
    torch.testing.assert_close(
        net(x, t, text_emb=tokens, text_mask=mask),
        net(x, t, text_emb=changed, text_mask=mask),
        rtol=1e-5,
        atol=1e-6,
    )
    assert (net(x, t, text_emb=tokens, text_mask=mask)[1] - net(x, t, text_emb=tokens)[1]).abs().max() > 1e-3


def test_class_labels_null_class_and_learned_null():
    net = _net(num_classes=4, learned_null=True)
    x, t, text = _batch()
    labels = torch.tensor([0, 1, 3])
    out = net(x, t, text_emb=text, class_labels=labels)
    assert (out - net(x, t, text_emb=text, class_labels=torch.tensor([2, 2, 2]))).abs().amax(
        dim=(1, 2, 3)
    ).min() > 1e-4
    dropped = net(x, t, text_emb=text, class_labels=labels, drop_cond=torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(dropped, net(x, t), rtol=1e-5, atol=1e-6)
    # The learned null vector is what `text_emb=None` feeds the text projection.
    as_text = net.null_text.detach().expand(3, -1)
    torch.testing.assert_close(net(x, t, text_emb=as_text), net(x, t), rtol=1e-5, atol=1e-6)


def test_extra_cond_none_means_zeros_and_starts_as_no_op():
    net = _net(extra_cond_dim=3)
    x, t, text = _batch()
    torch.testing.assert_close(
        net(x, t, text_emb=text), net(x, t, text_emb=text, extra_cond=torch.zeros(3, 3))
    )
    assert (
        net(x, t, text_emb=text, extra_cond=torch.ones(3, 3)) - net(x, t, text_emb=text)
    ).abs().max() > 1e-3
    torch.manual_seed(0)
    fresh = Denoiser(TINY.replace(extra_cond_dim=3)).eval()
    torch.testing.assert_close(
        fresh(x, t, text_emb=text, extra_cond=torch.randn(3, 3)), fresh(x, t, text_emb=text)
    )


def test_save_and_load_pretrained(tmp_path):
    net = _net(norm_position="post", num_classes=2)
    (tmp_path / "config.json").write_text(json.dumps({"format": "tld-pipeline", "ema": True}))
    net.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["ema"] is True and saved["denoiser"]["norm_position"] == "post"
    back = Denoiser.from_pretrained(tmp_path).eval()
    x, t, text = _batch()
    assert torch.equal(back(x, t, text_emb=text), net(x, t, text_emb=text))

    saved["denoiser"]["embed_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(TLDError, match=r"wrong shape: .*expected \(\d+, 64\), found \(\d+, 32\)"):
        Denoiser.from_pretrained(tmp_path)
    with pytest.raises(TLDError, match="expected a model folder with config.json"):
        Denoiser.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "changes", [{}, {"num_classes": 3, "extra_cond_dim": 2, "latent_size": (8, 12), "patch_dim": 20}]
)
def test_analytic_flops_match_torch_flop_counter(changes):
    cfg = TINY.replace(**changes)
    net = Denoiser(cfg).eval()
    x, t, text = _batch(b=2, h=8, w=12)
    kwargs = (
        {"class_labels": torch.tensor([0, 1]), "extra_cond": torch.randn(2, 2)} if cfg.num_classes else {}
    )
    # The math backend decomposes attention into matmuls the counter sees; the plain network (no CPU
    # kernel policy applied) runs aten's linears, which the counter counts (oneDNN's it does not).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, t, text_emb=text, **kwargs)
    assert forward_flops(cfg, 2, 8, 12) == counter.get_total_flops()


def test_tiny_model_learns_a_fixed_batch():
    torch.manual_seed(0)
    net = Denoiser(TINY).train()
    x, t, text = _batch(b=8)
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(net(x, t, text_emb=text), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # torch seeds 0-4: margin 0.33-0.46


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.randn(2, 3, 8, 8)}, r"x must have shape \(B, 4, H, W\), got \(2, 3, 8, 8\)"),
        ({"x": torch.randn(2, 4, 8, 7)}, "multiples of patch_size 2, got 8x7"),
        ({"x": torch.full((2, 4, 8, 8), math.nan)}, "x must be finite, but 512 of 512"),
        ({"noise_level": torch.rand(3)}, r"noise_level must have shape \(2,\) or \(2, 1\)"),
        ({"noise_level": torch.tensor([0.1, math.inf])}, "noise_level must be finite"),
        (
            {"text_emb": torch.randn(2, 768)},
            r"text_emb must have shape \(2, 16\) or \(2, T, 16\), got \(2, 768\)",
        ),
        (
            {"text_emb": torch.randn(2, 5, 16), "text_mask": torch.ones(2, 4, dtype=torch.bool)},
            "text_mask must",
        ),
        ({"class_labels": torch.tensor([0, 1])}, r"no class labels \(num_classes=0\)"),
        ({"drop_cond": torch.tensor([1, 0])}, r"drop_cond must be a bool tensor of shape \(2,\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    net = _net()
    args = {
        "x": torch.randn(2, 4, 8, 8),
        "noise_level": torch.rand(2),
        "text_emb": torch.randn(2, 16),
    } | kwargs
    with pytest.raises(TLDError, match=message):
        check_inputs(net.config, args.pop("x"), args.pop("noise_level"), **args)


def test_class_label_range_is_checked():
    net = _net(num_classes=3)
    with pytest.raises(TLDError, match=r"class_labels must lie in \[0, 3\].*got values in \[0, 4\]"):
        check_inputs(net.config, torch.randn(2, 4, 8, 8), torch.rand(2), class_labels=torch.tensor([0, 4]))


def _expected_parameters(c: DenoiserConfig) -> int:
    """The parameter count written out from the architecture (docs/internals.md), layer by layer."""
    e, p, hidden = c.embed_dim, c.patch_size, c.mlp_ratio * c.embed_dim
    patch_dim = c.patch_dim or c.in_channels * p * p
    linear = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    norm = 2 * e
    cond = linear(c.noise_embed_dim, e) + linear(e, e) + norm  # noise MLP + conditioning LayerNorm
    cond += linear(c.text_dim, e) if c.text_dim else 0
    cond += c.text_dim if c.learned_null and c.text_dim else 0
    cond += (c.num_classes + 1) * e if c.num_classes else 0
    cond += linear(c.extra_cond_dim, e) if c.extra_cond_dim else 0
    patch = c.in_channels * patch_dim * p * p + patch_dim + 2 * patch_dim + linear(patch_dim, e) + norm
    pos = c.grid[0] * c.grid[1] * e
    attn = linear(e, 3 * e, False) + linear(e, e, False) + linear(e, 2 * e, False)
    ffn = linear(e, hidden) + 9 * hidden + hidden + linear(hidden, e)
    block = 3 * norm + attn + ffn
    final = norm if c.norm_position == "pre" and c.final_norm else 0
    return cond + patch + pos + c.depth * block + final + linear(e, c.out_channels * p * p)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"num_classes": 5, "extra_cond_dim": 3, "learned_null": True},
        {"norm_position": "post", "in_channels": 9, "patch_dim": 16, "text_dim": 0, "num_classes": 2},
    ],
)
def test_parameter_count_follows_from_the_config(changes):
    for base in (DenoiserConfig(), TINY):
        cfg = base.replace(**changes)
        with torch.device("meta"):
            assert Denoiser(cfg).num_parameters() == _expected_parameters(cfg), cfg


def _expected_forward_flops(c: DenoiserConfig) -> int:
    """FLOPs of one image at the trained size, matmul by matmul (2 per multiply-add; elementwise work
    is not counted, as torch's FlopCounterMode does not count it: see the test above)."""
    e, p, hidden = c.embed_dim, c.patch_size, c.mlp_ratio * c.embed_dim
    n, m = c.grid[0] * c.grid[1], 2  # tokens; conditioning tokens: noise + pooled text
    patch_dim = c.patch_dim or c.in_channels * p * p
    mm = lambda rows, inner, cols: 2 * rows * inner * cols  # noqa: E731
    cond = mm(1, c.noise_embed_dim, e) + mm(1, e, e) + mm(1, c.text_dim, e)
    embed = mm(n, c.in_channels * p * p, patch_dim) + mm(n, patch_dim, e)
    self_attn = mm(n, e, 3 * e) + 2 * mm(n, e, n)  # qkv, then scores and values over all heads
    # Cross-attention with the query projection folded into the keys (two conditioning tokens):
    # keys W_q^T k for every head, then scores and values against heads*m block-diagonal keys.
    h = c.cross_attn_heads
    cross = mm(m, e, 2 * e) + mm(h * m, e, e) + mm(n, e, h * m) + mm(n, h * m, e)
    ffn = mm(n, e, hidden) + mm(n, 9, hidden) + mm(n, hidden, e)  # the 3x3 depthwise conv: 9 per channel
    return cond + embed + c.depth * (self_attn + cross + ffn) + mm(n, e, c.out_channels * p * p)


def test_tld_info_prints_counts_and_shapes(capsys, tmp_path):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    cfg = DenoiserConfig()
    params, flops = _expected_parameters(cfg), _expected_forward_flops(cfg)
    # The original's "101M", ~46 GFLOPs; ~43 with the cross-attention query folded into the keys.
    assert 100e6 < params < 102e6 and 42e9 < flops < 44e9
    assert f"{params:,}" in out and f"{flops / 1e9:.4g}" in out
    assert "(B, 4, 32, 32)" in out
    path = tmp_path / "cfg.json"
    path.write_text(TINY.replace(in_channels=9).to_json())
    assert cli_main(["info", "--config", str(path), "--latent-size", "8", "12"]) == 0
    out = capsys.readouterr().out
    assert "(B, 9, 8, 12)" in out and "24 (4x6 grid, patch 2)" in out
    assert cli_main(["info", "--config", "tiny", "--latent-size", "7", "8"]) == 1
    assert "multiples of patch_size 2, got 7 8" in capsys.readouterr().err


def test_tld_version_matches_the_installed_distribution(capsys):
    from importlib.metadata import version

    import tld

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tld-diffusion {tld.__version__}"
    assert version("tld-diffusion") == tld.__version__


def test_grad_checkpointing_gives_the_same_gradients_and_saves_less():
    torch.manual_seed(0)
    net = Denoiser(TINY.replace(depth=3)).train()
    x, t, text = _batch(b=4)
    target = torch.randn_like(x)
    grads, saved = [], []
    for on in (False, True):
        net.grad_checkpointing = on
        net.zero_grad(set_to_none=True)
        count = [0]

        def pack(tensor, count=count):
            count[0] += 1
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = F.mse_loss(net(x, t, text_emb=text), target)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
        saved.append(count[0])
    assert saved[1] < saved[0] / 2  # the blocks' activations are no longer kept
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)
