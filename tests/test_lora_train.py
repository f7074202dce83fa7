"""`tld train --lora RANK`: adapters on a frozen init_from model, written as output_dir/adapter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import tiny_run_settings

from tld.adapters import load_adapter
from tld.cli import main
from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig
from tld.training.checkpoint import latest_checkpoint
from tld.training.config import load_config
from tld.training.loop import train


def test_lora_run_trains_only_the_adapter(tmp_path, capsys):
    torch.manual_seed(0)
    base = Denoiser(DenoiserConfig.preset("tiny"))
    folder = base.save_pretrained(tmp_path / "base")
    sets = [*tiny_run_settings(tmp_path), f"init_from={folder}", "steps=20", "ema.decay=0.5", "optim.lr=1e-2"]
    args = ["train", "--lora", "4", "--set", "lora.alpha=8"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    assert "adapter: " in capsys.readouterr().out
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["lora"] == {
        "rank": 4,
        "alpha": 8.0,
        "targets": ["attn.qkv", "cross.kv", "ffn.fc1", "ffn.fc2"],
        "dropout": 0.0,
    }
    assert config["base"]["path"] == str(folder) and config["info"]["steps"] == 20
    tensors = load_file(adapter / "adapter.safetensors")
    assert len(tensors) == 2 * 4 * base.config.depth and all(".lora_" in k for k in tensors)
    assert any(v.abs().max() > 0 for k, v in tensors.items() if ".lora_B." in k)  # it trained
    # The frozen base weights are the init_from model's, in the last checkpoint too.
    saved = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors")
    want = base.state_dict()
    for key, value in saved.items():
        if ".lora_" not in key:
            assert torch.equal(value, want[key.replace(".base_layer.", ".")]), key
    # The adapter loads onto the base model and changes what it computes.
    net = Denoiser.from_pretrained(folder).eval()
    x, t, emb = torch.randn(2, 4, 8, 8), torch.rand(2), torch.randn(2, 16)
    with torch.no_grad():
        before = net(x, t, text_emb=emb)
        load_adapter(net, adapter)
        assert (net(x, t, text_emb=emb) - before).abs().max() > 1e-4


def test_lora_needs_a_base_model(tmp_path):
    config = load_config(None, [*tiny_run_settings(tmp_path), "steps=2", "lora.rank=4"])
    with pytest.raises(TLDError, match="set init_from"):
        train(config)
    with pytest.raises(TLDError, match="lora.rank"):
        load_config(None, ["lora.rank=-1"])
