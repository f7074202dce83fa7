"""transformers CLIP text model with projection (hub id or local folder).

pooled = `text_embeds` (the projected end-of-text state), tokens = `last_hidden_state` (after the
final layer norm), mask = the tokenizer's attention mask; sequences are padded to the tokenizer's
`model_max_length`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tld.common import first_line
from tld.encoders.text_base import BaseTextEncoder
from tld.errors import TLDError

DEFAULT_HF_CLIP = "openai/clip-vit-large-patch14"


class HFClipTextEncoder(BaseTextEncoder):
    backend = "hf_clip"

    def __init__(self, spec: dict[str, Any], model: Any, tokenizer: Any, device: torch.device):
        super().__init__(spec, device)
        vocab = int(model.config.vocab_size)
        # Offline, CLIPTokenizer.from_pretrained(hub id) can quietly return a 2-token tokenizer that
        # maps every word to <unk>; its embeddings would all be identical.
        if len(tokenizer) < 3 or len(tokenizer) > vocab:
            raise TLDError(
                f"CLIP tokenizer from {spec.get('path')!r} has {len(tokenizer)} tokens but the model expects up to "
                f"{vocab}; the tokenizer files are missing or incomplete (offline hub cache?)"
            )
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = int(min(tokenizer.model_max_length, model.config.max_position_embeddings))
        self.dim = int(model.config.projection_dim)
        self.token_dim = int(model.config.hidden_size)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: torch.device) -> HFClipTextEncoder:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        spec = {"path": DEFAULT_HF_CLIP, "normalize": False, **spec}
        source = str(spec["path"])
        try:
            model = CLIPTextModelWithProjection.from_pretrained(source)
            tokenizer = CLIPTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise TLDError(
                f"cannot load a CLIP text model from {source!r} (expected a transformers CLIP folder "
                f"or a reachable hub id): {first_line(e)}"
            ) from e
        if Path(source).is_dir():
            spec["path"] = str(Path(source).resolve())
        return cls(spec, model, tokenizer, device)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def _encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt"
        ).to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.text_embeds, out.last_hidden_state, batch["attention_mask"].bool()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self._write_spec(folder, {"source": self._spec.get("path")})
