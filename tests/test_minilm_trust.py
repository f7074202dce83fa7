"""A sentence-transformers folder is data: a modules.json naming a class outside sentence_transformers.*
is refused with one line before anything could import it (sentence-transformers < 6.0 imported it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tld.encoders.text_minilm import MiniLMTextEncoder, default_minilm_path, refuse_foreign_modules
from tld.errors import TLDError


def planted_folder(folder: Path, modules: list[dict], marker: Path) -> Path:
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    return folder


@pytest.mark.parametrize(
    "modules",
    [
        [{"idx": 0, "name": "0", "path": "", "type": "planted_module.Evil"}],
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "planted_module.Evil"},
        ],
    ],
)
def test_foreign_module_classes_are_refused(tmp_path, monkeypatch, modules):
    marker = tmp_path / "imported"
    folder = planted_folder(tmp_path / "model", modules, marker)
    monkeypatch.syspath_prepend(str(folder))
    with pytest.raises(TLDError) as err:
        MiniLMTextEncoder.from_spec({"path": str(folder)}, torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message and "refused to load the class 'planted_module.Evil'" in message
    assert not marker.exists() and "planted_module" not in sys.modules


def test_a_word_embeddings_tokenizer_class_is_checked_too(tmp_path):
    folder = tmp_path / "model"
    (folder / "0_WordEmbeddings").mkdir(parents=True)
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_WordEmbeddings",
            "type": "sentence_transformers.models.WordEmbeddings",
        }
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    config = {"tokenizer_class": "planted_module.Tokenizer"}
    (folder / "0_WordEmbeddings" / "wordembedding_config.json").write_text(json.dumps(config))
    with pytest.raises(TLDError, match="wordembedding_config.json: refused to load the class"):
        refuse_foreign_modules(folder)


def test_the_shipped_minilm_folder_is_accepted():
    refuse_foreign_modules(Path(default_minilm_path()))  # only sentence_transformers.* classes
