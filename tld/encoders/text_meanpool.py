"""A sentence-transformers folder run by transformers alone, for the common layout
Transformer -> mean Pooling -> (Normalize): all-MiniLM-L6-v2 and most sentence embedders.

Importing sentence-transformers costs about 2 s of CPU (it pulls in timm and wandb), a sixth of the
bundled model's `tld generate` start-up; transformers is already imported by diffusers. The result
is the same function: the tokenizer with padding to the longest caption and "longest_first"
truncation at max_seq_length, the last hidden state as token embeddings, their mean over the
attention mask as the sentence embedding, unit length if the folder has Normalize
(tests/test_text_meanpool.py compares it with SentenceTransformer). Folders with any other module,
pooling mode, lower-casing or default prompt return None from `read_layout` and are loaded by
sentence-transformers itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_KINDS = ("Transformer", "Pooling", "Normalize")
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


@dataclass(frozen=True)
class MeanPoolLayout:
    max_seq_length: int
    normalize: bool


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_layout(folder: Path) -> MeanPoolLayout | None:
    """The folder's settings if it is Transformer (at the root) -> mean Pooling -> optional Normalize
    with no lower-casing and no default prompt; None for anything else."""
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (list(_KINDS[:2]), list(_KINDS)) or modules[0].get("path", "") != "":
        return None
    pooling = _json(folder / str(modules[1].get("path", "")) / "config.json")
    if not isinstance(pooling, dict) or not pooling.get("pooling_mode_mean_tokens", False):
        return None
    if any(pooling.get(mode, False) for mode in _POOLING_MODES):
        return None
    config = _json(folder / "sentence_bert_config.json")
    if not isinstance(config, dict) or config.get("do_lower_case", False) or "max_seq_length" not in config:
        return None
    st_config = _json(folder / "config_sentence_transformers.json") or {}
    if not isinstance(st_config, dict) or st_config.get("default_prompt_name"):
        return None
    return MeanPoolLayout(int(config["max_seq_length"]), normalize=len(modules) == 3)


class MeanPooledTransformer(nn.Module):
    """The part of SentenceTransformer's interface the minilm backend uses: `max_seq_length`,
    `preprocess(texts)` -> features, `forward(features)` -> token_embeddings, attention_mask and
    sentence_embedding, `save(folder)`."""

    def __init__(self, folder: Path, layout: MeanPoolLayout, auto_model: nn.Module, tokenizer: Any):
        super().__init__()
        self.folder, self.auto_model, self.tokenizer = folder, auto_model, tokenizer
        self.max_seq_length, self.normalize = layout.max_seq_length, layout.normalize

    @classmethod
    def load(cls, folder: Path, layout: MeanPoolLayout) -> MeanPooledTransformer:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        return cls(folder, layout, model, tokenizer)

    def preprocess(self, texts: list[str]) -> dict[str, torch.Tensor]:
        features = self.tokenizer(
            [t.strip() for t in texts],
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="pt",
        )
        return dict(features)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = self.auto_model(**features, return_dict=True).last_hidden_state
        mask = features["attention_mask"]
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = F.normalize(pooled, p=2, dim=1)
        return {"token_embeddings": tokens, "attention_mask": mask, "sentence_embedding": pooled}

    def save(self, folder: str) -> None:
        """A copy of the source folder (the encoder is frozen: its files are its state), with the
        current max_seq_length in sentence_bert_config.json."""
        target = Path(folder)
        if target.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, target, dirs_exist_ok=True)
        config_path = target / "sentence_bert_config.json"
        config = json.loads(config_path.read_text())
        config["max_seq_length"] = self.max_seq_length
        config_path.write_text(json.dumps(config, indent=2) + "\n")
