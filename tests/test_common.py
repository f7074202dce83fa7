"""tld.common: the one device resolver, dtype table, hub-id test, and missing-extra errors."""

from __future__ import annotations

import sys

import pytest
import torch

from tld.cli import main as cli_main
from tld.common import MissingExtra, is_hub_id, require, resolve_device, resolve_dtype
from tld.errors import TLDError


def test_hub_ids_and_local_paths(tmp_path):
    assert is_hub_id("madebyollin/sdxl-vae-fp16-fix")
    for local in ("./vae", "/abs/vae", "~/vae", "a/b/c", "vae", "a\\b", "/", "org/"):
        assert not is_hub_id(local), local
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not is_hub_id(tmp_path / "org" / "name")


def test_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(TLDError, match="expected a device like"):
        resolve_device("gpu7")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(None, torch.device("cuda")) is torch.float16
    assert resolve_dtype(None, torch.device("cpu")) is torch.float32
    with pytest.raises(TLDError, match="dtype must be one of"):
        resolve_dtype("int8")


def test_require_names_the_extra():
    assert require("json", "data").dumps([]) == "[]"
    with pytest.raises(MissingExtra, match=r"pip install 'tld-diffusion\[ui\]'"):
        require("surely_not_installed_module", "ui")


def test_command_with_a_missing_extra_prints_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now fails as if not installed
    assert cli_main(["train", "--print-config"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "tld train: error: this needs the optional dependency 'yaml': pip install 'tld-diffusion[train]'"
    )
